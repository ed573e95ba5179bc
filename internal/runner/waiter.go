package runner

import (
	"errors"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// waiter blocks the guest's poll_oneoff in Go's own network poller rather
// than in a poll(2) system call. A goroutine in a blocking system call
// keeps its P, which Go's sysmon thread then takes back and hands off, and
// sysmon itself keeps waking every 20 µs to 10 ms while any P is busy: a
// seventh of a Go server's CPU per request. A goroutine parked in the
// network poller leaves its P idle, so sysmon sleeps.
//
// The descriptors to wait on go into an epoll set of the waiter's own
// (level-triggered), for the time of the wait; the set's descriptor is
// registered with Go's poller, which reports it readable when the set has
// an event.
type waiter struct {
	ep   int
	file *os.File
	raw  syscall.RawConn
}

// newWaiter returns a waiter, or an error if the Go poller cannot take an
// epoll descriptor (the caller then blocks in poll(2)).
func newWaiter() (*waiter, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	if err := unix.SetNonblock(ep, true); err != nil {
		unix.Close(ep)
		return nil, err
	}
	f := os.NewFile(uintptr(ep), "poll_oneoff")
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	// A file the Go poller did not take has no deadlines.
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		f.Close()
		return nil, err
	}
	return &waiter{ep: ep, file: f, raw: raw}, nil
}

// wait blocks until one of fds has one of its events or timeout (forever
// if negative) has passed. It does not set fds' Revents (the caller polls
// them once more); it reports false if it could not wait, for the caller
// to fall back to poll(2).
func (w *waiter) wait(fds []unix.PollFd, timeout time.Duration) bool {
	events := map[int32]int16{}
	var order []int32
	for _, fd := range fds {
		if _, ok := events[fd.Fd]; !ok {
			order = append(order, fd.Fd)
		}
		events[fd.Fd] |= fd.Events
	}
	var added []int32
	defer func() {
		for _, fd := range added {
			unix.EpollCtl(w.ep, unix.EPOLL_CTL_DEL, int(fd), nil)
		}
	}()
	for _, fd := range order {
		ev := unix.EpollEvent{Fd: fd}
		if events[fd]&unix.POLLIN != 0 {
			ev.Events |= unix.EPOLLIN | unix.EPOLLRDHUP
		}
		if events[fd]&unix.POLLOUT != 0 {
			ev.Events |= unix.EPOLLOUT
		}
		if err := unix.EpollCtl(w.ep, unix.EPOLL_CTL_ADD, int(fd), &ev); err != nil {
			return false // e.g. a regular file (EPERM): poll(2) says it is ready
		}
		added = append(added, fd)
	}
	var deadline time.Time
	if timeout >= 0 {
		deadline = time.Now().Add(timeout)
	}
	if err := w.file.SetReadDeadline(deadline); err != nil {
		return false
	}
	buf := make([]unix.EpollEvent, 1)
	err := w.raw.Read(func(uintptr) bool {
		n, err := unix.EpollWait(w.ep, buf, 0)
		return n > 0 || err != nil && err != unix.EINTR
	})
	return err == nil || errors.Is(err, os.ErrDeadlineExceeded)
}
