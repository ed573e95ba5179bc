package shim

import (
	"context"
	"strings"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/pkg/namespaces"
)

// TestTaskEvents: a container is done with once it is deleted and its
// events are out, in whatever order they come, and shutdown waits until
// then.
func TestTaskEvents(t *testing.T) {
	steps := map[string]func(*taskEvents, string) bool{
		"delete": (*taskEvents).deleted,
		"exit":   (*taskEvents).exitPublished,
		"event":  (*taskEvents).deletePublished,
	}
	for _, tt := range []struct {
		name    string
		started bool
		order   []string // the last one makes the container done
	}{
		{"exit event, Delete, delete event", true, []string{"exit", "delete", "event"}},
		{"exit event, delete event, Delete", true, []string{"exit", "event", "delete"}},
		{"Delete, delete event, exit event", true, []string{"delete", "event", "exit"}},
		{"delete event, Delete, exit event", true, []string{"event", "delete", "exit"}},
		{"never started: Delete, delete event", false, []string{"delete", "event"}},
		{"never started: delete event, Delete", false, []string{"event", "delete"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newTaskEvents()
			e.created("c")
			if tt.started {
				e.started("c")
			}
			var waited chan struct{}
			for i, step := range tt.order {
				done := steps[step](e, "c")
				last := i == len(tt.order)-1
				if done != last {
					t.Fatalf("after %s: done = %v, want %v", strings.Join(tt.order[:i+1], ", "), done, last)
				}
				if step == "delete" {
					waited = make(chan struct{})
					go func() { e.wait(context.Background()); close(waited) }()
				}
				if !last && waited != nil {
					select {
					case <-waited:
						t.Fatalf("shutdown went on after %s", strings.Join(tt.order[:i+1], ", "))
					case <-time.After(20 * time.Millisecond):
					}
				}
			}
			select {
			case <-waited:
			case <-time.After(5 * time.Second):
				t.Fatal("shutdown still waits once everything is out")
			}
			if e.exitPublished("c") || len(e.tasks) != 0 {
				t.Error("a late event revived a container done with")
			}
		})
	}

	e := newTaskEvents()
	if err := e.wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.created("running") // not deleted: nothing to wait for
	if err := e.wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.created("lost")
	e.started("lost")
	e.deleted("lost")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := e.wait(ctx); err != nil {
		t.Errorf("wait at the deadline: %v", err)
	}
}

// publishingTasks is runc's task service as far as Delete goes, publishing
// its delete event before Delete returns, as the forwarding goroutine of
// runc's task service may.
type publishingTasks struct {
	taskAPI.TTRPCTaskService
	publisher *mappingPublisher
}

func (f *publishingTasks) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	ev := &eventstypes.TaskDelete{ContainerID: r.ID, Pid: 100, ExitStatus: 137}
	if err := f.publisher.Publish(ctx, "/tasks/delete", ev); err != nil {
		return nil, err
	}
	return &taskAPI.DeleteResponse{Pid: 100, ExitStatus: 137}, nil
}

// TestDeleteRace: a SIGTERM'd Wasm task reports 143 in Delete's answer and
// in both events, whether the delete event goes out before Delete returns
// and the exit event after it (runc's task service marks the init exited
// before it queues its exit event).
func TestDeleteRace(t *testing.T) {
	ctx := namespaces.WithNamespace(context.Background(), "default")
	exits := &exitMapper{wasm: map[string]*wasmTask{}}
	evs := newTaskEvents()
	rec := &recordingPublisher{}
	pub := &mappingPublisher{Publisher: rec, exits: exits, events: evs}
	s := &service{TTRPCTaskService: &publishingTasks{publisher: pub}, exits: exits, events: evs,
		execs: &pendingExecs{files: map[string]func(){}}, containers: newContainers()}
	exits.add("w", &wasmTask{bundle: t.TempDir(), pid: 100})
	evs.created("w")
	evs.started("w")
	if _, ok := exits.killing("w", 15); !ok {
		t.Fatal("SIGTERM to a Wasm task not mapped")
	}

	resp, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "w"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.ExitStatus != 143 {
		t.Errorf("Delete answered %d, want 143", resp.ExitStatus)
	}
	exit := &eventstypes.TaskExit{ContainerID: "w", ID: "w", Pid: 100, ExitStatus: 137}
	if err := pub.Publish(ctx, "/tasks/exit", exit); err != nil {
		t.Fatal(err)
	}
	for i, e := range rec.events {
		var status uint32
		switch e := e.(type) {
		case *eventstypes.TaskDelete:
			status = e.ExitStatus
		case *eventstypes.TaskExit:
			status = e.ExitStatus
		}
		if status != 143 {
			t.Errorf("%s went out with status %d, want 143", rec.topics[i], status)
		}
	}
	if exits.get("w") != nil || len(evs.tasks) != 0 {
		t.Error("the task is remembered after both its events are out")
	}
}

// TestTaskEventsWaitOutlivesCancel: another shutdown callback's error
// cancels the callbacks' context; shutdown still waits for the events.
func TestTaskEventsWaitOutlivesCancel(t *testing.T) {
	e := newTaskEvents()
	e.created("c")
	e.started("c")
	e.deleted("c")
	e.deletePublished("c")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	done := make(chan struct{})
	go func() { e.wait(ctx); close(done) }()
	select {
	case <-done:
		t.Fatal("wait gave up on a canceled context with an exit event still to come")
	case <-time.After(50 * time.Millisecond):
	}
	e.exitPublished("c")
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("wait did not return once the events were out")
	}
}
