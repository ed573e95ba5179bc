package shim

import (
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"

	runc "github.com/containerd/go-runc"
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
