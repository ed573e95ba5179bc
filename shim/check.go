package shim

import (
	"context"
	"fmt"
	"os"
	"syscall"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/runner"
	"github.com/containerd-shim-wasm/containerd-shim-wasm/oci"
)

// checkModule decodes and validates the entrypoint module, and checks its
// entry function, in a helper (runner.CheckerName) with wazero's
// interpreter: what Create does instead of compiling when the compile
// cache cannot be used. The module reaches the helper as its stdin.
func checkModule(ctx context.Context, ep *oci.Entrypoint) error {
	f, err := os.OpenFile(ep.HostPath, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("open module %s: %w", ep.Name(), err)
	}
	defer f.Close()
	h, err := startHelper(ctx, runner.CheckerName, []string{ep.Func}, f)
	if err != nil {
		return err
	}
	status, msg, err := h.wait()
	switch {
	case err != nil:
		return fmt.Errorf("module check of %s: %w", ep.Name(), err)
	case status == 0:
		return nil
	case refused(ep, status, msg) != nil:
		return refused(ep, status, msg)
	default:
		return fmt.Errorf("module check of %s failed with status %d: %s", ep.Name(), status, msg)
	}
}
