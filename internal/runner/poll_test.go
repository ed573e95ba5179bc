package runner

import (
	"context"
	"encoding/binary"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"golang.org/x/sys/unix"
)

// memory gives the poller a guest memory without a guest: a module that
// exports one page.
func memory(t *testing.T) api.Memory {
	t.Helper()
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	t.Cleanup(func() { rt.Close(ctx) })
	// (module (memory (export "memory") 1))
	mod, err := rt.Instantiate(ctx, []byte{0, 'a', 's', 'm', 1, 0, 0, 0, 5, 3, 1, 0, 1, 7, 10, 1, 6, 'm', 'e', 'm', 'o', 'r', 'y', 2, 0})
	if err != nil {
		t.Fatal(err)
	}
	return mod.Memory()
}

type sub struct {
	kind    byte
	fd      uint32
	timeout time.Duration
}

// pollSubs writes subs at 0, runs the poller and returns the event kinds
// (by userdata = index) it reported, and how long it took.
func pollSubs(t *testing.T, p *poller, subs ...sub) ([]int, time.Duration) {
	t.Helper()
	mem := memory(t)
	for i, s := range subs {
		b := make([]byte, subscriptionSize)
		binary.LittleEndian.PutUint64(b[0:8], uint64(i))
		b[8] = s.kind
		if s.kind == eventClock {
			binary.LittleEndian.PutUint64(b[24:32], uint64(s.timeout))
		} else {
			binary.LittleEndian.PutUint32(b[16:20], s.fd)
		}
		mem.Write(uint32(i*subscriptionSize), b)
	}
	out, nev := uint32(4096), uint32(8192)
	start := time.Now()
	if errno := p.poll(mem, 0, out, uint32(len(subs)), nev); errno != errnoSuccess {
		t.Fatalf("poll errno %d", errno)
	}
	took := time.Since(start)
	n, _ := mem.ReadUint32Le(nev)
	var got []int
	for i := uint32(0); i < n; i++ {
		ud, _ := mem.ReadUint64Le(out + i*eventSize)
		got = append(got, int(ud))
	}
	return got, took
}

// pollers runs test with a poller that blocks in Go's network poller (as
// the runner's does) and with one that blocks in poll(2) (its fallback).
func pollers(t *testing.T, test func(t *testing.T, newPoller func(*guestFDs) *poller)) {
	t.Run("waiter", func(t *testing.T) {
		test(t, func(fds *guestFDs) *poller {
			w, err := newWaiter()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { w.file.Close() })
			return &poller{fds: fds, w: w}
		})
	})
	t.Run("poll(2)", func(t *testing.T) {
		test(t, func(fds *guestFDs) *poller { return &poller{fds: fds} })
	})
}

func TestPollerSockets(t *testing.T) { pollers(t, testPollerSockets) }

func testPollerSockets(t *testing.T, newPoller func(*guestFDs) *poller) {
	pair := func() [2]int {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
		return fds
	}
	a, b := pair(), pair()
	fds := newGuestFDs()
	fds.host[4] = a[0]
	fds.host[5] = b[0]
	p := newPoller(fds)

	// Nothing to read: the clock fires, the socket subscription does not.
	got, took := pollSubs(t, p, sub{kind: eventFdRead, fd: 4}, sub{kind: eventClock, timeout: 30 * time.Millisecond})
	if len(got) != 1 || got[0] != 1 || took < 30*time.Millisecond {
		t.Errorf("idle socket: events %v after %v; want only the clock, after 30ms", got, took)
	}
	// A non-blocking check returns the clock alone (it would hang the
	// test if it blocked).
	if got, _ := pollSubs(t, p, sub{kind: eventFdRead, fd: 4}, sub{kind: eventClock}); len(got) != 1 || got[0] != 1 {
		t.Errorf("zero timeout: events %v, want only the clock", got)
	}
	// Readiness is per descriptor: data on 5 does not make 4 ready.
	unix.Write(b[1], []byte("x"))
	if got, _ := pollSubs(t, p, sub{kind: eventFdRead, fd: 4}, sub{kind: eventClock, timeout: 20 * time.Millisecond}); len(got) != 1 || got[0] != 1 {
		t.Errorf("data on another socket: events %v, want only the clock", got)
	}
	if got, _ := pollSubs(t, p, sub{kind: eventFdRead, fd: 4}, sub{kind: eventFdRead, fd: 5}); len(got) != 1 || got[0] != 1 {
		t.Errorf("data on 5 alone: events %v, want 5's alone", got)
	}
	// Data arriving wakes a poll that has no clock: the poll cannot return
	// before the write, which waits for the poll to be under way.
	var wrote atomic.Int64
	go func() {
		time.Sleep(50 * time.Millisecond)
		wrote.Store(time.Now().UnixNano())
		unix.Write(a[1], []byte("x"))
	}()
	got, _ = pollSubs(t, p, sub{kind: eventFdRead, fd: 4})
	returned := time.Now().UnixNano()
	if len(got) != 1 || got[0] != 0 || wrote.Load() == 0 || returned < wrote.Load() {
		t.Errorf("socket with data: events %v, returned at %d, data written at %d; want the socket, once the data came", got, returned, wrote.Load())
	}
	// A write subscription is ready when the socket takes data: not once
	// its send buffer is full.
	if got, _ := pollSubs(t, p, sub{kind: eventFdWrite, fd: 4}, sub{kind: eventClock, timeout: time.Hour}); len(got) != 1 || got[0] != 0 {
		t.Errorf("writable socket: events %v", got)
	}
	for {
		if _, err := unix.Write(a[0], make([]byte, 1<<16)); err != nil {
			break // EAGAIN: full
		}
	}
	if got, _ := pollSubs(t, p, sub{kind: eventFdWrite, fd: 4}, sub{kind: eventClock, timeout: 20 * time.Millisecond}); len(got) != 1 || got[0] != 1 {
		t.Errorf("full socket: events %v, want only the clock", got)
	}
	// Descriptors the table does not know (files, stdout) are ready at
	// once, for reading and writing.
	if got, took := pollSubs(t, p, sub{kind: eventFdRead, fd: 7}, sub{kind: eventFdWrite, fd: 1}, sub{kind: eventClock, timeout: time.Hour}); len(got) != 2 || took > time.Second {
		t.Errorf("unknown descriptors: events %v after %v, want both at once", got, took)
	}
}

func TestPollerStdin(t *testing.T) { pollers(t, testPollerStdin) }

func testPollerStdin(t *testing.T, newPoller func(*guestFDs) *poller) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	fds := newGuestFDs()
	fds.host[0] = int(r.Fd())
	p := newPoller(fds)
	if got, took := pollSubs(t, p, sub{kind: eventFdRead, fd: 0}, sub{kind: eventClock, timeout: 20 * time.Millisecond}); len(got) != 1 || got[0] != 1 || took < 20*time.Millisecond {
		t.Errorf("empty stdin: events %v after %v; want only the clock", got, took)
	}
	w.Write([]byte("x"))
	if got, _ := pollSubs(t, p, sub{kind: eventFdRead, fd: 0}, sub{kind: eventClock, timeout: time.Hour}); len(got) != 1 || got[0] != 0 {
		t.Errorf("stdin with data: events %v", got)
	}
	// A regular file (epoll takes none) is always ready.
	f, err := os.CreateTemp(t.TempDir(), "stdin")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fileFDs := newGuestFDs()
	fileFDs.host[0] = int(f.Fd())
	if got, took := pollSubs(t, newPoller(fileFDs), sub{kind: eventFdRead, fd: 0}, sub{kind: eventClock, timeout: time.Hour}); len(got) != 1 || got[0] != 0 || took > time.Second {
		t.Errorf("a regular file as stdin: events %v after %v, want it at once", got, took)
	}
	if got, _ := pollSubs(t, newPoller(newGuestFDs()), sub{kind: eventFdRead, fd: 0}); len(got) != 1 {
		t.Errorf("a stdin that is no descriptor is always ready: events %v", got)
	}
}

// TestPollerHugeCount: a subscription count whose size wraps around 32
// bits is a fault, not a huge allocation or a panic.
func TestPollerHugeCount(t *testing.T) {
	p := &poller{fds: newGuestFDs()}
	for _, n := range []uint32{0x5555556, 1 << 31, 1<<32 - 1} {
		if errno := p.poll(memory(t), 0, 0, n, 0); errno != errnoFault {
			t.Errorf("poll of %d subscriptions: errno %d, want EFAULT", n, errno)
		}
	}
}
