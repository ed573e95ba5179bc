package shim

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/runner"
)

// sealedFile returns a read-only, sealed memfd holding data: no file in any
// file system, and no later write can change what the runner reads.
func sealedFile(name string, data []byte) (*os.File, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd for %s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return nil, fmt.Errorf("write %s: %w", name, err)
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_WRITE|unix.F_SEAL_GROW|unix.F_SEAL_SHRINK|unix.F_SEAL_SEAL); err != nil {
		f.Close()
		return nil, fmt.Errorf("seal %s: %w", name, err)
	}
	return f, nil
}

// runnerFiles are the descriptors a runner gets from the shim: its
// configuration, and the write end of the pipe on which it says why it
// failed (read by the shim until the runner exits).
type runnerFiles struct {
	config, reasonW, reasonR *os.File
	// logger logs the runner's reasons, with its container's fields.
	logger *log.Entry
}

// newRunnerFiles makes a runner's configuration file and reason pipe.
func newRunnerFiles(cfg *runner.Config, logger *log.Entry) (*runnerFiles, error) {
	var buf bytes.Buffer
	if err := cfg.Encode(&buf); err != nil {
		return nil, fmt.Errorf("encode runner config: %w", err)
	}
	f, err := sealedFile("containerd-shim-wasm-config", buf.Bytes())
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("reason pipe: %w", err)
	}
	return &runnerFiles{config: f, reasonW: w, reasonR: r, logger: logger}, nil
}

// files are the descriptors to preserve, in the runner's order.
func (f *runnerFiles) files() []*os.File { return []*os.File{f.config, f.reasonW} }

// handedOver closes the shim's copies of what runc has passed on (or
// failed to, or never will), and logs what the runner reports on the
// reason pipe until the runner exits (at once if it never ran).
func (f *runnerFiles) handedOver() {
	f.config.Close()
	f.reasonW.Close()
	go func() {
		defer f.reasonR.Close()
		b, _ := io.ReadAll(io.LimitReader(f.reasonR, maxReason))
		io.Copy(io.Discard, f.reasonR)
		if msg := strings.TrimSpace(string(b)); msg != "" {
			f.logger.WithField("reason", msg).Error("wasm guest failed")
		}
	}()
}

// maxReason bounds what is logged of a runner's reasons.
const maxReason = 4096

// handOver calls handedOver on each of files.
func handOver(files ...*runnerFiles) {
	for _, f := range files {
		if f != nil {
			f.handedOver()
		}
	}
}
