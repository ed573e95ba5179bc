package runner

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestHostFDsTable(t *testing.T) {
	type step struct {
		op       string // set, remove, renumber
		a, b     uint32
		host     int
		wantHost map[uint32]int // the table after the step
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"close forgets", []step{
			{op: "set", a: 4, host: 10, wantHost: map[uint32]int{4: 10}},
			{op: "set", a: 5, host: 11, wantHost: map[uint32]int{4: 10, 5: 11}},
			{op: "remove", a: 5, wantHost: map[uint32]int{4: 10}},
			{op: "remove", a: 9, wantHost: map[uint32]int{4: 10}},
		}},
		{"renumber moves and closes the target", []step{
			{op: "set", a: 4, host: 10, wantHost: map[uint32]int{4: 10}},
			{op: "set", a: 6, host: 12, wantHost: map[uint32]int{4: 10, 6: 12}},
			{op: "renumber", a: 6, b: 4, wantHost: map[uint32]int{4: 12}},
		}},
		{"renumber of a file onto a socket closes the socket", []step{
			{op: "set", a: 4, host: 10, wantHost: map[uint32]int{4: 10}},
			{op: "renumber", a: 7, b: 4, wantHost: map[uint32]int{}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fds := newGuestFDs()
			for i, s := range tt.steps {
				switch s.op {
				case "set":
					fds.host[s.a] = s.host
				case "remove":
					fds.remove(s.a)
				case "renumber":
					fds.renumber(s.a, s.b)
				}
				if len(fds.host) != len(s.wantHost) {
					t.Fatalf("step %d (%s): table %v, want %v", i, s.op, fds.host, s.wantHost)
				}
				for g, h := range s.wantHost {
					if got, ok := fds.host[g]; !ok || got != h || !fds.known(h) {
						t.Fatalf("step %d (%s): table %v, want %v", i, s.op, fds.host, s.wantHost)
					}
				}
			}
		})
	}
}

// acceptAndPoll is a guest that accepts a connection on its listener (fd
// 4) and polls it twice, as a server does:
//  1. poll_oneoff({read fd 4}): wait for a connection; sock_accept;
//  2. poll_oneoff({read conn, userdata 1}, {clock 200 ms, userdata 2});
//  3. write "p\n" to stdout;
//  4. poll_oneoff({read conn, userdata 3}, {clock 1 h, userdata 4});
//
// and exits with 100 × the events of 2 + 10 × the first event of 2 + the
// first event of 4.
func acceptAndPoll() []byte {
	const (
		sub1    = 0    // {userdata 0, read, fd 4}
		sub2    = 1024 // {1, read, conn}, {2, clock 200 ms}
		sub4    = 1200 // {3, read, conn}, {4, clock 1 h}
		events  = 256
		nevents = 512
		connFD  = 516
		iov     = 520 // {600, 2}
		nwrote  = 528
		saved   = 700 // nevents of 2, first userdata of 2
	)
	data := make([]byte, 1400)
	putSub := func(at int, userdata uint64, kind byte, fd uint32, timeout time.Duration) {
		binary.LittleEndian.PutUint64(data[at:], userdata)
		data[at+8] = kind
		if kind == eventClock {
			binary.LittleEndian.PutUint64(data[at+24:], uint64(timeout))
		} else {
			binary.LittleEndian.PutUint32(data[at+16:], fd)
		}
	}
	putSub(sub1, 0, eventFdRead, ListenFDsStart, 0)
	putSub(sub2, 1, eventFdRead, 0, 0)
	putSub(sub2+subscriptionSize, 2, eventClock, 0, 200*time.Millisecond)
	putSub(sub4, 3, eventFdRead, 0, 0)
	putSub(sub4+subscriptionSize, 4, eventClock, 0, time.Hour)
	binary.LittleEndian.PutUint32(data[iov:], 600)
	binary.LittleEndian.PutUint32(data[iov+4:], 2)
	copy(data[600:], "p\n")

	var (
		opI32Store = []byte{0x36, 0x02, 0x00}
		opI64Load  = []byte{0x29, 0x03, 0x00}
		opWrap     = []byte{0xa7}
		opAdd      = []byte{0x6a}
		opMul      = []byte{0x6c}
	)
	impPoll := wasmImport{"wasi_snapshot_preview1", "poll_oneoff", []byte{wI32, wI32, wI32, wI32}, []byte{wI32}}
	impAccept := wasmImport{"wasi_snapshot_preview1", "sock_accept", []byte{wI32, wI32, wI32}, []byte{wI32}}
	const exit, write, poll, accept = 0, 1, 2, 3
	storeConn := func(at int32) []byte { // the accepted fd into the subscription at at
		return ins(i32c(at+16), i32c(connFD), opI32Load, opI32Store)
	}
	body := ins(
		i32c(sub1), i32c(events), i32c(1), i32c(nevents), call(poll), opDrop,
		i32c(ListenFDsStart), i32c(0), i32c(connFD), call(accept), opDrop,
		storeConn(sub2), storeConn(sub4),
		i32c(sub2), i32c(events), i32c(2), i32c(nevents), call(poll), opDrop,
		i32c(saved), i32c(nevents), opI32Load, opI32Store,
		i32c(saved+4), i32c(events), opI64Load, opWrap, opI32Store,
		i32c(1), i32c(iov), i32c(1), i32c(nwrote), call(write), opDrop,
		i32c(sub4), i32c(events), i32c(2), i32c(nevents), call(poll), opDrop,
		i32c(saved), opI32Load, i32c(100), opMul,
		i32c(saved+4), opI32Load, i32c(10), opMul, opAdd,
		i32c(events), opI64Load, opWrap, opAdd,
		call(exit),
	)
	return wasmMod{
		imports: []wasmImport{impProcExit, impFdWrite, impPoll, impAccept},
		funcs:   []wasmFunc{{export: "_start", body: body}},
		memory:  true,
		data:    data,
	}.bytes()
}

// TestPollAcceptedConnection runs a guest that accepts a connection and
// polls it while a second client waits on the listener: the accepted
// connection is not ready (only the clock is) until its client writes.
// Readiness by "any socket of the runner" would report it at once.
func TestPollAcceptedConnection(t *testing.T) {
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := free.Addr().(*net.TCPAddr).Port
	free.Close()

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "mod.wasm"), acceptAndPoll(), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Module: "/mod.wasm", Func: testEntryFunc, Listen: []Listener{{Host: "127.0.0.1", Port: port}}}
	outR, outW := io.Pipe()
	var stderr strings.Builder
	done := make(chan int, 1)
	go func() {
		status := run(context.Background(), &cfg, confined(t, dir, NewDenylist(nil)),
			Stdio{Stdin: strings.NewReader(""), Stdout: outW, Stderr: &stderr}, runEnv{})
		outW.Close()
		done <- status
	}()

	dial := func() net.Conn {
		deadline := time.Now().Add(10 * time.Second)
		for {
			c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
			if err == nil {
				t.Cleanup(func() { c.Close() })
				return c
			}
			if time.Now().After(deadline) {
				t.Fatalf("dial the guest's listener: %v", err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	a, b := dial(), dial() // b waits on the listener: it is readable
	line, err := bufio.NewReader(outR).ReadString('\n')
	if err != nil || line != "p\n" {
		t.Fatalf("guest's stdout %q, %v; stderr %s", line, err, stderr.String())
	}
	a.Write([]byte("x"))
	b.Write([]byte("x"))
	go io.Copy(io.Discard, outR)
	select {
	case status := <-done:
		// One event (the clock, 2) in the first poll; the connection (3)
		// in the second.
		if status != 123 {
			t.Errorf("guest exited %d, want 123 (1 event, the clock; then the connection); stderr %s", status, stderr.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("the guest's poll did not return when its connection got data")
	}
}

func TestSameAddr(t *testing.T) {
	v4 := func(a [4]byte, port int) unix.Sockaddr { return &unix.SockaddrInet4{Addr: a, Port: port} }
	v6 := func(ip string, port int) unix.Sockaddr {
		sa := &unix.SockaddrInet6{Port: port}
		copy(sa.Addr[:], net.ParseIP(ip).To16())
		return sa
	}
	tests := []struct {
		name string
		sa   unix.Sockaddr
		l    Listener
		want bool
	}{
		{"v4 address", v4([4]byte{127, 0, 0, 1}, 80), Listener{"127.0.0.1", 80}, true},
		{"other port", v4([4]byte{127, 0, 0, 1}, 81), Listener{"127.0.0.1", 80}, false},
		{"other address", v4([4]byte{10, 0, 0, 1}, 80), Listener{"127.0.0.1", 80}, false},
		{"0.0.0.0 as Go listens on it: dual-stack ::", v6("::", 8080), Listener{"0.0.0.0", 8080}, true},
		{"0.0.0.0 as v4", v4([4]byte{}, 8080), Listener{"0.0.0.0", 8080}, true},
		{"v4-mapped", v6("::ffff:127.0.0.1", 80), Listener{"127.0.0.1", 80}, true},
		{"v6", v6("::1", 80), Listener{"::1", 80}, true},
		{"unix socket", &unix.SockaddrUnix{Name: "x"}, Listener{"0.0.0.0", 80}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sameAddr(tt.sa, tt.l); got != tt.want {
				t.Errorf("sameAddr(%+v, %v) = %v, want %v", tt.sa, tt.l, got, tt.want)
			}
		})
	}
}

// TestAcceptedIgnoresOtherSockets: a socket opened by something else just
// before the accept (here a client in the same process, which took the
// number that was lowest free) is not taken for the accepted connection:
// that has the listener's local port, and is found.
func TestAcceptedIgnoresOtherSockets(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	fd := func(c any) int {
		raw, err := c.(syscall.Conn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var n int
		raw.Control(func(f uintptr) { n = int(f) })
		return n
	}
	fds := newGuestFDs()
	got, ok := fds.accepted(fd(client), fd(l))
	if !ok || got != fd(server) {
		t.Errorf("accepted = %d, %v; want the server side %d, not the client %d", got, ok, fd(server), fd(client))
	}
	fds.host[7] = fd(server) // known now: nothing else is the accepted one
	if got, ok := fds.accepted(fd(client), fd(l)); ok {
		t.Errorf("accepted = %d with no new connection", got)
	}
}
