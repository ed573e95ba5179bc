package runner

import (
	"context"
	"encoding/binary"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"golang.org/x/sys/unix"
)

// WASI preview 1 constants poll_oneoff needs.
const (
	errnoSuccess = 0
	errnoFault   = 21
	errnoInval   = 28
	errnoNotsup  = 58

	eventClock   = 0
	eventFdRead  = 1
	eventFdWrite = 2

	subscriptionSize = 48
	eventSize        = 32
)

// instantiateWASI instantiates WASI preview 1 with the runner's own
// poll_oneoff (see poller).
func instantiateWASI(ctx context.Context, rt wazero.Runtime, stdinFD int) error {
	b := rt.NewHostModuleBuilder(wasi_snapshot_preview1.ModuleName)
	wasi_snapshot_preview1.NewFunctionExporter().ExportFunctions(b)
	p := &poller{stdinFD: stdinFD, sockets: hostSockets}
	i32 := api.ValueTypeI32
	b.NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(p.pollOneoff), []api.ValueType{i32, i32, i32, i32}, []api.ValueType{i32}).
		WithParameterNames("in", "out", "nsubscriptions", "result.nevents").
		Export("poll_oneoff")
	_, err := b.Instantiate(ctx)
	return err
}

// poller is the guest's poll_oneoff. wazero's own reports every
// non-blocking descriptor ready at once, so an idle Go server (whose
// scheduler keeps polling its listener) spins a whole core. wazero does not
// tell the host which host socket stands behind a guest descriptor, but the
// runner's only sockets are the guest's (its listeners and the connections
// accepted on them): so the poller waits on all of them, and on stdin, with
// poll(2), and reports the guest's socket subscriptions ready when any of
// those sockets is. A wake-up may be spurious for one descriptor (the guest
// then gets EAGAIN and polls again), but an idle server sleeps in the
// kernel. Clocks are honoured; write subscriptions are reported ready at
// once, as wazero does.
type poller struct {
	stdinFD int // the host descriptor behind the guest's stdin; -1 if none
	// sockets lists the runner's sockets (hostSockets; replaced in tests).
	sockets func() []int
}

type subscription struct {
	userdata []byte
	kind     byte
	fd       uint32
	timeout  time.Duration
}

func (p *poller) pollOneoff(ctx context.Context, mod api.Module, stack []uint64) {
	stack[0] = uint64(p.poll(mod.Memory(), uint32(stack[0]), uint32(stack[1]), uint32(stack[2]), uint32(stack[3])))
}

func (p *poller) poll(mem api.Memory, in, out, n, resultNevents uint32) uint32 {
	if n == 0 {
		return errnoInval
	}
	inBuf, ok := mem.Read(in, n*subscriptionSize)
	if !ok {
		return errnoFault
	}
	outBuf, ok := mem.Read(out, n*eventSize)
	if !ok {
		return errnoFault
	}
	subs := make([]subscription, n)
	timeout := time.Duration(-1) // none: wait for a descriptor
	var stdin, reads, writes bool
	for i := range subs {
		s := inBuf[i*subscriptionSize : (i+1)*subscriptionSize]
		sub := subscription{userdata: s[0:8], kind: s[8]}
		switch sub.kind {
		case eventClock:
			if binary.LittleEndian.Uint16(s[40:42]) != 0 { // absolute time: unsupported, as in wazero
				return errnoNotsup
			}
			sub.timeout = time.Duration(binary.LittleEndian.Uint64(s[24:32]))
			if timeout < 0 || sub.timeout < timeout {
				timeout = sub.timeout
			}
		case eventFdRead:
			sub.fd = binary.LittleEndian.Uint32(s[16:20])
			if sub.fd == 0 {
				stdin = true
			} else {
				reads = true
			}
		case eventFdWrite:
			sub.fd = binary.LittleEndian.Uint32(s[16:20])
			writes = true
		default:
			return errnoInval
		}
		subs[i] = sub
	}

	start := time.Now()
	var stdinReady, readsReady bool
	if writes {
		timeout = 0 // a write subscription is ready at once
	}
	var socks []int
	if reads {
		socks = p.sockets()
		if len(socks) == 0 {
			readsReady, timeout = true, 0 // no host socket: plain files are always ready
		}
	}
	if stdin || len(socks) > 0 {
		stdinReady, readsReady = p.wait(stdin, socks, timeout)
		readsReady = readsReady || (reads && len(socks) == 0)
	} else if timeout > 0 {
		time.Sleep(timeout)
	}
	elapsed := time.Since(start)

	clear(outBuf)
	nevents := uint32(0)
	for _, sub := range subs {
		var ready bool
		switch {
		case sub.kind == eventClock:
			ready = elapsed >= sub.timeout
		case sub.kind == eventFdWrite:
			ready = true
		case sub.fd == 0:
			ready = stdinReady
		default:
			ready = readsReady
		}
		if !ready {
			continue
		}
		e := outBuf[nevents*eventSize : (nevents+1)*eventSize]
		copy(e[0:8], sub.userdata)
		binary.LittleEndian.PutUint16(e[8:10], errnoSuccess)
		e[10] = sub.kind
		nevents++
	}
	if !mem.WriteUint32Le(resultNevents, nevents) {
		return errnoFault
	}
	return errnoSuccess
}

// wait polls stdin (if asked and a host descriptor) and socks for input, up
// to timeout (forever if negative). A stdin that is no host descriptor is
// always ready.
func (p *poller) wait(stdin bool, socks []int, timeout time.Duration) (stdinReady, sockReady bool) {
	if stdin && p.stdinFD < 0 {
		return true, false
	}
	fds := make([]unix.PollFd, 0, len(socks)+1)
	if stdin {
		fds = append(fds, unix.PollFd{Fd: int32(p.stdinFD), Events: unix.POLLIN})
	}
	for _, fd := range socks {
		fds = append(fds, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
	}
	ms := -1
	if timeout >= 0 {
		ms = int((timeout + time.Millisecond - 1) / time.Millisecond)
	}
	for {
		n, err := unix.Poll(fds, ms)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return stdin, len(socks) > 0 // let the guest's own calls report it
		}
		if n == 0 {
			return false, false
		}
		break
	}
	for i, fd := range fds {
		if fd.Revents == 0 {
			continue
		}
		if stdin && i == 0 {
			stdinReady = true
		} else {
			sockReady = true
		}
	}
	return stdinReady, sockReady
}

// hostSockets lists the runner's open sockets: the guest's listeners and
// the connections accepted on them.
func hostSockets() []int {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return nil
	}
	defer d.Close()
	names, _ := d.Readdirnames(-1)
	var out []int
	for _, name := range names {
		target, err := os.Readlink("/proc/self/fd/" + name)
		if err != nil || !strings.HasPrefix(target, "socket:") {
			continue
		}
		if fd, err := strconv.Atoi(name); err == nil {
			out = append(out, fd)
		}
	}
	return out
}
