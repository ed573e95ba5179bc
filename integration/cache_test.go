package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/cgroups"
	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/runner"
)

// TestCache: the first container compiles the module, later ones load it;
// the entry is root-only on the host and nothing is left pinned.
func TestCache(t *testing.T) {
	flags, dir := ownCache(t, "")
	if code := runProbeEcho(t, flags, "first"); code != runner.CodeMiss {
		t.Errorf("first run of the module: code %q, want compiled at Create", code)
	}
	for i := 0; i < 2; i++ {
		if code := runProbeEcho(t, flags, "again"); code != runner.CodeHit {
			t.Errorf("later run of the module: code %q, want a cache hit", code)
		}
	}
	if n := dirLen(t, filepath.Join(dir, "entries")); n != 1 {
		t.Errorf("%d cache entries for one module", n)
	}
	if n := dirLen(t, filepath.Join(dir, "pins")); n != 0 {
		t.Errorf("%d pins left after the containers", n)
	}
	// A module that cannot run is refused before it is compiled: it is
	// never cached.
	for i := 0; i < 2; i++ {
		if r := run(t, flags, "/nostart.wasm"); r.code == 0 || !strings.Contains(r.stderr, "no exported function") {
			t.Errorf("module without _start: %+v", r)
		}
	}
	if cachedIn(t, dir, filepath.Join(e.fixtures, "nostart.wasm")) || !cachedIn(t, dir, filepath.Join(e.fixtures, "probe.wasm")) {
		t.Error("a module without _start was compiled and cached, or the probe was not")
	}
}

// TestChecksBeforeCompile: a container that cannot run for a reason found
// in its spec or in the module's export section fails Create without its
// module being compiled: nothing reaches the cache.
func TestChecksBeforeCompile(t *testing.T) {
	flags, dir := ownCache(t, "")
	for _, tt := range []struct {
		name  string
		flags []string
		args  []string
		want  string
	}{
		{"no _start", nil, []string{"/nostart.wasm"}, `no exported function "_start"`},
		{"entry with parameters", nil, []string{"/funcs.wasm#withparam"}, `"withparam" has type (i32) -> ()`},
		{"bad WASM_LISTEN", []string{"--env", "WASM_LISTEN=nope"}, []string{"/probe.wasm", "echo"}, "WASM_LISTEN"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, append(slices.Clip(flags), tt.flags...), tt.args...)
			if r.code == 0 || !strings.Contains(r.stderr, tt.want) {
				t.Errorf("%+v, want a failure saying %q", r, tt.want)
			}
		})
	}
	if records, _ := filepath.Glob(filepath.Join(dir, "index", "*")); len(records) != 0 {
		t.Errorf("modules compiled for containers that could not run: %v", records)
	}
	if entries, _ := filepath.Glob(filepath.Join(dir, "entries", "*")); len(entries) != 0 {
		t.Errorf("compiled code left for containers that could not run: %v", entries)
	}
	// The same cache does fill for a module that can run: the checks
	// above looked in the right place.
	if code := runProbeEcho(t, flags, "runs"); code != runner.CodeMiss || !cachedIn(t, dir, filepath.Join(e.fixtures, "probe.wasm")) {
		t.Errorf("a good module after the refused ones: code %q, cached %v", code, cachedIn(t, dir, filepath.Join(e.fixtures, "probe.wasm")))
	}
}

// TestCacheIsolation: a container has its own module's compiled code
// mounted, read-only, and no other module's; the guest cannot open it.
func TestCacheIsolation(t *testing.T) {
	flags, dir := ownCache(t, "")
	if r := run(t, flags, "/exit42.wasm"); r.code != 42 {
		t.Fatalf("exit42: %+v", r)
	}
	runProbeEcho(t, flags, "warm") // two entries now
	name := entryName(t, dir, filepath.Join(e.fixtures, "probe.wasm"))
	if records, _ := filepath.Glob(filepath.Join(dir, "index", "*")); len(records) != 2 || name == "" {
		t.Fatalf("records %v; no entry of the probe", records)
	}
	b := startBackground(t, flags, "/probe.wasm", "sleep")
	pid := waitRunning(t, b.id)
	mountinfo, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	var mounts []string
	for _, l := range strings.Split(string(mountinfo), "\n") {
		f := strings.Fields(l)
		if len(f) > 5 && strings.HasPrefix(f[4], runner.CachePath+"/") {
			mounts = append(mounts, f[4])
			if !slices.Contains(strings.Split(f[5], ","), "ro") || !strings.Contains(f[5], "noexec") {
				t.Errorf("compiled code mounted with %s, want ro and noexec", f[5])
			}
		}
	}
	if want := runner.CachePath + "/" + name; len(mounts) != 1 || mounts[0] != want {
		t.Errorf("compiled code mounted in the container: %v, want only %s", mounts, want)
	}
	b.terminate(t)
	r := run(t, flags, "/probe.wasm", "open", runner.CachePath+"/"+name, runner.CachePath)
	if strings.Count(r.stdout, "refused") != 2 {
		t.Errorf("guest opening its compiled code: %q", r.stdout)
	}
}

// TestCacheDamaged damages cached entries on disk: every container still
// runs its own module, the bad entry is dropped and compiled again.
func TestCacheDamaged(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, probe, other string)
	}{
		{"truncated", func(t *testing.T, probe, _ string) {
			if err := os.Truncate(probe, 1000); err != nil {
				t.Fatal(err)
			}
		}},
		{"byte flipped", func(t *testing.T, probe, _ string) {
			os.Chmod(probe, 0o644)
			f, err := os.OpenFile(probe, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteAt([]byte{0xcc}, 4096)
			f.Close()
		}},
		{"swapped with another module's", func(t *testing.T, probe, other string) {
			tmp := probe + ".tmp"
			for _, mv := range [][2]string{{probe, tmp}, {other, probe}, {tmp, other}} {
				if err := os.Rename(mv[0], mv[1]); err != nil {
					t.Fatal(err)
				}
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			flags, dir := ownCache(t, "")
			runProbeEcho(t, flags, "warm")
			probeEntry := newestEntry(t, dir)
			time.Sleep(10 * time.Millisecond)
			if r := run(t, flags, "/exit42.wasm"); r.code != 42 {
				t.Fatalf("exit42: %+v", r)
			}
			otherEntry := newestEntry(t, dir)
			tt.damage(t, probeEntry, otherEntry)
			if code := runProbeEcho(t, flags, "after damage"); code != runner.CodeMiss {
				t.Errorf("after the damage: code %q, want compiled again at Create", code)
			}
			if r := run(t, flags, "/exit42.wasm"); r.code != 42 {
				t.Errorf("the other module after the damage: %+v", r)
			}
			if code := runProbeEcho(t, flags, "repaired"); code != runner.CodeHit {
				t.Errorf("the entry compiled again: code %q, want a cache hit", code)
			}
		})
	}
}

// TestCacheConcurrentCreates starts containers of one module at once, each
// with a shim of its own: one compiles, the others wait and load.
func TestCacheConcurrentCreates(t *testing.T) {
	flags, dir := ownCache(t, "")
	const n = 3
	codes := make([]string, n)
	var wg sync.WaitGroup
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i] = runProbeEcho(t, flags, fmt.Sprintf("concurrent-%d", i))
		}()
	}
	wg.Wait()
	count := map[string]int{}
	for _, c := range codes {
		count[c]++
	}
	if count[runner.CodeMiss] != 1 || count[runner.CodeHit] != n-1 {
		t.Errorf("concurrent creates: %v, want 1 compile and %d hits", codes, n-1)
	}
	if got := dirLen(t, filepath.Join(dir, "entries")); got != 1 {
		t.Errorf("%d entries", got)
	}
}

// TestCacheUnusable: with a cache root that is a file, containers run all
// the same (the runner compiles) and the shim says why.
func TestCacheUnusable(t *testing.T) {
	flags := unusableCache(t)
	if code := runProbeEcho(t, flags, "no cache"); code != runner.CodeCompiled {
		t.Errorf("with an unusable cache: code %q, want compiled by the runner", code)
	}
	if r := run(t, flags, "/corrupt.wasm"); r.code == 0 || !strings.Contains(r.stderr, "/corrupt.wasm") {
		t.Errorf("corrupt module without a cache: %+v", r)
	}
}

// TestCacheEviction: with a cache bound smaller than one entry, every
// entry is evicted at once, and containers still run.
func TestCacheEviction(t *testing.T) {
	flags, dir := ownCache(t, "CacheMaxBytes = 1\n")
	for i := 0; i < 2; i++ {
		if code := runProbeEcho(t, flags, "evicted"); code != runner.CodeMiss {
			t.Errorf("code %q: an entry past the bound was kept", code)
		}
	}
	if n := dirLen(t, filepath.Join(dir, "entries")); n != 0 {
		t.Errorf("%d entries past the bound", n)
	}
}

// TestCompileLimits: a compile that needs more memory than the helper's
// limit fails Create with the reason, and leaves nothing behind.
func TestCompileLimits(t *testing.T) {
	flags, dir := ownCache(t, "CompileMemoryLimit = 8388608\n")
	r := run(t, flags, "/probe.wasm", "echo", "x")
	if r.code == 0 || !strings.Contains(r.stderr, "out of memory") || !strings.Contains(r.stderr, "CompileMemoryLimit") {
		t.Errorf("compile past the memory limit: %+v", r)
	}
	if n := dirLen(t, filepath.Join(dir, "entries")); n != 0 {
		t.Errorf("%d entries after a failed compile", n)
	}
	if n := dirLen(t, filepath.Join(dir, "tmp")); n != 0 {
		t.Errorf("%d staging files after a failed compile", n)
	}
	// A bad module is not cached either.
	flags, dir = ownCache(t, "")
	if r := run(t, flags, "/corrupt.wasm"); r.code == 0 || !strings.Contains(r.stderr, "/corrupt.wasm") {
		t.Errorf("corrupt module: %+v", r)
	}
	if entries, _ := filepath.Glob(filepath.Join(dir, "entries", "*")); len(entries) != 0 {
		t.Errorf("a corrupt module was cached: %v", entries)
	}
}

// TestOrphanHelperCgroups: the empty cgroup of a compile helper whose
// shim was killed (a helper pid that no longer runs) is removed by the
// next compile.
func TestOrphanHelperCgroups(t *testing.T) {
	orphans := []string{}
	for _, c := range []string{"memory", "pids"} {
		d := filepath.Join(cgroups.Root, c, e.compileCg, "compile-999999999")
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		orphans = append(orphans, d)
	}
	flags, _ := ownCache(t, "")
	if r := run(t, flags, "/hello.wasm"); r.code != 0 {
		t.Fatalf("run: %+v", r)
	}
	for _, d := range orphans {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("orphan helper cgroup %s left", d)
			os.Remove(d)
		}
	}
}

// TestTrace: with the Trace option, the runner reports its phases and
// where its compiled code came from.
func TestTrace(t *testing.T) {
	flags, _ := ownCache(t, "") // Trace = true
	runProbeEcho(t, flags, "warm")
	_, r := runNamed(t, nil, flags, "/probe.wasm", "echo", "traced")
	line := findLine(r.stderr, runner.TracePrefix)
	var tr runner.Trace
	if err := json.Unmarshal([]byte(strings.TrimPrefix(line, runner.TracePrefix)), &tr); err != nil {
		t.Fatalf("trace line %q in %q: %v", line, r.stderr, err)
	}
	if tr.Load <= 0 || tr.Run <= 0 || tr.Started.IsZero() || tr.Load > 10*time.Second || tr.Code != runner.CodeHit {
		t.Errorf("trace %+v", tr)
	}
	if r := run(t, nil, "/probe.wasm", "echo", "untraced"); strings.Contains(r.stderr, runner.TracePrefix) {
		t.Errorf("traced without the option: %q", r.stderr)
	}
}
