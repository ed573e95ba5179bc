package shim

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
)

// sandboxAnnotation is the annotation in which CRI names a container's pod
// sandbox (the sandbox's own id for the sandbox container).
const sandboxAnnotation = "io.kubernetes.cri.sandbox-id"

// containers is the shim's registry of its containers: one record per
// container, with the operations the task service and its event publisher
// need.
//
// A record lives from Create until its container is deleted and the
// events of its init process are out. runc's task service marks an init
// exited before it queues the exit event, so a client that waited can
// have the container deleted, and the delete event queued, first: the two
// events go out in either order, and the exit mapping of a Wasm container
// must outlive both. Shutdown waits for them too: pkg/shim exits once its
// shutdown callbacks return, without waiting for queued events, and runc's
// task service drops an event sent after shutdown.
//
// A deleted record whose events are still out is kept beside a new
// container created under the same id; events find their record by the
// init's pid.
type containers struct {
	mu sync.Mutex
	// byID holds the records of each id, the current one last.
	byID map[string][]*container
	// changed is closed and cleared on every change (see wait).
	changed chan struct{}
}

func newContainers() *containers {
	return &containers{byID: map[string][]*container{}}
}

// current returns the record of container id that is not deleted, nil if
// none. The caller holds r.mu.
func (r *containers) current(id string) *container {
	cs := r.byID[id]
	if len(cs) == 0 || cs[len(cs)-1].phase == deleted {
		return nil
	}
	return cs[len(cs)-1]
}

// byPid returns the record of container id whose init has pid, or the
// last one if pid is 0 or none has it. The caller holds r.mu.
func (r *containers) byPid(id string, pid uint32) *container {
	cs := r.byID[id]
	for i := len(cs) - 1; i >= 0; i-- {
		if pid != 0 && cs[i].pid == pid {
			return cs[i]
		}
	}
	if len(cs) > 0 {
		return cs[len(cs)-1]
	}
	return nil
}

// changedLocked wakes wait and forgets c if nothing more of it is
// awaited. The caller holds r.mu.
func (r *containers) changedLocked(c *container) {
	if r.changed != nil {
		close(r.changed)
		r.changed = nil
	}
	if c == nil || !c.done() {
		return
	}
	cs := r.byID[c.id]
	for i, x := range cs {
		if x == c {
			cs = append(cs[:i:i], cs[i+1:]...)
			break
		}
	}
	if len(cs) == 0 {
		delete(r.byID, c.id)
	} else {
		r.byID[c.id] = cs
	}
}

// add records a container whose Create has begun. A container of that id
// that is not deleted yet is an error.
func (r *containers) add(c *container) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.current(c.id) != nil {
		return fmt.Errorf("container %s: %w", c.id, errdefs.ErrAlreadyExists)
	}
	c.phase = creating
	r.byID[c.id] = append(r.byID[c.id], c)
	return nil
}

// setWasm makes container id a Wasm container, with the init runner's
// descriptors waiting for `runc create`.
func (r *containers) setWasm(id string, w *wasmContainer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.current(id); c != nil && c.phase == creating {
		c.wasm = w
	}
}

// createReturned withdraws the init runner's descriptors once `runc
// create` has returned (they have been passed on, or failed to be) and
// returns them, to be closed.
func (r *containers) createReturned(id string) *runnerFiles {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.current(id)
	if c == nil || c.wasm == nil {
		return nil
	}
	rf := c.wasm.init
	c.wasm.init = nil
	return rf
}

// created records container id as created by runc, its init being pid.
func (r *containers) created(id string, pid uint32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.current(id); c != nil && c.phase == creating {
		c.pid, c.phase = pid, created
	}
}

// abandon forgets container id whose Create failed, and returns its
// runners' descriptors, to be closed. runc's task service knows nothing of
// it either: containerd's cleanup Delete gets NotFound.
func (r *containers) abandon(id string) []*runnerFiles {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.current(id)
	if c == nil || c.phase != creating {
		return nil
	}
	cs := r.byID[id]
	r.byID[id] = cs[:len(cs)-1]
	if len(r.byID[id]) == 0 {
		delete(r.byID, id)
	}
	r.changedLocked(nil)
	return c.takeFiles()
}

// cancelCreate ends the context of container id's Create, if it is under
// way: containerd deleted a container it gave up creating.
func (r *containers) cancelCreate(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.current(id); c != nil && c.phase == creating && c.cancelCreate != nil {
		c.cancelCreate()
	}
}

// started records that container id's init process was started.
func (r *containers) started(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.current(id); c != nil && c.phase == created {
		c.phase, c.started = running, true
		r.changedLocked(c)
	}
}

// get returns a copy of container id's record, without its runners'
// descriptors; ok is false if there is none.
func (r *containers) get(id string) (_ container, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.current(id)
	if c == nil {
		return container{}, false
	}
	cp := *c
	if c.wasm != nil {
		w := *c.wasm
		w.init, w.execs = nil, nil
		cp.wasm = &w
	}
	return cp, true
}

// sandbox returns the pod sandbox of container id, "" if none is known.
func (r *containers) sandbox(id string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.byPid(id, 0); c != nil {
		return c.sandbox
	}
	return ""
}

// killing records a signal requested for container id's init process and
// returns the signal to send instead: SIGKILL if id is a Wasm container
// and sig ends a process. ok is false if sig is to be sent as it is.
func (r *containers) killing(id string, sig uint32) (_ uint32, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.current(id)
	if c == nil || c.wasm == nil || !Terminating(sig) {
		return 0, false
	}
	if c.wasm.signal == 0 {
		c.wasm.signal = sig
	}
	return sigKill, true
}

// status maps the exit status of container id's init process.
func (r *containers) status(id string, status uint32) uint32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.current(id); c != nil {
		return c.mapStatus(status)
	}
	return status
}

// killSignal returns the first terminating signal asked for container
// id's init process, 0 if none or if id is no Wasm container: what Delete
// maps runc's status with, taken before runc's task service deletes it,
// since its delete event may go out, and end the record, before Delete
// returns.
func (r *containers) killSignal(id string) uint32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.current(id); c != nil && c.wasm != nil {
		return c.wasm.signal
	}
	return 0
}

// deleted records that container id was deleted and returns the
// descriptors of its execs that never started, to be closed.
func (r *containers) deleted(id string) []*runnerFiles {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.current(id)
	if c == nil {
		return nil
	}
	c.phase = deleted
	files := c.takeFiles()
	r.changedLocked(c)
	return files
}

// takeFiles withdraws all of the container's runner descriptors.
func (c *container) takeFiles() []*runnerFiles {
	if c.wasm == nil {
		return nil
	}
	var files []*runnerFiles
	if c.wasm.init != nil {
		files = append(files, c.wasm.init)
	}
	for _, rf := range c.wasm.execs {
		files = append(files, rf)
	}
	c.wasm.init, c.wasm.execs = nil, nil
	return files
}

// addExec keeps the descriptors of a Wasm exec's runner until `runc exec`
// runs it. An exec of that id added before and never started is replaced;
// its descriptors are returned, to be closed.
func (r *containers) addExec(id, execID string, rf *runnerFiles) (replaced *runnerFiles, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.current(id)
	if c == nil || c.wasm == nil {
		return nil, fmt.Errorf("container %s: %w", id, errdefs.ErrNotFound)
	}
	if c.wasm.execs == nil {
		c.wasm.execs = map[string]*runnerFiles{}
	}
	replaced = c.wasm.execs[execID]
	c.wasm.execs[execID] = rf
	return replaced, nil
}

// execDone withdraws the descriptors of exec execID of container id, once
// `runc exec` has run it or it is deleted, and returns them, to be
// closed; nil if there are none.
func (r *containers) execDone(id, execID string) *runnerFiles {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.current(id)
	if c == nil || c.wasm == nil {
		return nil
	}
	rf := c.wasm.execs[execID]
	delete(c.wasm.execs, execID)
	return rf
}

// runnerFiles returns the descriptors waiting for the runc command that
// starts a runner in bundle: its init's if execID is "", otherwise exec
// execID's. nil if none wait. This is fdMonitor's lookup.
func (r *containers) runnerFiles(bundle, execID string) []*os.File {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id := range r.byID {
		if c := r.current(id); c != nil && c.bundle == bundle {
			return c.filesFor(execID)
		}
	}
	return nil
}

// initReport returns what the runner of container id's init process (pid)
// says, nil for a native container.
func (r *containers) initReport(id string, pid uint32) *runnerReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.byPid(id, pid); c != nil && c.wasm != nil {
		return c.wasm.initReport
	}
	return nil
}

// published maps the exit status of an event of container id's init
// process (pid) and returns the function that records the event as out,
// to be called once it is: exit tells an exit event from a delete event.
func (r *containers) published(id string, pid uint32, status *uint32, exit bool) func() {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.byPid(id, pid)
	if c == nil {
		return func() {}
	}
	*status = c.mapStatus(*status)
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if exit {
			c.exitOut = true
		} else {
			c.deleteOut = true
		}
		r.changedLocked(c)
	}
}

// eventsWaitTimeout bounds how long shutdown waits for events.
const eventsWaitTimeout = 10 * time.Second

// wait returns once the events of every deleted container are out and
// every Create under way has returned (their contexts ended first: a
// Create still under way at shutdown was given up on), or after
// eventsWaitTimeout. It is a shutdown callback: the shim shuts down when
// it serves no container any more, so every container is deleted by then. ctx's cancellation is not heeded (another callback's error cancels
// it), its deadline is.
func (r *containers) wait(ctx context.Context) error {
	deadline, ok := ctx.Deadline()
	if !ok || time.Until(deadline) > eventsWaitTimeout {
		deadline = time.Now().Add(eventsWaitTimeout)
	}
	ctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
	defer cancel()
	r.mu.Lock()
	for _, cs := range r.byID {
		for _, c := range cs {
			if c.phase == creating && c.cancelCreate != nil {
				c.cancelCreate()
			}
		}
	}
	r.mu.Unlock()
	for {
		r.mu.Lock()
		if !r.pendingLocked() {
			r.mu.Unlock()
			return nil
		}
		if r.changed == nil {
			r.changed = make(chan struct{})
		}
		changed := r.changed
		r.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return nil // exit anyway: the events are lost, not the shim stuck
		}
	}
}

// pendingLocked tells whether a deleted container's events are still to
// go out, or a Create is under way. The caller holds r.mu.
func (r *containers) pendingLocked() bool {
	for _, cs := range r.byID {
		for _, c := range cs {
			if c.phase == deleted || c.phase == creating {
				return true
			}
		}
	}
	return false
}

// logCtx returns ctx with a logger whose lines carry the namespace, the
// container id, its pod sandbox's id (if any) and the exec id (if any).
func (r *containers) logCtx(ctx context.Context, id, execID string) context.Context {
	fields := log.Fields{"id": id}
	if ns, ok := namespaces.Namespace(ctx); ok {
		fields["namespace"] = ns
	}
	if sb := r.sandbox(id); sb != "" {
		fields["sandbox"] = sb
	}
	if execID != "" {
		fields["exec"] = execID
	}
	return log.WithLogger(ctx, log.G(ctx).WithFields(fields))
}

// execOfPidFile returns the bundle and exec id of a `runc exec`'s pid
// file, as runc's task service names it (execPidFile).
func execOfPidFile(pidFile string) (bundle, execID string, ok bool) {
	base := filepath.Base(pidFile)
	if !strings.HasSuffix(base, ".pid") || base == ".pid" {
		return "", "", false
	}
	return filepath.Dir(pidFile), strings.TrimSuffix(base, ".pid"), true
}
