package shim

import (
	"os"
	"os/exec"
	"slices"
	"strconv"

	runc "github.com/containerd/go-runc"
)

// fdMonitor is go-runc's process monitor (the shim's reaper) with one
// addition: a `runc create` of a bundle, or a `runc exec` with a pid file,
// for which a runner's descriptors wait (its configuration and the write
// end of its reason pipe: see runnerFiles) gets them as extra descriptors,
// preserved into the container (`--preserve-fds N`), so that the runner
// finds them as runner.ConfigFD and runner.ReasonFD. runc's shim
// packages start runc through this monitor but pass no extra files
// themselves, so this is the one place where the descriptors can be handed
// over without re-implementing their plumbing.
type fdMonitor struct {
	runc.ProcessMonitor
	// lookup returns the descriptors waiting for the runner of exec execID
	// ("" for the init process) of the container in bundle, nil if none.
	lookup func(bundle, execID string) []*os.File
}

// Start implements runc.ProcessMonitor.
func (m *fdMonitor) Start(c *exec.Cmd) (chan runc.Exit, error) {
	m.inject(c)
	return m.ProcessMonitor.Start(c)
}

// StartLocked implements runc.ProcessMonitor.
func (m *fdMonitor) StartLocked(c *exec.Cmd) (chan runc.Exit, error) {
	m.inject(c)
	return m.ProcessMonitor.StartLocked(c)
}

// inject adds the waiting descriptors to a `runc ... create --bundle B
// ...` or a `runc ... exec ... --pid-file B/EXEC.pid ...`.
func (m *fdMonitor) inject(c *exec.Cmd) {
	if len(c.ExtraFiles) != 0 {
		return
	}
	var files []*os.File
	if i := slices.Index(c.Args, "create"); i >= 0 && i+2 < len(c.Args) && c.Args[i+1] == "--bundle" {
		files = m.lookup(c.Args[i+2], "")
	} else if i := slices.Index(c.Args, "exec"); i >= 0 {
		if j := slices.Index(c.Args[i:], "--pid-file"); j >= 0 && i+j+1 < len(c.Args) {
			if bundle, execID, ok := execOfPidFile(c.Args[i+j+1]); ok {
				files = m.lookup(bundle, execID)
			}
		}
	}
	if len(files) == 0 {
		return
	}
	i := slices.IndexFunc(c.Args, func(a string) bool { return a == "create" || a == "exec" })
	c.ExtraFiles = files
	c.Args = slices.Insert(c.Args, i+1, "--preserve-fds", strconv.Itoa(len(c.ExtraFiles)))
}
