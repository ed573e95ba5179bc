package integration

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
)

// TestTaskAPIErrors talks to the shim's task service directly, as
// containerd does, and checks the error codes it answers with.
func TestTaskAPIErrors(t *testing.T) {
	b := startBackground(t, nil, "/probe.wasm", "sleep")
	b.waitOutput(t, "sleeping")
	client := dialShim(t, b.id)
	defer client.Close()
	tasks := taskAPI.NewTTRPCTaskClient(client)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	check := func(name string, err error, is func(error) bool, want string) {
		t.Helper()
		if err = errgrpc.ToNative(err); err == nil || !is(err) {
			t.Errorf("%s: error %v, want %s", name, err, want)
		}
	}
	_, err := tasks.State(ctx, &taskAPI.StateRequest{ID: "no-such-task"})
	check("State of an unknown id", err, errdefs.IsNotFound, "NotFound")
	_, err = tasks.Kill(ctx, &taskAPI.KillRequest{ID: "no-such-task", Signal: 15})
	check("Kill of an unknown id", err, errdefs.IsNotFound, "NotFound")
	_, err = tasks.Delete(ctx, &taskAPI.DeleteRequest{ID: b.id})
	check("Delete of a running task", err, errdefs.IsFailedPrecondition, "FailedPrecondition")
	_, err = tasks.Create(ctx, &taskAPI.CreateTaskRequest{ID: "bad", Bundle: filepath.Join(e.dir, "no-such-bundle")})
	if err == nil || errdefs.IsNotImplemented(errgrpc.ToNative(err)) {
		t.Errorf("Create of a missing bundle: %v; want an error other than NotImplemented", err)
	}

	st, err := tasks.State(ctx, &taskAPI.StateRequest{ID: b.id})
	if err != nil {
		t.Fatal(err)
	}
	pids, err := tasks.Pids(ctx, &taskAPI.PidsRequest{ID: b.id})
	if err != nil {
		t.Fatal(err)
	}
	if len(pids.Processes) != 1 || pids.Processes[0].Pid != st.Pid {
		t.Errorf("Pids = %v, want the runner alone (pid %d)", pids.Processes, st.Pid)
	}
	if _, err := tasks.Connect(ctx, &taskAPI.ConnectRequest{ID: b.id}); err != nil {
		t.Errorf("Connect: %v", err)
	}
	b.terminate(t)
}
