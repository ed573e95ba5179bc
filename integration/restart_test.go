package integration

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
)

// TestContainerdRestart: containerd stopped (SIGTERM, as its service
// manager stops it) while Wasm containers run, and started again, finds
// them running with the same processes and reports their exits; one that
// ended while it was down is cleaned up.
func TestContainerdRestart(t *testing.T) {
	ticker, tickLog := startDetached(t, "/probe.wasm", "tick")
	sleeper, _ := startDetached(t, "/probe.wasm", "sleep")
	ended, _ := startDetached(t, "/probe.wasm", "sleep")
	pids := map[string]int{}
	for _, id := range []string{ticker, sleeper, ended} {
		pids[id] = waitRunning(t, id)
	}
	waitLog(t, tickLog, "tick 2")

	e.stopContainerd()
	for id, pid := range pids {
		if err := syscall.Kill(pid, 0); err != nil {
			t.Fatalf("%s's process %d did not outlive containerd: %v", id, pid, err)
		}
	}
	// One guest ends while containerd is down.
	if err := syscall.Kill(pids[ended], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := e.startContainerd(); err != nil {
		t.Fatal(err)
	}

	for _, id := range []string{ticker, sleeper} {
		if pid := waitRunning(t, id); pid != pids[id] {
			t.Errorf("%s runs as pid %d after the restart, was %d", id, pid, pids[id])
		}
	}
	b, _ := os.ReadFile(tickLog)
	ticks := strings.Count(string(b), "tick")
	waitLog(t, tickLog, "tick "+strconv.Itoa(ticks+2))

	// containerd reaps, as it starts, a shim whose tasks all ended (its
	// exit events go out before any client can subscribe): the task is
	// gone, and nothing of it is left.
	if _, _, err := taskOf(t, ended); !errdefs.IsNotFound(err) {
		t.Errorf("the task that ended while containerd was down: %v, want NotFound", err)
	}
	if _, stderr, err := e.ctr("container", "rm", ended); err != nil {
		t.Errorf("container rm %s: %v: %s", ended, err, stderr)
	}

	// A SIGTERM after the restart: 143 from Wait, in the exit event and
	// from Delete.
	evs := watchEvents(t)
	ctx, task := loadTask(t, sleeper)
	exited, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Kill(ctx, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case st := <-exited:
		if st.ExitCode() != 143 {
			t.Errorf("the task killed after the restart: status %d, want 143", st.ExitCode())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the task killed after the restart did not exit")
	}
	waitEvent(t, evs, "/tasks/exit", sleeper)
	for _, l := range strings.Split(evs.String(), "\n") {
		if strings.Contains(l, " /tasks/exit ") && strings.Contains(l, `"`+sleeper+`"`) && !strings.Contains(l, `"exit_status":143`) {
			t.Errorf("the exit event of the task killed after the restart: %q, want status 143", l)
		}
	}
	if st, err := task.Delete(ctx); err != nil || st.ExitCode() != 143 {
		t.Errorf("delete of the task killed after the restart: %v, %v", st, err)
	}

	ctx, task = loadTask(t, ticker)
	if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if st, err := task.Delete(ctx, containerd.WithProcessKill); err != nil || st.ExitCode() != 137 {
		t.Errorf("delete of the ticker: %v, %v", st, err)
	}
	for _, id := range []string{ticker, sleeper} {
		if _, stderr, err := e.ctr("container", "rm", id); err != nil {
			t.Errorf("container rm %s: %v: %s", id, err, stderr)
		}
	}
	for _, id := range []string{ticker, sleeper, ended} {
		assertClean(t, id)
	}
}
