package shim

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

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
// configuration, the write end of the pipe on which it says why it failed
// (read by the shim until the runner exits), and, for an exec's runner,
// the directory of its module's compiled code (see withCode).
type runnerFiles struct {
	config, reasonW, reasonR *os.File
	// code is a directory in wazero's cache layout holding the module's
	// compiled code (runner.CacheFD), nil if none is passed; release
	// releases it, once the runner has exited.
	code    *os.File
	release func()
	// logger logs the runner's reasons, with its container's fields.
	logger *log.Entry
	// report is what the runner said, once it has exited.
	report *runnerReport
}

// runnerReport is what a runner said on its reason pipe: done is closed
// once it has exited (or never ran), and oom is set before that if it
// reported its guest failed out of memory (runner.OutOfMemory).
type runnerReport struct {
	done chan struct{}
	oom  bool
}

// outOfMemory waits up to timeout for the runner to have said all, and
// tells whether its guest failed out of memory. The runner has exited when
// this is asked (its exit was reaped): its pipe's end follows at once.
func (r *runnerReport) outOfMemory(timeout time.Duration) bool {
	if r == nil {
		return false
	}
	select {
	case <-r.done:
		return r.oom
	case <-time.After(timeout):
		return false
	}
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
	return &runnerFiles{config: f, reasonW: w, reasonR: r, logger: logger, report: &runnerReport{done: make(chan struct{})}}, nil
}

// withCode passes dir, a directory in wazero's cache layout, to the runner
// as runner.CacheFD, and has release called once the runner has exited
// (or never ran). On error release has been called.
func (f *runnerFiles) withCode(dir string, release func()) error {
	d, err := os.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		release()
		return fmt.Errorf("open compiled code: %w", err)
	}
	f.code, f.release = d, release
	return nil
}

// files are the descriptors to preserve, in the runner's order.
func (f *runnerFiles) files() []*os.File {
	if f.code != nil {
		return []*os.File{f.config, f.reasonW, f.code}
	}
	return []*os.File{f.config, f.reasonW}
}

// handedOver closes the shim's copies of what runc has passed on (or
// failed to, or never will), and logs what the runner reports on the
// reason pipe until the runner exits (at once if it never ran); then the
// compiled code passed on is released.
func (f *runnerFiles) handedOver() {
	f.config.Close()
	f.reasonW.Close()
	if f.code != nil {
		f.code.Close()
	}
	go func() {
		defer close(f.report.done)
		defer f.reasonR.Close()
		if f.release != nil {
			defer f.release()
		}
		msg, oom := readReasons(f.reasonR)
		f.report.oom = oom
		if msg != "" {
			f.logger.WithField("reason", msg).Error("wasm guest failed")
		}
	}()
}

// readReasons reads a runner's reason pipe to its end and returns the
// first maxReason bytes of it, trimmed, and whether a line of it (any,
// however much came before) begins with runner.OutOfMemory.
func readReasons(r io.Reader) (string, bool) {
	br := bufio.NewReader(r)
	var logged []byte
	oom, lineStart := false, true
	for {
		chunk, err := br.ReadSlice('\n') // a line, or a buffer's worth of one
		if len(logged) < maxReason {
			logged = append(logged, chunk[:min(len(chunk), maxReason-len(logged))]...)
		}
		if lineStart && bytes.HasPrefix(chunk, []byte(runner.OutOfMemory)) {
			oom = true
		}
		lineStart = bytes.HasSuffix(chunk, []byte("\n"))
		if err != nil && err != bufio.ErrBufferFull {
			return strings.TrimSpace(string(logged)), oom
		}
	}
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
