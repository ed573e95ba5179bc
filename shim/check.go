package shim

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	"github.com/containerd/errdefs"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/oci"
	"github.com/containerd-shim-wasm/containerd-shim-wasm/runtime"
)

// checkTimeout bounds how long a module check may take.
const checkTimeout = 2 * time.Minute

// checkModule decodes and validates the entrypoint module in a short-lived
// helper process (the shim's own binary, as runtime.CheckerName), so that a
// hostile module can neither crash nor bloat the long-lived shim. The module
// reaches the helper as its stdin.
func checkModule(ctx context.Context, ep *oci.Entrypoint) error {
	f, err := os.OpenFile(ep.HostPath, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("open module %s: %w", ep.Path, err)
	}
	defer f.Close()
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the shim's binary to check the module: %w", err)
	}
	var stderr bytes.Buffer
	cmd := &exec.Cmd{
		Path:   self,
		Args:   []string{runtime.CheckerName, ep.Func},
		Env:    []string{},
		Stdin:  f,
		Stderr: &stderr,
	}
	ec, err := reaper.Default.Start(cmd)
	if err != nil {
		return fmt.Errorf("start module check: %w", err)
	}
	timer := time.AfterFunc(checkTimeout, func() { cmd.Process.Kill() })
	status, err := reaper.Default.Wait(cmd, ec)
	timer.Stop()
	if err != nil {
		return fmt.Errorf("module check of %s: %w", ep.Path, err)
	}
	msg := strings.TrimSpace(stderr.String())
	switch {
	case status == 0:
		return nil
	case status == runtime.ExitCannotRun && msg != "":
		return fmt.Errorf("entrypoint %s: %s: %w", ep.Path, msg, errdefs.ErrInvalidArgument)
	default:
		return fmt.Errorf("module check of %s failed with status %d: %s", ep.Path, status, msg)
	}
}
