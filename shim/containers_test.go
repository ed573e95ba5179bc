package shim

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/runner"
)

// newWasm records a Wasm container id, created with init pid and
// started, as Create and Start do.
func newWasm(t *testing.T, r *containers, id string, pid uint32) {
	t.Helper()
	if err := r.add(&container{id: id, bundle: "/b/" + id}); err != nil {
		t.Fatal(err)
	}
	r.setWasm(id, &wasmContainer{opts: &Options{}})
	r.created(id, pid)
	r.started(id)
}

// TestContainersSignals: a terminating signal to a Wasm container's init
// is sent as SIGKILL and its exit reported as 128 + the first such signal;
// other signals and native containers are left alone.
func TestContainersSignals(t *testing.T) {
	type step struct {
		op     string // wasm, native, kill, status, delete
		id     string
		arg    uint32 // signal, status, or pid
		want   uint32 // signal to send, or status
		wantOK bool   // for kill
	}
	for _, tt := range []struct {
		name  string
		steps []step
	}{
		{"unknown container", []step{
			{op: "kill", id: "x", arg: 15},
			{op: "status", id: "x", arg: 137, want: 137},
		}},
		{"native container", []step{
			{op: "native", id: "n", arg: 50},
			{op: "kill", id: "n", arg: 15},
			{op: "status", id: "n", arg: 137, want: 137},
		}},
		{"SIGTERM reported as 143", []step{
			{op: "wasm", id: "w", arg: 100},
			{op: "status", id: "w", arg: 137, want: 137}, // no signal yet: a real SIGKILL
			{op: "kill", id: "w", arg: 15, want: 9, wantOK: true},
			{op: "status", id: "w", arg: 137, want: 143},
			{op: "status", id: "w", arg: 3, want: 3},
			{op: "delete", id: "w"},
			{op: "kill", id: "w", arg: 15},
		}},
		{"first signal kept", []step{
			{op: "wasm", id: "w", arg: 100},
			{op: "kill", id: "w", arg: 2, want: 9, wantOK: true},
			{op: "kill", id: "w", arg: 15, want: 9, wantOK: true},
			{op: "kill", id: "w", arg: 9, want: 9, wantOK: true},
			{op: "status", id: "w", arg: 137, want: 130},
		}},
		{"non-terminating signals pass", []step{
			{op: "wasm", id: "w", arg: 100},
			{op: "kill", id: "w", arg: 19}, // SIGSTOP
			{op: "kill", id: "w", arg: 18}, // SIGCONT
			{op: "kill", id: "w", arg: 28}, // SIGWINCH
			{op: "status", id: "w", arg: 137, want: 137},
			{op: "kill", id: "w", arg: 1, want: 9, wantOK: true},
			{op: "status", id: "w", arg: 137, want: 129},
		}},
		{"SIGKILL asked for", []step{
			{op: "wasm", id: "w", arg: 100},
			{op: "kill", id: "w", arg: 9, want: 9, wantOK: true},
			{op: "status", id: "w", arg: 137, want: 137},
		}},
		{"containers are separate", []step{
			{op: "wasm", id: "a", arg: 100},
			{op: "wasm", id: "b", arg: 101},
			{op: "kill", id: "a", arg: 15, want: 9, wantOK: true},
			{op: "status", id: "b", arg: 137, want: 137},
			{op: "status", id: "a", arg: 137, want: 143},
		}},
		{"created again under the same id", []step{
			{op: "wasm", id: "w", arg: 100},
			{op: "kill", id: "w", arg: 15, want: 9, wantOK: true},
			{op: "delete", id: "w"},
			{op: "wasm", id: "w", arg: 200},
			{op: "status", id: "w", arg: 137, want: 137},
			{op: "kill", id: "w", arg: 2, want: 9, wantOK: true},
			{op: "status", id: "w", arg: 137, want: 130},
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newContainers()
			for i, s := range tt.steps {
				switch s.op {
				case "wasm":
					newWasm(t, r, s.id, s.arg)
				case "native":
					r.add(&container{id: s.id})
					r.created(s.id, s.arg)
				case "delete":
					r.deleted(s.id)
				case "kill":
					sig, ok := r.killing(s.id, s.arg)
					if sig != s.want || ok != s.wantOK {
						t.Errorf("step %d: killing(%q, %d) = %d, %v; want %d, %v", i, s.id, s.arg, sig, ok, s.want, s.wantOK)
					}
				case "status":
					if got := r.status(s.id, s.arg); got != s.want {
						t.Errorf("step %d: status(%q, %d) = %d, want %d", i, s.id, s.arg, got, s.want)
					}
				default:
					t.Fatalf("bad step %q", s.op)
				}
			}
		})
	}
}

// TestContainersLifetime: a record ends once its container is deleted and
// its init's events are out, in whatever order they come, and shutdown
// waits until then.
func TestContainersLifetime(t *testing.T) {
	for _, tt := range []struct {
		name    string
		started bool
		order   []string // the last one ends the record
	}{
		{"exit event, Delete, delete event", true, []string{"exit", "delete", "event"}},
		{"exit event, delete event, Delete", true, []string{"exit", "event", "delete"}},
		{"Delete, delete event, exit event", true, []string{"delete", "event", "exit"}},
		{"delete event, Delete, exit event", true, []string{"event", "delete", "exit"}},
		{"never started: Delete, delete event", false, []string{"delete", "event"}},
		{"never started: delete event, Delete", false, []string{"event", "delete"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newContainers()
			r.add(&container{id: "c"})
			r.created("c", 100)
			if tt.started {
				r.started("c")
			}
			var status uint32
			steps := map[string]func(){
				"delete": func() { r.deleted("c") },
				"exit":   func() { r.published("c", 100, &status, true)() },
				"event":  func() { r.published("c", 100, &status, false)() },
			}
			var waited chan struct{}
			for i, step := range tt.order {
				steps[step]()
				last := i == len(tt.order)-1
				if gone := len(r.byID) == 0; gone != last {
					t.Fatalf("after %s: record gone = %v, want %v", strings.Join(tt.order[:i+1], ", "), gone, last)
				}
				if step == "delete" {
					waited = make(chan struct{})
					go func() { r.wait(context.Background()); close(waited) }()
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
			r.published("c", 100, &status, true)()
			if len(r.byID) != 0 {
				t.Error("a late event revived a record")
			}
		})
	}

	r := newContainers()
	if r.pendingLocked() {
		t.Error("an empty registry waits for events")
	}
	r.add(&container{id: "running"}) // not deleted: nothing to wait for
	if err := r.add(&container{id: "running"}); !errdefs.IsAlreadyExists(err) {
		t.Errorf("a second record of a live id: %v", err)
	}
	r.created("running", 5)
	if r.pendingLocked() {
		t.Error("shutdown would wait for a container not deleted")
	}
	newWasm(t, r, "lost", 7)
	r.deleted("lost")
	if !r.pendingLocked() {
		t.Fatal("shutdown would not wait for a deleted container's events")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	r.wait(ctx)
	if took := time.Since(start); took < 20*time.Millisecond {
		t.Errorf("wait returned after %v, before its 20ms deadline, with events still to come", took)
	}
}

// TestContainersWaitOutlivesCancel: another shutdown callback's error
// cancels the callbacks' context; shutdown still waits for the events.
func TestContainersWaitOutlivesCancel(t *testing.T) {
	r := newContainers()
	newWasm(t, r, "c", 100)
	r.deleted("c")
	var status uint32
	r.published("c", 100, &status, false)()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	done := make(chan struct{})
	go func() { r.wait(ctx); close(done) }()
	select {
	case <-done:
		t.Fatal("wait gave up on a canceled context with an exit event still to come")
	case <-time.After(50 * time.Millisecond):
	}
	r.published("c", 100, &status, true)()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("wait did not return once the events were out")
	}
}

type recordingPublisher struct {
	topics []string
	events []events.Event
}

func (p *recordingPublisher) Publish(_ context.Context, topic string, e events.Event) error {
	p.topics = append(p.topics, topic)
	p.events = append(p.events, e)
	return nil
}

func (p *recordingPublisher) Close() error { return nil }

// TestStatusPublisher checks the exit statuses in a Wasm container's
// events, and that its record ends once it is deleted and both its init's
// exit and delete events are out, and not before; events of an older
// container of the same id find their own record.
func TestStatusPublisher(t *testing.T) {
	ctx := context.Background()
	r := newContainers()
	rec := &recordingPublisher{}
	p := &statusPublisher{Publisher: rec, containers: r}
	newWasm(t, r, "w", 100)
	if _, ok := r.killing("w", uint32(syscall.SIGTERM)); !ok {
		t.Fatal("SIGTERM to a Wasm task not mapped")
	}
	publish := func(topic string, e events.Event) {
		t.Helper()
		if err := p.Publish(ctx, topic, e); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		topic string
		e     events.Event
		want  uint32
		what  string
	}{
		{"/tasks/exit", &eventstypes.TaskExit{ContainerID: "w", ID: "w", Pid: 100, ExitStatus: 137}, 143, "init's TaskExit"},
		{"/tasks/exit", &eventstypes.TaskExit{ContainerID: "w", ID: "exec1", Pid: 101, ExitStatus: 137}, 137, "an exec's TaskExit"},
		{"/tasks/exit", &eventstypes.TaskExit{ContainerID: "native", ID: "native", ExitStatus: 137}, 137, "a native task's TaskExit"},
		{"/tasks/delete", &eventstypes.TaskDelete{ContainerID: "w", ID: "exec1", Pid: 101, ExitStatus: 137}, 137, "an exec's TaskDelete"},
	} {
		publish(tt.topic, tt.e)
		var got uint32
		switch e := tt.e.(type) {
		case *eventstypes.TaskExit:
			got = e.ExitStatus
		case *eventstypes.TaskDelete:
			got = e.ExitStatus
		}
		if got != tt.want {
			t.Errorf("%s: status %d, want %d", tt.what, got, tt.want)
		}
	}
	if got := r.status("w", 137); got != 143 {
		t.Fatalf("record ended before Delete: status %d", got)
	}
	r.deleted("w") // as Delete does
	newWasm(t, r, "w", 200)
	del := &eventstypes.TaskDelete{ContainerID: "w", Pid: 100, ExitStatus: 137}
	publish("/tasks/delete", del)
	if del.ExitStatus != 143 {
		t.Errorf("the deleted init's TaskDelete status = %d, want 143", del.ExitStatus)
	}
	if cs := r.byID["w"]; len(cs) != 1 || cs[0].pid != 200 {
		t.Errorf("after the old container's last event, records %v, want the new one's alone", cs)
	}
	if got := r.status("w", 137); got != 137 {
		t.Errorf("the new container inherited the old one's signal: status %d", got)
	}
	if len(rec.events) != 5 {
		t.Errorf("published %d events on %v, want all 5 passed on", len(rec.events), rec.topics)
	}
	start := &eventstypes.TaskStart{ContainerID: "w", Pid: 200}
	publish("/tasks/start", start)
	if rec.events[len(rec.events)-1] != events.Event(start) {
		t.Error("a TaskStart event was not passed on as it is")
	}
}

// publishingTasks is runc's task service as far as Create and Delete go:
// Delete publishes the delete event before it returns, as the forwarding
// goroutine of runc's task service may; Create fails with createErr.
type publishingTasks struct {
	taskAPI.TTRPCTaskService
	publisher *statusPublisher
	createErr error
	created   int
}

func (f *publishingTasks) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	f.created++
	if f.createErr != nil {
		return nil, f.createErr
	}
	return &taskAPI.CreateTaskResponse{Pid: 100}, nil
}

func (f *publishingTasks) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	if r.ExecID != "" {
		return &taskAPI.DeleteResponse{Pid: 101}, nil
	}
	ev := &eventstypes.TaskDelete{ContainerID: r.ID, Pid: 100, ExitStatus: 137}
	if err := f.publisher.Publish(ctx, "/tasks/delete", ev); err != nil {
		return nil, err
	}
	return &taskAPI.DeleteResponse{Pid: 100, ExitStatus: 137}, nil
}

// newTestService returns the service over publishingTasks, and what it
// publishes to.
func newTestService() (*service, *publishingTasks, *recordingPublisher) {
	r := newContainers()
	rec := &recordingPublisher{}
	pub := &statusPublisher{Publisher: rec, containers: r}
	inner := &publishingTasks{publisher: pub}
	return &service{TTRPCTaskService: inner, containers: r}, inner, rec
}

// closed tells whether the shim's copies of a runner's descriptors are
// closed.
func closed(rf *runnerFiles) bool {
	_, err := rf.config.Stat()
	return errors.Is(err, os.ErrClosed)
}

// TestDeleteRace: a SIGTERM'd Wasm task reports 143 in Delete's answer and
// in both events, whether the delete event goes out before Delete returns
// and the exit event after it (runc's task service marks the init exited
// before it queues its exit event), and the descriptors of an exec never
// started are released by Delete.
func TestDeleteRace(t *testing.T) {
	ctx := namespaces.WithNamespace(context.Background(), "default")
	s, _, rec := newTestService()
	newWasm(t, s.containers, "w", 100)
	rf, err := newRunnerFiles(&runner.Config{Module: "/m.wasm"}, log.L)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.containers.addExec("w", "never-started", rf); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.containers.killing("w", 15); !ok {
		t.Fatal("SIGTERM to a Wasm task not mapped")
	}

	resp, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "w"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.ExitStatus != 143 {
		t.Errorf("Delete answered %d, want 143", resp.ExitStatus)
	}
	if !closed(rf) {
		t.Error("the descriptors of an exec never started outlived Delete")
	}
	exit := &eventstypes.TaskExit{ContainerID: "w", ID: "w", Pid: 100, ExitStatus: 137}
	if err := s.TTRPCTaskService.(*publishingTasks).publisher.Publish(ctx, "/tasks/exit", exit); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rec.topics, []string{"/tasks/delete", "/tasks/exit"}) {
		t.Fatalf("published %v, want the delete event, then the exit event", rec.topics)
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
	if len(s.containers.byID) != 0 {
		t.Error("the container is remembered after both its events are out")
	}
}

// TestExecDescriptors: an exec's descriptors wait for `runc exec` until
// Start, or until the exec is deleted, and are then closed, once.
func TestExecDescriptors(t *testing.T) {
	ctx := context.Background()
	s, _, _ := newTestService()
	newWasm(t, s.containers, "w", 100)
	add := func(execID string) *runnerFiles {
		rf, err := newRunnerFiles(&runner.Config{Module: "/m.wasm"}, log.L)
		if err != nil {
			t.Fatal(err)
		}
		replaced, err := s.containers.addExec("w", execID, rf)
		if err != nil || replaced != nil {
			t.Fatalf("addExec %s: %v, replaced %v", execID, err, replaced)
		}
		return rf
	}
	a, b := add("a"), add("b")
	if got := s.containers.runnerFiles("/b/w", "a"); len(got) != 2 || got[0] != a.config {
		t.Fatalf("runc exec of a would get %v", got)
	}
	if got := s.containers.runnerFiles("/b/w", "c"); got != nil {
		t.Errorf("runc exec of an unknown exec would get %v", got)
	}
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "w", ExecID: "a"}); err != nil {
		t.Fatal(err)
	}
	if !closed(a) || closed(b) {
		t.Errorf("after a's Delete: a closed %v, b closed %v", closed(a), closed(b))
	}
	if got := s.containers.runnerFiles("/b/w", "a"); got != nil {
		t.Errorf("a deleted exec's descriptors are still handed out: %v", got)
	}
	if _, err := s.containers.addExec("native", "x", b); !errdefs.IsNotFound(err) {
		t.Errorf("an exec's descriptors kept for an unknown container: %v", err)
	}
}

// TestCreateFailureLeavesNoRecord: a Create that fails, before runc or in
// runc, leaves no record behind, and the id can be created again. (The
// descriptors of a Wasm container's runner are closed whether runc's
// Create fails or not: see TestDeleteRace and TestExecDescriptors for how
// the registry hands them back.)
func TestCreateFailureLeavesNoRecord(t *testing.T) {
	ctx := namespaces.WithNamespace(context.Background(), "default")
	bundle := t.TempDir()
	os.MkdirAll(filepath.Join(bundle, "rootfs"), 0o755)
	writeSpec := func(args ...string) {
		spec := `{"ociVersion":"1.2.0","process":{"args":["` + strings.Join(args, `","`) + `"],"cwd":"/"},"root":{"path":"rootfs"},` +
			`"mounts":[{"destination":"/dev","type":"tmpfs","source":"tmpfs"}]}`
		if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(spec), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(bundle, "rootfs", "notes.txt"), []byte("just text\n"), 0o755)
	os.WriteFile(filepath.Join(bundle, "rootfs", "prog"), []byte("\x7fELF\x02\x01\x01"+strings.Repeat("\x00", 57)), 0o755)

	s, inner, _ := newTestService()
	for _, tt := range []struct {
		name      string
		args      []string
		createErr error
		runc      bool // whether runc's Create is reached
	}{
		{"missing entrypoint", []string{"/missing"}, nil, false},
		{"text file as entrypoint", []string{"/notes.txt"}, nil, false},
		{"runc fails", []string{"/prog"}, errors.New("runc create failed"), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			writeSpec(tt.args...)
			inner.createErr, inner.created = tt.createErr, 0
			_, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c", Bundle: bundle})
			if err == nil {
				t.Fatal("Create succeeded")
			}
			if (inner.created == 1) != tt.runc {
				t.Errorf("runc's Create called %d times", inner.created)
			}
			if len(s.containers.byID) != 0 {
				t.Errorf("a failed Create left records: %v", s.containers.byID)
			}
		})
	}
	writeSpec("/prog")
	inner.createErr = nil
	if _, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c", Bundle: bundle}); err != nil {
		t.Fatalf("Create again after failures: %v", err)
	}
	if c, ok := s.containers.get("c"); !ok || c.phase != created || c.pid != 100 || c.wasm != nil {
		t.Errorf("record after Create: %+v, %v", c, ok)
	}
}

// TestShutdownEndsCreates: a Create under way when the shim shuts down
// (containerd gave up on it) has its context ended, and shutdown waits
// for it to return; deleting the container ends it likewise.
func TestShutdownEndsCreates(t *testing.T) {
	for _, how := range []string{"shutdown", "delete"} {
		t.Run(how, func(t *testing.T) {
			r := newContainers()
			ctx, cancel := context.WithCancel(context.Background())
			if err := r.add(&container{id: "c", cancelCreate: cancel}); err != nil {
				t.Fatal(err)
			}
			returned := make(chan struct{})
			go func() { // Create, compiling until its context ends
				<-ctx.Done()
				time.Sleep(10 * time.Millisecond)
				r.abandon("c")
				close(returned)
			}()
			if how == "delete" {
				r.cancelCreate("c")
				<-returned
				return
			}
			wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer wcancel()
			r.wait(wctx)
			select {
			case <-returned:
			default:
				t.Fatal("shutdown returned before the Create under way")
			}
		})
	}
}
