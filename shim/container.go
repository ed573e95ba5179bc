package shim

import (
	"context"
	"os"
)

// phase is where a container is in its life, as the shim follows it.
type phase int

const (
	// creating: Create is under way; the container may not exist yet.
	creating phase = iota
	// created: runc created the container; its init process has a pid.
	created
	// running: its init process was started (it may have exited since).
	running
	// deleted: Delete removed it; its exit and delete events may still be
	// on their way out.
	deleted
)

func (p phase) String() string {
	switch p {
	case creating:
		return "creating"
	case created:
		return "created"
	case running:
		return "running"
	case deleted:
		return "deleted"
	}
	return "unknown"
}

// container is what the shim knows of one container, Wasm or native, from
// Create until it is deleted and the events of its init process are out.
// It is the shim's one record of a container: what runc's task service
// keeps of it (processes, stdio, exits) stays there.
type container struct {
	id, bundle string
	// sandbox is the id of its pod sandbox ("" outside a pod), named in
	// every log line about it.
	sandbox string
	// pid of its init process, once created.
	pid   uint32
	phase phase
	// started tells whether its init process was started: deleted
	// follows created or running.
	started bool
	// exitOut and deleteOut tell whether the exit and delete events of
	// its init process have been published.
	exitOut, deleteOut bool
	// wasm is what only a Wasm container has; nil for a native one.
	wasm *wasmContainer
	// cancelCreate ends its Create's context while it is creating: once
	// containerd gives up on the container (deletes it, or shuts the shim
	// down), a compile under way is killed rather than left to finish for
	// nobody.
	cancelCreate context.CancelFunc
}

// wasmContainer is what the shim keeps of a container whose entrypoint is
// a Wasm module, beyond what every container has.
type wasmContainer struct {
	// opts are the runtime options it was created with (for its execs).
	opts *Options
	// signal is the first terminating signal requested for its init
	// process, 0 if none: it was sent as SIGKILL, and the exit is
	// reported as 128 + signal.
	signal uint32
	// init are the descriptors for the init's runner, from Create until
	// `runc create` has returned.
	init *runnerFiles
	// initReport is what the init's runner says, once it has exited: its
	// exit is reported as an OOM if its guest failed out of memory.
	initReport *runnerReport
	// execs are the descriptors of the runners of Wasm execs, by exec id,
	// from Exec until `runc exec` has run (on Start) or the exec is
	// deleted unstarted.
	execs map[string]*runnerFiles
}

// done tells whether nothing more of the container is awaited: it is
// deleted and its delete event is out, and so is its exit event if it was
// started (a started init is deleted only once it has exited, and its exit
// event then always follows; one deleted before Start may have none).
func (c *container) done() bool {
	return c.phase == deleted && c.deleteOut && (c.exitOut || !c.started)
}

// filesFor returns the descriptors to hand to the runc command that starts
// the runner of exec execID ("" for the init process), nil if none wait.
func (c *container) filesFor(execID string) []*os.File {
	if c.wasm == nil || c.phase == deleted {
		return nil
	}
	rf := c.wasm.init
	if execID != "" {
		rf = c.wasm.execs[execID]
	}
	if rf == nil {
		return nil
	}
	return rf.files()
}

// mapStatus returns the exit status to report for the container's init
// process, which exited with status.
func (c *container) mapStatus(status uint32) uint32 {
	if c.wasm == nil {
		return status
	}
	return MapExitStatus(status, c.wasm.signal)
}
