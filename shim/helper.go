package shim

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/runner"
	"github.com/containerd-shim-wasm/containerd-shim-wasm/oci"
)

// helperTimeout bounds how long a helper (a compile or a check) may run.
const helperTimeout = 2 * time.Minute

// helper is a short-lived process of the shim's own binary, started under
// another argv[0] (runner.CompilerName, runner.CheckerName) through the
// reaper, so that a hostile module can neither crash nor bloat the
// long-lived shim. It has an empty environment, dies with the shim, and is
// killed after helperTimeout or when its context ends.
type helper struct {
	cmd            *exec.Cmd
	exit           chan runc.Exit
	stdout, stderr bytes.Buffer
	timedOut       atomic.Bool
	timer          *time.Timer
	stopOnCancel   func() bool
}

func startHelper(ctx context.Context, argv0 string, args []string, stdin io.Reader) (*helper, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find the shim's binary for %s: %w", argv0, err)
	}
	h := &helper{}
	h.cmd = &exec.Cmd{
		Path:   self,
		Args:   append([]string{argv0}, args...),
		Env:    []string{},
		Stdin:  stdin,
		Stdout: &h.stdout,
		Stderr: &h.stderr,
		// A helper outliving a killed shim would hold memory for nothing.
		SysProcAttr: &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL},
	}
	if h.exit, err = reaper.Default.Start(h.cmd); err != nil {
		return nil, fmt.Errorf("start %s: %w", argv0, err)
	}
	h.timer = time.AfterFunc(helperTimeout, func() { h.timedOut.Store(true); h.cmd.Process.Kill() })
	h.stopOnCancel = context.AfterFunc(ctx, func() { h.cmd.Process.Kill() })
	return h, nil
}

// pid is the helper's process id.
func (h *helper) pid() int { return h.cmd.Process.Pid }

// kill ends the helper at once; wait must still be called.
func (h *helper) kill() { h.cmd.Process.Kill() }

// wait waits for the helper to exit and returns its status and its
// stderr, trimmed.
func (h *helper) wait() (int, string, error) {
	status, err := reaper.Default.Wait(h.cmd, h.exit)
	h.timer.Stop()
	h.stopOnCancel()
	if err != nil {
		return 0, "", fmt.Errorf("wait for %s: %w", h.cmd.Args[0], err)
	}
	return status, strings.TrimSpace(h.stderr.String()), nil
}

// refused is the error of a helper that refused the module: it exits
// with runner.ExitCannotRun and the reason on stderr. Otherwise nil.
func refused(ep *oci.Entrypoint, status int, msg string) error {
	if status == runner.ExitCannotRun && msg != "" {
		return fmt.Errorf("entrypoint %s: %s: %w", ep.Name(), msg, errdefs.ErrInvalidArgument)
	}
	return nil
}
