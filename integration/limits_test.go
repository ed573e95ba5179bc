package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/cgroups"
)

const mib = 1 << 20

// cgroupFile returns the contents of a file of container id's cgroup
// (looked for in every controller's directory), trimmed; "" if none.
func cgroupFile(t *testing.T, id, name string) string {
	t.Helper()
	for _, d := range cgroups.Dirs(cgroups.Root, "/default/"+id) {
		if data, err := os.ReadFile(filepath.Join(d, name)); err == nil {
			return strings.TrimSpace(string(data))
		}
	}
	return ""
}

// cgroupValue returns the number a cgroup file holds, or the value of key
// in a flat-keyed one (memory.stat, cpu.stat, memory.oom_control).
func cgroupValue(t *testing.T, id, name, key string) int64 {
	t.Helper()
	data := cgroupFile(t, id, name)
	if key == "" {
		n, err := strconv.ParseInt(data, 10, 64)
		if err != nil {
			t.Fatalf("%s of %s: %q", name, id, data)
		}
		return n
	}
	for _, l := range strings.Split(data, "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == key {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	t.Fatalf("%s of %s has no %s: %q", name, id, key, data)
	return 0
}

// loadTask returns task id through containerd's client (for what ctr
// 2.x has no command for), and a context for calls on it.
func loadTask(t *testing.T, id string) (context.Context, containerd.Task) {
	t.Helper()
	ctx, task, err := taskOf(t, id)
	if err != nil {
		t.Fatal(err)
	}
	return ctx, task
}

// taskOf is loadTask returning its error.
func taskOf(t *testing.T, id string) (context.Context, containerd.Task, error) {
	t.Helper()
	client, err := containerd.New(e.address)
	if err != nil {
		return nil, nil, err
	}
	t.Cleanup(func() { client.Close() })
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), "default"), 30*time.Second)
	t.Cleanup(cancel)
	c, err := client.LoadContainer(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	task, err := c.Task(ctx, nil)
	return ctx, task, err
}

// updateTask changes the resources of running task id (ctr 2.x has no
// `task update`).
func updateTask(t *testing.T, id string, res *specs.LinuxResources) {
	t.Helper()
	ctx, task := loadTask(t, id)
	if err := task.Update(ctx, containerd.WithResources(res)); err != nil {
		t.Fatalf("update %s: %v", id, err)
	}
}

// watchEvents runs `ctr events` for the rest of the test.
func watchEvents(t *testing.T) *lockedBuffer {
	t.Helper()
	cmd := exec.Command(e.ctrBin, "--address", e.address, "events")
	evs := &lockedBuffer{}
	cmd.Stdout = evs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	time.Sleep(200 * time.Millisecond)
	return evs
}

// waitEvent waits for an event on topic for container id.
func waitEvent(t *testing.T, evs *lockedBuffer, topic, id string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !hasEvent(evs, topic, id) {
		if time.Now().After(deadline) {
			t.Errorf("no %s event for %s in %q", topic, id, evs.String())
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func hasEvent(evs *lockedBuffer, topic, id string) bool {
	for _, l := range strings.Split(evs.String(), "\n") {
		if strings.Contains(l, " "+topic+" ") && strings.Contains(l, `"`+id+`"`) {
			return true
		}
	}
	return false
}

var memoryLine = regexp.MustCompile(`memory (\d+) MiB\n`)

// grownTo returns the grow guest's memory, in MiB, after it grew as far
// as it could for the round-th time (it grows once at start, then once per
// line of input: the rounds after the first are asked for).
func grownTo(t *testing.T, b *bg, round int) int {
	t.Helper()
	if round > 1 {
		if _, err := b.stdin.Write([]byte("grow\n")); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := memoryLine.FindAllStringSubmatch(b.stdout.String(), -1); len(m) >= round {
			n, _ := strconv.Atoi(m[round-1][1])
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("grow guest did not report round %d: stdout %q stderr %q", round, b.stdout.String(), b.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMemoryLimit: a guest that grows its memory sees memory.grow fail
// below the container's limit (and goes on running, not OOM-killed); a
// raised limit lets it grow further.
func TestMemoryLimit(t *testing.T) {
	evs := watchEvents(t)
	b := startBackgroundIn(t, true, []string{"--memory-limit", strconv.Itoa(64 * mib)}, "/grow.wasm")
	first := grownTo(t, b, 1)
	// The runner itself (Go, wazero, the compiled code) takes a few MiB,
	// and the margin 8 more: the guest gets most of the rest.
	if first < 24 || first > 64-8 {
		t.Errorf("grew to %d MiB under a 64 MiB limit", first)
	}
	if n := cgroupValue(t, b.id, "memory.limit_in_bytes", ""); n != 64*mib {
		t.Errorf("memory.limit_in_bytes %d", n)
	}
	if st := taskStatus(t, b.id); st != "RUNNING" {
		t.Errorf("status after the refused grow: %q", st)
	}

	limit := int64(128 * mib)
	updateTask(t, b.id, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}})
	if n := cgroupValue(t, b.id, "memory.limit_in_bytes", ""); n != limit {
		t.Errorf("memory.limit_in_bytes after update: %d", n)
	}
	second := grownTo(t, b, 2)
	t.Logf("grew to %d MiB under 64 MiB, to %d MiB under 128 MiB", first, second)
	if second < first+56 || second > 128-8 {
		t.Errorf("grew to %d MiB under a 128 MiB limit, after %d MiB under 64", second, first)
	}
	if oom := cgroupValue(t, b.id, "memory.oom_control", "oom_kill"); oom != 0 {
		t.Errorf("oom_kill %d", oom)
	}
	b.stdin.Close()
	if r := b.wait(t, 10*time.Second); r.code != 0 {
		t.Errorf("exit status %d, stderr %q", r.code, r.stderr)
	}
	assertClean(t, b.id)
	if hasEvent(evs, "/tasks/oom", b.id) {
		t.Error("an OOM event for a guest kept within its limit")
	}
}

// TestMemoryLimitGo: a Go guest that allocates without end is refused
// memory below the limit: Go's runtime ends it ("out of memory", status 2),
// not the kernel's OOM killer.
func TestMemoryLimitGo(t *testing.T) {
	evs := watchEvents(t)
	id, r := runNamed(t, nil, []string{"--memory-limit", strconv.Itoa(64 * mib)}, "/probe.wasm", "alloc")
	if r.code != 2 || !strings.Contains(r.stderr, "fatal error: out of memory") || !strings.Contains(r.stdout, "allocated 16 MiB") {
		t.Errorf("exit %d, stdout %q, stderr %.200q", r.code, r.stdout, r.stderr)
	}
	time.Sleep(200 * time.Millisecond)
	if hasEvent(evs, "/tasks/oom", id) {
		t.Error("an OOM event for a guest kept within its limit")
	}
}

// TestMemoryInitialOverLimit: a module whose declared initial memory does
// not fit under the limit fails with a clear error, not an OOM kill.
func TestMemoryInitialOverLimit(t *testing.T) {
	id, r := runNamed(t, nil, []string{"--memory-limit", strconv.Itoa(48 * mib)}, "/bigmem.wasm")
	const want = "initial memory (64 MiB) does not fit in the container's memory limit (48 MiB)"
	if r.code != 126 || !strings.Contains(r.stderr, want) {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
	if l := shimLog(t, id, `"wasm guest failed"`); !strings.Contains(l, want) {
		t.Errorf("shim log: %s", l)
	}
}

// TestOOM: when the runner's own needs pass what the guest left, the
// kernel kills the container: 137 and a /tasks/oom event.
func TestOOM(t *testing.T) {
	evs := watchEvents(t)
	// The guest holds a 16 MiB path (within its cap); the runner copies it
	// several times to look it up, past the limit.
	id, r := runNamed(t, nil, []string{"--memory-limit", strconv.Itoa(64 * mib)}, "/probe.wasm", "bigpath", "16")
	if r.code != 137 {
		t.Errorf("exit status %d, want 137 (stdout %q, stderr %q)", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, "statting") {
		t.Errorf("the guest did not get as far as the stat: %q %q", r.stdout, r.stderr)
	}
	waitEvent(t, evs, "/tasks/oom", id)
}

// cpuUsage returns the container's CPU time, in seconds, used over d.
func cpuUsage(t *testing.T, id string, d time.Duration) float64 {
	t.Helper()
	before := cgroupValue(t, id, "cpuacct.usage", "")
	start := time.Now()
	time.Sleep(d)
	after := cgroupValue(t, id, "cpuacct.usage", "")
	return float64(after-before) / 1e9 / time.Since(start).Seconds()
}

// TestCPULimit: a spinning guest is held to its CFS quota, and an update
// of the quota takes effect while it runs.
func TestCPULimit(t *testing.T) {
	b := startBackground(t, []string{"--cpus", "0.2"}, "/probe.wasm", "spin")
	b.waitOutput(t, "spinning")
	if q, p := cgroupValue(t, b.id, "cpu.cfs_quota_us", ""), cgroupValue(t, b.id, "cpu.cfs_period_us", ""); q != 20000 || p != 100000 {
		t.Errorf("cfs quota %d period %d, want 20000/100000", q, p)
	}
	throttled := cgroupValue(t, b.id, "cpu.stat", "nr_throttled")
	slow := cpuUsage(t, b.id, 1500*time.Millisecond)
	if slow > 0.3 {
		t.Errorf("a guest limited to 0.2 CPUs used %.2f", slow)
	}
	if now := cgroupValue(t, b.id, "cpu.stat", "nr_throttled"); now <= throttled {
		t.Errorf("not throttled: nr_throttled %d, then %d", throttled, now)
	}
	quota, period := int64(60000), uint64(100000)
	updateTask(t, b.id, &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: &quota, Period: &period}})
	if q := cgroupValue(t, b.id, "cpu.cfs_quota_us", ""); q != quota {
		t.Errorf("cfs quota after update: %d", q)
	}
	fast := cpuUsage(t, b.id, 1500*time.Millisecond)
	t.Logf("CPU used: %.2f under 0.2 CPUs, %.2f under 0.6", slow, fast)
	if fast < 1.5*slow {
		t.Errorf("the raised quota did not let the guest run faster: %.2f, then %.2f", slow, fast)
	}
	b.terminate(t)
}

// TestPidsLimit: the pids limit holds for the container's processes: once
// it is reached, nothing more starts in the container, and the guest
// runs on.
func TestPidsLimit(t *testing.T) {
	b := startBackground(t, nil, "/probe.wasm", "tick")
	b.waitOutput(t, "tick 1")
	current := cgroupValue(t, b.id, "pids.current", "")
	t.Logf("a Wasm container's pids.current: %d", current)
	updateTask(t, b.id, &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: &current}})
	if max := cgroupFile(t, b.id, "pids.max"); max != strconv.FormatInt(current, 10) {
		t.Errorf("pids.max %q, want %d", max, current)
	}
	refused := cgroupValue(t, b.id, "pids.events", "max")
	// runc reports the refused fork in more than one way ("errno=11", or
	// "read init-p: connection reset by peer"): the cgroup's count of
	// refused forks tells what happened.
	stdout, stderr, err := e.ctr("task", "exec", "--exec-id", "over", b.id, "/bin/native")
	if err == nil {
		t.Errorf("an exec past the pids limit ran: %q", stdout)
	}
	if n := cgroupValue(t, b.id, "pids.events", "max"); n <= refused {
		t.Errorf("pids.events counts no refused fork (%d before the exec, %d after; the exec: %v: %s)", refused, n, err, stderr)
	}
	ticks := strings.Count(b.stdout.String(), "tick")
	b.waitOutput(t, "tick "+strconv.Itoa(ticks+1))
	b.terminate(t)
}
