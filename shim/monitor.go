package shim

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"

	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/runtime"
)

// configMonitor is go-runc's process monitor (the shim's reaper) with one
// addition: a `runc create` of a bundle, or a `runc exec` with a pid file,
// whose runner files are registered gets them as extra descriptors,
// preserved into the container (`--preserve-fds N`), so the runner finds
// them as runtime.ConfigFD and runtime.ReasonFD. runc's shim packages start runc through this monitor
// but pass no extra files themselves, so this is the one place where the
// descriptor can be handed over without re-implementing their plumbing.
type configMonitor struct {
	runc.ProcessMonitor
	mu    sync.Mutex
	files map[string][]*os.File // by bundle path (create) or pid file (exec)
}

func newConfigMonitor(inner runc.ProcessMonitor) *configMonitor {
	return &configMonitor{ProcessMonitor: inner, files: map[string][]*os.File{}}
}

// register hands files (runtime.ConfigFD, runtime.ReasonFD, ...) to the
// next `runc create` of bundle key, or `runc exec` with pid file key; the
// returned function withdraws them (call it once runc has returned).
func (m *configMonitor) register(key string, files ...*os.File) func() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.files[key] = files
	return func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if slices.Equal(m.files[key], files) {
			delete(m.files, key)
		}
	}
}

// Start implements runc.ProcessMonitor.
func (m *configMonitor) Start(c *exec.Cmd) (chan runc.Exit, error) {
	m.inject(c)
	return m.ProcessMonitor.Start(c)
}

// StartLocked implements runc.ProcessMonitor.
func (m *configMonitor) StartLocked(c *exec.Cmd) (chan runc.Exit, error) {
	m.inject(c)
	return m.ProcessMonitor.StartLocked(c)
}

// inject adds the registered file to a `runc ... create --bundle B ...`
// or a `runc ... exec ... --pid-file P ...`.
func (m *configMonitor) inject(c *exec.Cmd) {
	if len(c.ExtraFiles) != 0 {
		return
	}
	var key string
	if i := slices.Index(c.Args, "create"); i >= 0 && i+2 < len(c.Args) && c.Args[i+1] == "--bundle" {
		key = c.Args[i+2]
	} else if i := slices.Index(c.Args, "exec"); i >= 0 {
		if j := slices.Index(c.Args[i:], "--pid-file"); j >= 0 && i+j+1 < len(c.Args) {
			key = c.Args[i+j+1]
		}
	}
	if key == "" {
		return
	}
	i := slices.IndexFunc(c.Args, func(a string) bool { return a == "create" || a == "exec" })
	m.mu.Lock()
	files := m.files[key]
	m.mu.Unlock()
	if files == nil {
		return
	}
	c.ExtraFiles = files
	c.Args = slices.Insert(c.Args, i+1, "--preserve-fds", strconv.Itoa(len(c.ExtraFiles)))
}

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
}

// newRunnerFiles makes a runner's configuration file and reason pipe.
func newRunnerFiles(cfg *runtime.Config) (*runnerFiles, error) {
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
	return &runnerFiles{config: f, reasonW: w, reasonR: r}, nil
}

// files are the descriptors to preserve, in the runner's order.
func (f *runnerFiles) files() []*os.File { return []*os.File{f.config, f.reasonW} }

// handedOver closes the shim's copies of what runc has passed on (or
// failed to), and logs what the runner reports on the reason pipe, with
// logger's fields, until the runner exits.
func (f *runnerFiles) handedOver(logger *log.Entry) {
	f.config.Close()
	f.reasonW.Close()
	go func() {
		defer f.reasonR.Close()
		b, _ := io.ReadAll(io.LimitReader(f.reasonR, maxReason))
		io.Copy(io.Discard, f.reasonR)
		if msg := strings.TrimSpace(string(b)); msg != "" {
			logger.WithField("reason", msg).Error("wasm guest failed")
		}
	}()
}

// maxReason bounds what is logged of a runner's reasons.
const maxReason = 4096
