package shim

import (
	"syscall"
)

const sigKill = uint32(syscall.SIGKILL)

// Terminating reports whether the default action of sig ends a process. The
// others (stop, continue, and those ignored by default) reach a Wasm task
// unchanged.
func Terminating(sig uint32) bool {
	switch syscall.Signal(sig) {
	case syscall.SIGCHLD, syscall.SIGCONT, syscall.SIGSTOP, syscall.SIGTSTP,
		syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGURG, syscall.SIGWINCH:
		return false
	}
	return sig > 0 && sig < 65
}

// MapExitStatus returns the status to report for a Wasm task that exited
// with status after requested, the first terminating signal it was sent (0
// if none), was delivered as SIGKILL.
func MapExitStatus(status, requested uint32) uint32 {
	if requested != 0 && status == 128+sigKill {
		return 128 + requested
	}
	return status
}
