package shim

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"

	"github.com/containerd/errdefs"
)

// checkRunnerBinary tells whether the shim's own binary can run as the
// Wasm runner: it is bind-mounted into each Wasm container and run there,
// where the image's rootfs has no dynamic loader and libc to offer (or the
// wrong ones). A Go build with cgo (Go's default where a C compiler is
// found, as with a plain `go build` or `go install`) is dynamically linked;
// every Wasm container would then fail with a bare "no such file or
// directory" from exec.
func checkRunnerBinary() error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the shim's binary: %w", err)
	}
	return checkStatic(self)
}

// checkStatic returns an error naming the fix if the ELF binary at path
// needs a program interpreter (the dynamic loader).
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("read the shim's binary %s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		interp := make([]byte, min(p.Filesz, 4096))
		if _, err := p.ReadAt(interp, 0); err != nil {
			return fmt.Errorf("read the program interpreter of %s: %w", path, err)
		}
		return fmt.Errorf("the shim's binary %s is dynamically linked (it needs %s), so it cannot run as the Wasm runner inside a container: "+
			"rebuild it with CGO_ENABLED=0 (`make build` does; or `CGO_ENABLED=0 go install ...`): %w",
			path, bytes.TrimRight(interp, "\x00"), errdefs.ErrFailedPrecondition)
	}
	return nil
}
