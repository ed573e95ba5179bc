package runner

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/tetratelabs/wazero/api"
	"golang.org/x/sys/unix"
)

// guestFDs is what the runner knows of the guest's descriptors beyond
// wazero's own table (which wazero keeps to itself): the host descriptor
// behind each pollable one (stdin, the listeners and the connections
// accepted on them), so that poll_oneoff can wait on exactly the
// descriptors the guest asks about; and the path, relative to the root, of
// each one the guest opened with path_open, so that a path relative to a
// directory descriptor can go above it (see pathWrappers). The table
// follows the calls that change wazero's: sock_accept adds a connection,
// path_open a path, fd_close and sock_shutdown (of both directions, which
// closes the host socket) remove a descriptor, fd_renumber moves one. A
// guest descriptor without a host descriptor (a file, a directory, stdout)
// is ready at once, as in wazero.
//
// It has no lock: the guest is one thread, and the table is used only from
// its calls into the runner.
type guestFDs struct {
	host  map[uint32]int    // guest descriptor → host descriptor
	paths map[uint32]string // guest descriptor → path from the root ("." for the root)
}

func newGuestFDs() *guestFDs {
	return &guestFDs{host: map[uint32]int{}, paths: map[uint32]string{rootFD: "."}}
}

// rootFD is the guest descriptor of the pre-opened root "/".
const rootFD = 3

// remove forgets guest descriptor fd.
func (t *guestFDs) remove(fd uint32) {
	delete(t.host, fd)
	delete(t.paths, fd)
}

// renumber follows fd_renumber: from becomes to, and what was to is
// closed.
func (t *guestFDs) renumber(from, to uint32) {
	move(t.host, from, to)
	move(t.paths, from, to)
}

// move moves m's value of from to to, dropping to's.
func move[V any](m map[uint32]V, from, to uint32) {
	v, ok := m[from]
	delete(m, to)
	delete(m, from)
	if ok {
		m[to] = v
	}
}

// known reports whether host descriptor h is behind a guest descriptor.
func (t *guestFDs) known(h int) bool {
	for _, v := range t.host {
		if v == h {
			return true
		}
	}
	return false
}

// addListeners records the guest descriptors of the listeners wazero
// opened for ls (ListenFDsStart on, in order), found among the runner's
// sockets by their local address.
func (t *guestFDs) addListeners(ls []Listener) error {
	socks, err := hostSockets()
	if err != nil {
		return err
	}
	for i, l := range ls {
		found := false
		for _, h := range socks {
			sa, err := unix.Getsockname(h)
			if err != nil || !sameAddr(sa, l) || t.known(h) {
				continue
			}
			t.host[uint32(ListenFDsStart+i)] = h
			found = true
			break
		}
		if !found {
			return fmt.Errorf("no socket of the runner listens on %s", l)
		}
	}
	return nil
}

// sameAddr reports whether socket address sa is l's.
func sameAddr(sa unix.Sockaddr, l Listener) bool {
	var ip net.IP
	var port int
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		ip, port = a.Addr[:], a.Port
	case *unix.SockaddrInet6:
		ip, port = a.Addr[:], a.Port
	default:
		return false
	}
	want := net.ParseIP(l.Host)
	// Go listens on a dual-stack "::" for "0.0.0.0".
	return port == l.Port && (ip.Equal(want) || ip.IsUnspecified() && want.IsUnspecified())
}

// accepted finds the host descriptor of the connection an accept on the
// host socket listener just opened. The kernel gives a new descriptor the
// lowest free number, and nothing else in the runner opens one while the
// guest calls in, so it is the number that was lowest free before the
// accept (lowest). Failing that, the runner's sockets are searched. Either
// way the descriptor must be a connected socket no guest descriptor has,
// with the listener's local port: a socket opened meanwhile by anything
// else (a client in the same process, as in tests) is never taken for it.
func (t *guestFDs) accepted(lowest, listener int) (int, bool) {
	port := localPort(listener)
	isConn := func(fd int) bool {
		var st unix.Stat_t
		if fd < 0 || unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK || t.known(fd) {
			return false
		}
		if _, err := unix.Getpeername(fd); err != nil {
			return false
		}
		return port < 0 || localPort(fd) == port
	}
	if isConn(lowest) {
		return lowest, true
	}
	socks, err := hostSockets()
	if err != nil {
		return -1, false
	}
	var found []int
	for _, h := range socks {
		if isConn(h) {
			found = append(found, h)
		}
	}
	if len(found) != 1 {
		return -1, false
	}
	return found[0], true
}

// localPort is the local port of socket fd, -1 if it has none.
func localPort(fd int) int {
	if fd < 0 {
		return -1
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return -1
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return a.Port
	case *unix.SockaddrInet6:
		return a.Port
	}
	return -1
}

// lowestFree returns the lowest descriptor number not in use, -1 if it
// cannot tell.
func lowestFree() int {
	fd, err := unix.FcntlInt(uintptr(unix.Stdout), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	unix.Close(fd)
	return fd
}

// wasiWrappers returns sock_accept, fd_close, fd_renumber and
// sock_shutdown: wazero's own (from orig, by name) and then the table
// kept up to date.
func (t *guestFDs) wasiWrappers(orig map[string]api.GoModuleFunction) map[string]api.GoModuleFunction {
	accept, closeFD, renumber, shutdown := orig["sock_accept"], orig["fd_close"], orig["fd_renumber"], orig["sock_shutdown"]
	return map[string]api.GoModuleFunction{
		// sock_accept(fd, flags, result.fd) errno
		"sock_accept": api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
			resultFD := uint32(stack[2])
			listener := -1
			if h, ok := t.host[uint32(stack[0])]; ok {
				listener = h
			}
			lowest := lowestFree()
			accept.Call(ctx, mod, stack)
			if stack[0] != errnoSuccess {
				return
			}
			fd, ok := mod.Memory().ReadUint32Le(resultFD)
			if !ok {
				return
			}
			if h, ok := t.accepted(lowest, listener); ok {
				t.host[fd] = h
			}
		}),
		// fd_close(fd) errno
		"fd_close": api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
			fd := uint32(stack[0])
			closeFD.Call(ctx, mod, stack)
			if stack[0] == errnoSuccess {
				t.remove(fd)
			}
		}),
		// fd_renumber(fd, to) errno
		"fd_renumber": api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
			from, to := uint32(stack[0]), uint32(stack[1])
			renumber.Call(ctx, mod, stack)
			if stack[0] == errnoSuccess {
				t.renumber(from, to)
			}
		}),
		// sock_shutdown(fd, how) errno; wazero closes the host socket when
		// both directions are shut down.
		"sock_shutdown": api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
			fd, how := uint32(stack[0]), stack[1]
			shutdown.Call(ctx, mod, stack)
			if stack[0] == errnoSuccess && how == shutRDWR {
				delete(t.host, fd)
			}
		}),
	}
}

// shutRDWR is WASI's sdflags for both directions (SHUT_RD | SHUT_WR).
const shutRDWR = 3

// hostSockets lists the runner's open sockets.
func hostSockets() ([]int, error) {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return nil, fmt.Errorf("list the runner's descriptors: %w", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("list the runner's descriptors: %w", err)
	}
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
	return out, nil
}
