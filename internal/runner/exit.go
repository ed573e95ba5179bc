package runner

import (
	"context"
	"errors"
	"fmt"

	"github.com/tetratelabs/wazero/sys"
)

// Exit statuses of the runner, besides the guest's own.
const (
	// ExitMax is the largest status a process can report. A guest's
	// proc_exit(n) with n > ExitMax is reported as ExitMax, never wrapped
	// modulo 256, so that a failure cannot read as success.
	ExitMax = 255
	// ExitTrap is reported when the guest traps (unreachable, out-of-bounds
	// access, stack exhaustion, ...): 128+SIGABRT, as a native program that
	// aborts, and as wasmtime reports a trap.
	ExitTrap = 134
	// ExitCannotRun is reported when the module cannot be compiled or
	// instantiated, or lacks the function to call.
	ExitCannotRun = 126
	// ExitRunner is reported when the runner itself cannot start: its
	// configuration or the container lacks what it needs.
	ExitRunner = 125
)

// ExitStatus maps what a call of the guest's entry function returned to a
// process exit status, and the message to print on the guest's stderr.
func ExitStatus(err error) (int, string) {
	if err == nil {
		return 0, ""
	}
	var exit *sys.ExitError
	if errors.As(err, &exit) {
		code := exit.ExitCode()
		if code > ExitMax {
			return ExitMax, ""
		}
		return int(code), ""
	}
	if errors.Is(err, context.Canceled) {
		return ExitTrap, fmt.Sprintf("wasm guest stopped: %v", err)
	}
	return ExitTrap, fmt.Sprintf("wasm trap: %v", err)
}
