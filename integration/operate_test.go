package integration

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/cgroups"
)

// TestPauseResume freezes a ticking Wasm guest and thaws it: no output
// while paused, PAUSED state, a frozen cgroup, and the events.
func TestPauseResume(t *testing.T) {
	evs := watchEvents(t)
	b := startBackground(t, nil, "/probe.wasm", "tick")
	b.waitOutput(t, "tick 3")
	if _, stderr, err := e.ctr("task", "pause", b.id); err != nil {
		t.Fatalf("pause: %v: %s", err, stderr)
	}
	if st := taskStatus(t, b.id); st != "PAUSED" {
		t.Errorf("status after pause: %q", st)
	}
	// The v1 freezer, or on a unified host cgroup.freeze. (Here the v2
	// mount holds no controllers: its cgroup.freeze stays 0.)
	frozen := false
	for _, d := range cgroups.Dirs(cgroups.Root, "/default/"+b.id) {
		if state, err := os.ReadFile(filepath.Join(d, "freezer.state")); err == nil && strings.TrimSpace(string(state)) == "FROZEN" {
			frozen = true
		} else if state, err := os.ReadFile(filepath.Join(d, "cgroup.freeze")); err == nil && strings.TrimSpace(string(state)) == "1" {
			frozen = true
		}
	}
	if !frozen {
		t.Error("the container's cgroup is not frozen")
	}
	// Frozen, the guest uses no CPU at all.
	before := cgroupValue(t, b.id, "cpuacct.usage", "")
	time.Sleep(time.Second)
	if after := cgroupValue(t, b.id, "cpuacct.usage", ""); after != before {
		t.Errorf("the paused guest went on: cpuacct.usage %d, then %d", before, after)
	}
	if _, stderr, err := e.ctr("task", "resume", b.id); err != nil {
		t.Fatalf("resume: %v: %s", err, stderr)
	}
	if st := taskStatus(t, b.id); st != "RUNNING" {
		t.Errorf("status after resume: %q", st)
	}
	n := strings.Count(b.stdout.String(), "tick")
	b.waitOutput(t, "tick "+strconv.Itoa(n+2))
	b.terminate(t)
	for _, topic := range []string{"/tasks/paused", "/tasks/resumed"} {
		waitEvent(t, evs, topic, b.id)
	}
}

// TestPidsAndMetrics: `ctr task ps` lists the runner, and `ctr task
// metrics` reports the container's cgroup as the cgroup files do.
func TestPidsAndMetrics(t *testing.T) {
	b := startBackground(t, nil, "/probe.wasm", "sleep")
	b.waitOutput(t, "sleeping")
	pid := waitRunning(t, b.id)
	ps, stderr, err := e.ctr("task", "ps", b.id)
	if err != nil || !strings.Contains(ps, strconv.Itoa(pid)) {
		t.Errorf("task ps: %v %s: %q, want pid %d", err, stderr, ps, pid)
	}
	metrics, stderr, err := e.ctr("task", "metrics", b.id)
	if err != nil {
		t.Fatalf("task metrics: %v: %s", err, stderr)
	}
	values := map[string]int64{}
	for _, l := range strings.Split(metrics, "\n") {
		if f := strings.Fields(l); len(f) == 2 {
			if v, err := strconv.ParseInt(f[1], 10, 64); err == nil {
				values[f[0]] = v
			}
		}
	}
	if values["pids.current"] < 1 {
		t.Errorf("pids.current %d in %q", values["pids.current"], metrics)
	}
	usage := values["memory.usage_in_bytes"]
	var file int64
	for _, d := range cgroups.Dirs(cgroups.Root, "/default/"+b.id) {
		if data, err := os.ReadFile(filepath.Join(d, "memory.usage_in_bytes")); err == nil {
			file, _ = strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
		}
	}
	// The guest sleeps: its usage holds still between the two reads.
	if usage < 1<<20 || file == 0 || usage > 2*file || file > 2*usage {
		t.Errorf("memory usage: metrics %d, cgroup file %d", usage, file)
	}
	b.terminate(t)
}
