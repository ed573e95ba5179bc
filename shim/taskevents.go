package shim

import (
	"context"
	"sync"
	"time"
)

// taskEvents follows the exit and delete events of each container's init
// process, from Create until both are out (or, for a container deleted
// without being started, until its delete event is out).
//
// runc's task service marks an init exited before it queues its exit event,
// so a client that waited can have the task deleted, and the delete event
// queued, first: the two events go out in either order. The exit mapping of
// a Wasm task must outlive both, and shutdown must wait for both: pkg/shim
// exits once its shutdown callbacks return, without waiting for the events
// still queued, and runc's task service drops an event sent after
// shutdown.
type taskEvents struct {
	mu      sync.Mutex
	tasks   map[string]*initEvents
	changed chan struct{} // closed and cleared on every change
}

// initEvents is what is known of one container's init process.
type initEvents struct {
	started, deleted   bool
	exitOut, deleteOut bool
}

// done tells whether nothing more is awaited: the container is deleted and
// its delete event is out, and so is its exit event if it was started (a
// started init is deleted only once it has exited, and its exit event then
// always follows; one deleted before Start may have none).
func (t *initEvents) done() bool {
	return t.deleted && t.deleteOut && (t.exitOut || !t.started)
}

func newTaskEvents() *taskEvents {
	return &taskEvents{tasks: map[string]*initEvents{}}
}

// update applies f to container id's record, if it has one, and forgets
// the record once it is done. It tells whether the record was done.
func (e *taskEvents) update(id string, f func(*initEvents)) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	t, ok := e.tasks[id]
	if !ok {
		return false
	}
	f(t)
	if e.changed != nil {
		close(e.changed)
		e.changed = nil
	}
	if t.done() {
		delete(e.tasks, id)
		return true
	}
	return false
}

// created starts following container id (its Create succeeded).
func (e *taskEvents) created(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tasks[id] = &initEvents{}
}

// started records that container id's init was started.
func (e *taskEvents) started(id string) {
	e.update(id, func(t *initEvents) { t.started = true })
}

// deleted records that container id was deleted; it tells whether
// nothing more of it is awaited.
func (e *taskEvents) deleted(id string) bool {
	return e.update(id, func(t *initEvents) { t.deleted = true })
}

// exitPublished records that the exit event of container id's init is out;
// it tells whether nothing more of it is awaited.
func (e *taskEvents) exitPublished(id string) bool {
	return e.update(id, func(t *initEvents) { t.exitOut = true })
}

// deletePublished records that container id's delete event is out; it
// tells whether nothing more of it is awaited.
func (e *taskEvents) deletePublished(id string) bool {
	return e.update(id, func(t *initEvents) { t.deleteOut = true })
}

// eventsWaitTimeout bounds how long shutdown waits for events.
const eventsWaitTimeout = 10 * time.Second

// wait returns once the events of every deleted container are out, or
// after eventsWaitTimeout. It is a shutdown callback: the shim shuts down
// when it serves no container any more, so every container is deleted by
// then. ctx's cancellation is not heeded (another callback's error cancels
// it), its deadline is.
func (e *taskEvents) wait(ctx context.Context) error {
	deadline, ok := ctx.Deadline()
	if !ok || time.Until(deadline) > eventsWaitTimeout {
		deadline = time.Now().Add(eventsWaitTimeout)
	}
	ctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
	defer cancel()
	for {
		e.mu.Lock()
		pending := false
		for _, t := range e.tasks {
			if t.deleted {
				pending = true
				break
			}
		}
		if !pending {
			e.mu.Unlock()
			return nil
		}
		if e.changed == nil {
			e.changed = make(chan struct{})
		}
		changed := e.changed
		e.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return nil // exit anyway: the events are lost, not the shim stuck
		}
	}
}
