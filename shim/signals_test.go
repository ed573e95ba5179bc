package shim

import (
	"context"
	"syscall"
	"testing"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/core/events"
)

func TestTerminatingSignals(t *testing.T) {
	tests := []struct {
		sig  syscall.Signal
		want bool
	}{
		{syscall.SIGTERM, true},
		{syscall.SIGINT, true},
		{syscall.SIGKILL, true},
		{syscall.SIGHUP, true},
		{syscall.SIGUSR1, true},
		{syscall.SIGUSR2, true},
		{syscall.SIGQUIT, true},
		{syscall.SIGABRT, true},
		{syscall.SIGPIPE, true},
		{syscall.SIGALRM, true},
		{syscall.Signal(34), true}, // SIGRTMIN
		{syscall.Signal(64), true}, // SIGRTMAX
		{syscall.SIGSTOP, false},
		{syscall.SIGTSTP, false},
		{syscall.SIGTTIN, false},
		{syscall.SIGTTOU, false},
		{syscall.SIGCONT, false},
		{syscall.SIGWINCH, false},
		{syscall.SIGCHLD, false},
		{syscall.SIGURG, false},
		{0, false},
		{65, false},
		{1000, false},
	}
	for _, tt := range tests {
		if got := Terminating(uint32(tt.sig)); got != tt.want {
			t.Errorf("Terminating(%d %v) = %v, want %v", int(tt.sig), tt.sig, got, tt.want)
		}
	}
}

func TestMapExitStatusTable(t *testing.T) {
	const (
		term = uint32(syscall.SIGTERM)
		intr = uint32(syscall.SIGINT)
		kill = uint32(syscall.SIGKILL)
		hup  = uint32(syscall.SIGHUP)
	)
	tests := []struct {
		status, requested, want uint32
	}{
		{137, term, 143},
		{137, intr, 130},
		{137, hup, 129},
		{137, kill, 137},
		{137, 0, 137},
		{0, term, 0},
		{42, term, 42},
		{143, term, 143},
		{134, term, 134}, // a trap is not a kill
		{136, term, 136},
		{138, term, 138},
	}
	for _, tt := range tests {
		if got := MapExitStatus(tt.status, tt.requested); got != tt.want {
			t.Errorf("MapExitStatus(%d, %d) = %d, want %d", tt.status, tt.requested, got, tt.want)
		}
	}
}

func TestExitMapperSequence(t *testing.T) {
	type step struct {
		op     string // add, setPid, kill, status, remove
		id     string
		arg    uint32 // signal, status, or pid
		want   uint32 // signal to send, or status
		wantOK bool   // for kill
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"unknown task", []step{
			{op: "kill", id: "x", arg: 15, want: 0, wantOK: false},
			{op: "status", id: "x", arg: 137, want: 137},
		}},
		{"SIGTERM reported as 143", []step{
			{op: "add", id: "w"},
			{op: "setPid", id: "w", arg: 100},
			{op: "status", id: "w", arg: 137, want: 137}, // no signal yet: a real SIGKILL
			{op: "kill", id: "w", arg: 15, want: 9, wantOK: true},
			{op: "status", id: "w", arg: 137, want: 143},
			{op: "status", id: "w", arg: 3, want: 3},
			{op: "remove", id: "w", arg: 100},
			{op: "status", id: "w", arg: 137, want: 137},
			{op: "kill", id: "w", arg: 15, want: 0, wantOK: false},
		}},
		{"first signal kept", []step{
			{op: "add", id: "w"},
			{op: "kill", id: "w", arg: 2, want: 9, wantOK: true},
			{op: "kill", id: "w", arg: 15, want: 9, wantOK: true},
			{op: "kill", id: "w", arg: 9, want: 9, wantOK: true},
			{op: "status", id: "w", arg: 137, want: 130},
		}},
		{"non-terminating signals pass", []step{
			{op: "add", id: "w"},
			{op: "kill", id: "w", arg: 19, want: 0, wantOK: false}, // SIGSTOP
			{op: "kill", id: "w", arg: 18, want: 0, wantOK: false}, // SIGCONT
			{op: "kill", id: "w", arg: 28, want: 0, wantOK: false}, // SIGWINCH
			{op: "status", id: "w", arg: 137, want: 137},
			{op: "kill", id: "w", arg: 1, want: 9, wantOK: true},
			{op: "status", id: "w", arg: 137, want: 129},
		}},
		{"SIGKILL asked for", []step{
			{op: "add", id: "w"},
			{op: "kill", id: "w", arg: 9, want: 9, wantOK: true},
			{op: "status", id: "w", arg: 137, want: 137},
		}},
		{"tasks are separate", []step{
			{op: "add", id: "a"},
			{op: "add", id: "b"},
			{op: "kill", id: "a", arg: 15, want: 9, wantOK: true},
			{op: "status", id: "b", arg: 137, want: 137},
			{op: "status", id: "a", arg: 137, want: 143},
		}},
		{"late remove of an older task", []step{
			{op: "add", id: "w"},
			{op: "setPid", id: "w", arg: 100},
			{op: "kill", id: "w", arg: 15, want: 9, wantOK: true},
			{op: "remove", id: "w", arg: 100},
			{op: "add", id: "w"}, // created again under the same id
			{op: "setPid", id: "w", arg: 200},
			{op: "remove", id: "w", arg: 100}, // the old task's late event
			{op: "kill", id: "w", arg: 2, want: 9, wantOK: true},
			{op: "status", id: "w", arg: 137, want: 130},
			{op: "remove", id: "w", arg: 0}, // 0 forgets whatever pid
			{op: "status", id: "w", arg: 137, want: 137},
		}},
		{"add again resets the signal", []step{
			{op: "add", id: "w"},
			{op: "kill", id: "w", arg: 15, want: 9, wantOK: true},
			{op: "add", id: "w"},
			{op: "status", id: "w", arg: 137, want: 137},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &exitMapper{wasm: map[string]*wasmTask{}}
			for i, s := range tt.steps {
				switch s.op {
				case "add":
					m.add(s.id, &wasmTask{})
				case "setPid":
					m.setPid(s.id, s.arg)
				case "remove":
					m.remove(s.id, s.arg)
				case "kill":
					sig, ok := m.killing(s.id, s.arg)
					if sig != s.want || ok != s.wantOK {
						t.Errorf("step %d: killing(%q, %d) = %d, %v; want %d, %v", i, s.id, s.arg, sig, ok, s.want, s.wantOK)
					}
				case "status":
					if got := m.status(s.id, s.arg); got != s.want {
						t.Errorf("step %d: status(%q, %d) = %d, want %d", i, s.id, s.arg, got, s.want)
					}
				default:
					t.Fatalf("bad step %q", s.op)
				}
			}
		})
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

// TestMappingPublisher checks the exit statuses in a Wasm task's events, and
// that the task is forgotten once it is deleted and both its init's exit
// and delete events are out, and not before.
func TestMappingPublisher(t *testing.T) {
	ctx := context.Background()
	exits := &exitMapper{wasm: map[string]*wasmTask{}}
	rec := &recordingPublisher{}
	evs := newTaskEvents()
	p := &mappingPublisher{Publisher: rec, exits: exits, events: evs}
	exits.add("w", &wasmTask{})
	exits.setPid("w", 100)
	evs.created("w")
	evs.started("w")
	if _, ok := exits.killing("w", uint32(syscall.SIGTERM)); !ok {
		t.Fatal("SIGTERM to a Wasm task not mapped")
	}

	publish := func(topic string, e events.Event) {
		t.Helper()
		if err := p.Publish(ctx, topic, e); err != nil {
			t.Fatal(err)
		}
	}
	exit := &eventstypes.TaskExit{ContainerID: "w", ID: "w", Pid: 100, ExitStatus: 137}
	publish("/tasks/exit", exit)
	if exit.ExitStatus != 143 {
		t.Errorf("init's TaskExit status = %d, want 143", exit.ExitStatus)
	}
	execExit := &eventstypes.TaskExit{ContainerID: "w", ID: "exec1", Pid: 101, ExitStatus: 137}
	publish("/tasks/exit", execExit)
	if execExit.ExitStatus != 137 {
		t.Errorf("an exec's TaskExit status = %d, want 137 unchanged", execExit.ExitStatus)
	}
	other := &eventstypes.TaskExit{ContainerID: "native", ID: "native", ExitStatus: 137}
	publish("/tasks/exit", other)
	if other.ExitStatus != 137 {
		t.Errorf("a native task's TaskExit status = %d, want 137", other.ExitStatus)
	}
	execDelete := &eventstypes.TaskDelete{ContainerID: "w", ID: "exec1", Pid: 101, ExitStatus: 137}
	publish("/tasks/delete", execDelete)
	if execDelete.ExitStatus != 137 {
		t.Errorf("an exec's TaskDelete status = %d, want 137", execDelete.ExitStatus)
	}
	if got := exits.status("w", 137); got != 143 {
		t.Fatalf("task forgotten after an exec's delete event: status %d", got)
	}
	evs.deleted("w") // as Delete does
	del := &eventstypes.TaskDelete{ContainerID: "w", Pid: 100, ExitStatus: 137}
	publish("/tasks/delete", del)
	if del.ExitStatus != 143 {
		t.Errorf("init's TaskDelete status = %d, want 143", del.ExitStatus)
	}
	if got := exits.status("w", 137); got != 137 {
		t.Errorf("task not forgotten after its delete event: status %d", got)
	}
	if len(rec.events) != 5 || rec.topics[0] != "/tasks/exit" || rec.topics[4] != "/tasks/delete" {
		t.Errorf("published %d events on %v, want all 5 passed on", len(rec.events), rec.topics)
	}
	// Other events pass unchanged.
	start := &eventstypes.TaskStart{ContainerID: "w", Pid: 100}
	publish("/tasks/start", start)
	if rec.events[len(rec.events)-1] != events.Event(start) {
		t.Error("a TaskStart event was not passed on as it is")
	}
}
