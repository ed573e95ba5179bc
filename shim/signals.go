package shim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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

// killSignalFile records, in a Wasm task's bundle, the first terminating
// signal requested for it: `delete` reports the exit status after the shim
// is gone, from the bundle alone.
const killSignalFile = "wasm-kill-signal"

func writeKillSignal(bundle string, sig uint32) error {
	return os.WriteFile(filepath.Join(bundle, killSignalFile), []byte(strconv.FormatUint(uint64(sig), 10)), 0o600)
}

// readKillSignal returns the signal writeKillSignal recorded, 0 if none.
func readKillSignal(bundle string) (uint32, error) {
	b, err := os.ReadFile(filepath.Join(bundle, killSignalFile))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	sig, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", killSignalFile, err)
	}
	return uint32(sig), nil
}
