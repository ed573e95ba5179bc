package shim

import (
	"syscall"
	"testing"
)

func TestTerminatingSignals(t *testing.T) {
	tests := []struct {
		sig  syscall.Signal
		want bool
	}{
		{syscall.SIGTERM, true},
		{syscall.SIGINT, true},
		{syscall.SIGKILL, true},
		{syscall.SIGHUP, true},
		{syscall.SIGUSR1, true},
		{syscall.SIGUSR2, true},
		{syscall.SIGQUIT, true},
		{syscall.SIGABRT, true},
		{syscall.SIGPIPE, true},
		{syscall.SIGALRM, true},
		{syscall.Signal(34), true}, // SIGRTMIN
		{syscall.Signal(64), true}, // SIGRTMAX
		{syscall.SIGSTOP, false},
		{syscall.SIGTSTP, false},
		{syscall.SIGTTIN, false},
		{syscall.SIGTTOU, false},
		{syscall.SIGCONT, false},
		{syscall.SIGWINCH, false},
		{syscall.SIGCHLD, false},
		{syscall.SIGURG, false},
		{0, false},
		{65, false},
		{1000, false},
	}
	for _, tt := range tests {
		if got := Terminating(uint32(tt.sig)); got != tt.want {
			t.Errorf("Terminating(%d %v) = %v, want %v", int(tt.sig), tt.sig, got, tt.want)
		}
	}
}

func TestMapExitStatusTable(t *testing.T) {
	const (
		term = uint32(syscall.SIGTERM)
		intr = uint32(syscall.SIGINT)
		kill = uint32(syscall.SIGKILL)
		hup  = uint32(syscall.SIGHUP)
	)
	tests := []struct {
		status, requested, want uint32
	}{
		{137, term, 143},
		{137, intr, 130},
		{137, hup, 129},
		{137, kill, 137},
		{137, 0, 137},
		{0, term, 0},
		{42, term, 42},
		{143, term, 143},
		{134, term, 134}, // a trap is not a kill
		{136, term, 136},
		{138, term, 138},
	}
	for _, tt := range tests {
		if got := MapExitStatus(tt.status, tt.requested); got != tt.want {
			t.Errorf("MapExitStatus(%d, %d) = %d, want %d", tt.status, tt.requested, got, tt.want)
		}
	}
}
