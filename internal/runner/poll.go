package runner

import (
	"context"
	"encoding/binary"
	"fmt"
	"maps"
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
// poll_oneoff (see poller), wazero's sock_accept, fd_close, fd_renumber
// and sock_shutdown wrapped to keep fds up to date, and its path_*
// functions wrapped to resolve ".." and absolute paths as Linux does (see
// pathWrappers; resolve resolves a directory's symlinks).
func instantiateWASI(ctx context.Context, rt wazero.Runtime, fds *guestFDs, resolve func(string) string) error {
	// wazero's functions, with their signatures, from a module compiled
	// (not instantiated) for the purpose.
	scratch := rt.NewHostModuleBuilder(wasi_snapshot_preview1.ModuleName)
	wasi_snapshot_preview1.NewFunctionExporter().ExportFunctions(scratch)
	cm, err := scratch.Compile(ctx)
	if err != nil {
		return err
	}
	defs := cm.ExportedFunctions()
	orig := map[string]api.GoModuleFunction{}
	for name, def := range defs {
		if fn, ok := def.GoFunction().(api.GoModuleFunction); ok {
			orig[name] = fn
		}
	}
	cm.Close(ctx)

	b := rt.NewHostModuleBuilder(wasi_snapshot_preview1.ModuleName)
	wasi_snapshot_preview1.NewFunctionExporter().ExportFunctions(b)
	wrappers := fds.wasiWrappers(orig)
	maps.Copy(wrappers, fds.pathWrappers(orig, resolve))
	for name, fn := range wrappers {
		def := defs[name]
		if def == nil || orig[name] == nil {
			return fmt.Errorf("wazero's WASI has no Go function %s", name)
		}
		b.NewFunctionBuilder().
			WithGoModuleFunction(fn, def.ParamTypes(), def.ResultTypes()).
			WithParameterNames(def.ParamNames()...).
			Export(name)
	}
	p := &poller{fds: fds}
	if w, err := newWaiter(); err == nil {
		p.w = w
	}
	i32 := api.ValueTypeI32
	b.NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(p.pollOneoff), []api.ValueType{i32, i32, i32, i32}, []api.ValueType{i32}).
		WithParameterNames("in", "out", "nsubscriptions", "result.nevents").
		Export("poll_oneoff")
	_, err = b.Instantiate(ctx)
	return err
}

// poller is the guest's poll_oneoff. wazero's own reports every
// non-blocking descriptor ready at once, so a Go server (whose scheduler
// polls its listener and connections) spins a whole core. This one waits
// with poll(2) on the host descriptors behind the guest descriptors it is
// asked about (fds: stdin, listeners, accepted connections), for reading
// or writing as asked, and reports ready exactly those the kernel reports.
// A descriptor fds does not know (a file, a directory, stdout) is ready at
// once, as in wazero. Clocks are relative, as in wazero.
type poller struct {
	fds *guestFDs
	// w, if not nil, blocks in Go's network poller (see waiter); a poller
	// without one blocks in poll(2).
	w *waiter
}

type subscription struct {
	userdata []byte
	kind     byte
	fd       uint32
	timeout  time.Duration
	pollfd   int // index in the poll(2) set; -1: ready at once
}

func (p *poller) pollOneoff(ctx context.Context, mod api.Module, stack []uint64) {
	stack[0] = uint64(p.poll(mod.Memory(), uint32(stack[0]), uint32(stack[1]), uint32(stack[2]), uint32(stack[3])))
}

func (p *poller) poll(mem api.Memory, in, out, n, resultNevents uint32) uint32 {
	if n == 0 {
		return errnoInval
	}
	// n*subscriptionSize must not wrap: a guest's count is untrusted.
	if uint64(n)*subscriptionSize > uint64(mem.Size()) {
		return errnoFault
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
	var fds []unix.PollFd
	timeout := time.Duration(-1) // none: wait for a descriptor
	for i := range subs {
		s := inBuf[i*subscriptionSize : (i+1)*subscriptionSize]
		sub := subscription{userdata: s[0:8], kind: s[8], pollfd: -1}
		switch sub.kind {
		case eventClock:
			if binary.LittleEndian.Uint16(s[40:42]) != 0 { // absolute time: unsupported, as in wazero
				return errnoNotsup
			}
			sub.timeout = time.Duration(binary.LittleEndian.Uint64(s[24:32]))
			if timeout < 0 || sub.timeout < timeout {
				timeout = sub.timeout
			}
		case eventFdRead, eventFdWrite:
			sub.fd = binary.LittleEndian.Uint32(s[16:20])
			h, ok := p.fds.host[sub.fd]
			if !ok {
				timeout = 0 // ready at once
				break
			}
			events := int16(unix.POLLIN)
			if sub.kind == eventFdWrite {
				events = unix.POLLOUT
			}
			sub.pollfd = len(fds)
			fds = append(fds, unix.PollFd{Fd: int32(h), Events: events})
		default:
			return errnoInval
		}
		subs[i] = sub
	}

	start := time.Now()
	if len(fds) > 0 {
		p.waitFDs(fds, timeout)
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
		case sub.pollfd < 0:
			ready = true
		default:
			ready = fds[sub.pollfd].Revents != 0
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

// waitFDs polls fds up to timeout (forever if negative): at once, then,
// if none is ready and there is time, in p's waiter, then once more. If
// poll(2) fails, every descriptor is marked ready, for the guest's own
// calls to report the error.
func (p *poller) waitFDs(fds []unix.PollFd, timeout time.Duration) {
	if p.w != nil && timeout != 0 {
		if n, err := unix.Poll(fds, 0); err == nil && n > 0 {
			return
		}
		if p.w.wait(fds, timeout) {
			timeout = 0 // what is ready now, without waiting again
		}
	}
	ms := -1
	if timeout >= 0 {
		ms = int((timeout + time.Millisecond - 1) / time.Millisecond)
	}
	for {
		_, err := unix.Poll(fds, ms)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			for i := range fds {
				fds[i].Revents = unix.POLLERR
			}
		}
		return
	}
}
