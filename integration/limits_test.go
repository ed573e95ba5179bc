package integration

import (
	"encoding/binary"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/runner"
)

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
// not the kernel's OOM killer. Its exit is reported as an OOM, as a native
// program's OOM kill is: a /tasks/oom event before its /tasks/exit, which
// CRI turns into the reason OOMKilled; the status stays the guest's own.
func TestMemoryLimitGo(t *testing.T) {
	evs := watchEvents(t)
	id, r := runNamed(t, nil, []string{"--memory-limit", strconv.Itoa(64 * mib)}, "/probe.wasm", "alloc")
	if r.code != 2 || !strings.Contains(r.stderr, "fatal error: out of memory") || !strings.Contains(r.stdout, "allocated 16 MiB") {
		t.Errorf("exit %d, stdout %q, stderr %.200q", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, runner.OutOfMemory+"the guest failed after") || !strings.Contains(r.stderr, "refused at the container's memory limit (64 MiB)") {
		t.Errorf("stderr does not say the guest failed out of memory: %q", lastLines(r.stderr, 3))
	}
	waitEvent(t, evs, "/tasks/exit", id)
	oom, exit := eventIndex(evs, "/tasks/oom", id), eventIndex(evs, "/tasks/exit", id)
	if oom < 0 || oom > exit {
		t.Errorf("/tasks/oom at %d, /tasks/exit at %d; want the OOM first:\n%s", oom, exit, evs.String())
	}
}

// hiddenBehindLargeSection is hiddenmem.wat behind a type section of 1.2
// MB (400,000 function types), more than wasmmod decodes before a compile
// (MaxSectionRead).
func hiddenBehindLargeSection() []byte {
	uleb := func(n int) []byte { return binary.AppendUvarint(nil, uint64(n)) }
	section := func(id byte, b []byte) []byte {
		return append(append([]byte{id}, uleb(len(b))...), b...)
	}
	const types = 400000
	ts := uleb(types)
	for range types {
		ts = append(ts, 0x60, 0, 0)
	}
	var m []byte
	m = append(m, "\x00asm\x01\x00\x00\x00"...)
	m = append(m, section(1, ts)...)
	m = append(m, section(3, []byte{1, 0})...)
	m = append(m, section(5, append([]byte{1, 0}, uleb(65536)...))...) // 4 GiB, not exported
	m = append(m, section(7, append([]byte{1, 6}, append([]byte("_start"), 0, 0)...))...)
	m = append(m, section(10, []byte{1, 2, 0, 0x0b})...)
	return m
}

// TestMemoryInitialOverLimit: a module whose declared initial memory does
// not fit under the limit fails with a clear error, not an OOM kill,
// whether it exports its memory or not.
func TestMemoryInitialOverLimit(t *testing.T) {
	for _, tt := range []struct {
		module string
		limit  int
		want   string
	}{
		{"/bigmem.wasm", 48 * mib, "initial memory (64 MiB) does not fit in the container's memory limit (48 MiB)"},
		{"/hiddenmem.wasm", 256 * mib, "initial memory (4096 MiB) does not fit in the container's memory limit (256 MiB)"},
		// Its memory comes after more than the runner reads before
		// loading: checked at its first allocation.
		{"/hiddenbig.wasm", 256 * mib, "initial memory (4096 MiB) does not fit in the container's memory limit (256 MiB)"},
	} {
		t.Run(tt.module, func(t *testing.T) {
			id, r := runNamed(t, nil, []string{"--memory-limit", strconv.Itoa(tt.limit)}, tt.module)
			if r.code != 126 || !strings.Contains(r.stderr, tt.want) {
				t.Errorf("exit %d, stderr %q", r.code, r.stderr)
			}
			if l := shimLog(t, id, `"wasm guest failed"`); !strings.Contains(l, tt.want) {
				t.Errorf("shim log: %s", l)
			}
		})
	}
}

// TestMemoryDeclaredUntouched: without a limit, memory a module declares
// and never touches costs the node nothing: a guest declaring 1 GiB runs
// with the runner's RSS far below it.
func TestMemoryDeclaredUntouched(t *testing.T) {
	b := startBackground(t, nil, "/hugeidle.wasm")
	pid := waitRunning(t, b.id)
	// Instantiated (the guest spins from then on) once the runner's
	// address space holds the 1 GiB reservation.
	deadline := time.Now().Add(30 * time.Second)
	for procStatus(pid, "VmSize") < 1<<30 {
		if time.Now().After(deadline) {
			t.Fatalf("the runner never reserved the guest's 1 GiB (VmSize %d MiB)", procStatus(pid, "VmSize")/mib)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if rss := procStatus(pid, "VmRSS"); rss == 0 || rss > 200*mib {
		t.Errorf("the runner of a guest declaring 1 GiB it never touches holds %d MiB", rss/mib)
	}
	b.terminate(t)
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
	// The old quota held it to 0.2; using clearly more proves the new one
	// took (how much more depends on the machine's load, not on the shim).
	if fast < 0.25 {
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
