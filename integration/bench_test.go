//go:build bench

package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/runner"
	"github.com/containerd-shim-wasm/containerd-shim-wasm/oci/image"
)

// TestBench is `make bench`: a benchmark, not a test. It measures, on the
// private containerd of the integration tests and in one run, native
// containers through containerd's runc shim against Wasm modules through
// this shim (empty and warm compile cache) and through the wazero CLI in an
// ordinary runc container, and writes the results between the markers of
// $BENCH_OUT (BENCHMARKS.md). It fails only if a run fails, never on speed.
//
// BENCH_RUNS (default 20) is the number of timed runs of each latency
// workload; BENCH_TASKS (default 500) the tasks of each throughput run.
//
// BENCH_ONLY (latency, breakdown, cpu, memory, throughput, server, programs, pull, exec or margin) runs one part, for
// profiling; the report then covers that part only and is not written.
func TestBench(t *testing.T) {
	b := newBench(t)
	only := os.Getenv("BENCH_ONLY")
	for _, part := range []struct {
		name string
		run  func(*testing.T)
	}{{"latency", b.latency}, {"breakdown", b.breakdown}, {"cpu", b.cpu}, {"memory", b.memory}, {"throughput", b.throughput}, {"server", b.servers}, {"programs", b.programs}, {"pull", b.pulls}, {"exec", b.execs}, {"margin", b.margins}} {
		if only == "" || only == part.name {
			part.run(t)
		}
	}
	if only != "" {
		b.printPart(t, only)
		return
	}
	b.report(t)
}

const benchImage = "example.local/wasm-bench:latest"

// workload is one way of running one program through ctr run --rm.
type workload struct {
	key, title string
	runtime    string   // runtime name
	flags      []string // more ctr run flags
	args       []string // the container's command
	want       string   // in its stdout
	before     func() error
}

type bench struct {
	dir      string
	runs     int
	tasks    int
	runcRoot string // containerd's runc shim's runc root
	warm     []string
	cold     []string
	coldRoot string
	trace    []string
	wazero   string // the CLI's version

	workloads  map[string]workload
	times      map[string][]time.Duration
	compile    map[string]time.Duration // wazero's bare compile, in process
	cliCompile map[string]time.Duration // `wazero compile`, a fresh process
	phases     map[string]map[string][]time.Duration
	cpuPer     map[string]time.Duration // busy CPU time of the machine per task
	mem        []memRow
	tput       []tputRow
	server     []serverRow
	pull       pullResult
	exec       execResult
	margin     []marginRow
	// the programs part: Yosys's compiled code and compile peak
	compiledSize, compilePeak int64
	notes                     []string
	targets                   []string // rows of the targets table besides report's own
}

type memRow struct {
	what  string
	bytes int64
	base  string // the baseline's row, or ""
	per   string
}

type tputRow struct {
	key      string
	parallel int
	perSec   float64
	failed   int
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func newBench(t *testing.T) *bench {
	b := &bench{
		dir:        filepath.Join(e.dir, "bench"),
		runs:       envInt("BENCH_RUNS", 20),
		tasks:      envInt("BENCH_TASKS", 500),
		workloads:  map[string]workload{},
		times:      map[string][]time.Duration{},
		compile:    map[string]time.Duration{},
		cliCompile: map[string]time.Duration{},
		phases:     map[string]map[string][]time.Duration{},
		cpuPer:     map[string]time.Duration{},
	}
	b.runcRoot = filepath.Join(b.dir, "runc-native")
	if err := os.MkdirAll(b.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	opts := func(name, extra string) ([]string, string) {
		root := filepath.Join(b.dir, name+"-cache")
		p := filepath.Join(b.dir, name+".toml")
		if err := os.WriteFile(p, []byte(e.runtimeOptionsWith(root, extra)), 0o644); err != nil {
			t.Fatal(err)
		}
		return []string{"--runtime-config-path", p}, root
	}
	b.warm, _ = opts("warm", "")
	b.cold, b.coldRoot = opts("cold", "")
	b.trace, _ = opts("trace", "Trace = true\n")

	// The programs: a static native hello, the tiny WAT hello, the Go
	// hello (examples/hello) and the wazero CLI, all in one image.
	fx := filepath.Join(b.dir, "fixtures")
	os.MkdirAll(fx, 0o755)
	build := func(out, pkg string, env ...string) []byte {
		if err := goBuild(filepath.Join(fx, out), pkg, env...); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(filepath.Join(fx, out))
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	native := build("hello", "./integration/testdata/native", "CGO_ENABLED=0", "GOOS=linux")
	goHello := build("hello-go.wasm", "./examples/hello", "GOOS=wasip1", "GOARCH=wasm")
	tiny, err := os.ReadFile(filepath.Join(e.fixtures, "hello.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	probe, err := os.ReadFile(filepath.Join(e.fixtures, "probe.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	grow, err := os.ReadFile(filepath.Join(e.fixtures, "grow.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	server, err := os.ReadFile(filepath.Join(e.fixtures, "http-server.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	nativeServer := build("http-server", "./examples/http-server", "CGO_ENABLED=0", "GOOS=linux")
	pause, err := os.ReadFile(filepath.Join(e.fixtures, "pause"))
	if err != nil {
		t.Fatal(err)
	}
	wz, err := tool("wazero")
	if err != nil {
		t.Fatal(err)
	}
	cli, err := os.ReadFile(wz)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command(wz, "version").Output()
	b.wazero = strings.TrimSpace(string(out))
	img := &image.Image{Name: benchImage, Files: []image.File{
		{Path: "/hello", Data: native, Mode: 0o755},
		{Path: "/tiny.wasm", Data: tiny, Mode: 0o644},
		{Path: "/hello-go.wasm", Data: goHello, Mode: 0o644},
		{Path: "/probe.wasm", Data: probe, Mode: 0o644},
		{Path: "/grow.wasm", Data: grow, Mode: 0o644},
		{Path: "/pause", Data: pause, Mode: 0o755},
		{Path: "/http-server.wasm", Data: server, Mode: 0o644},
		{Path: "/http-server", Data: nativeServer, Mode: 0o755},
		{Path: "/wazero", Data: cli, Mode: 0o755},
		{Path: "/tmp/.keep", Mode: 0o644},
	}}
	img.Files = append(img.Files, programFiles(t)...)
	importImage(t, img)
	b.notes = append(b.notes, fmt.Sprintf("Modules: tiny = %d-byte WAT hello; Go hello = examples/hello, %.1f MB (GOOS=wasip1, %s).", len(tiny), float64(len(goHello))/1e6, goruntime.Version()))

	runc := "io.containerd.runc.v2"
	clearCold := func() error { return os.RemoveAll(b.coldRoot) }
	for _, w := range []workload{
		{key: "native", title: "(a) native static hello, runc shim", runtime: runc, flags: []string{"--runc-root", b.runcRoot}, args: []string{"/hello"}, want: "native hello"},
		{key: "native-wasm-shim", title: "native static hello, this shim", runtime: runtimeName, flags: b.warm, args: []string{"/hello"}, want: "native hello"},
		{key: "tiny-cold", title: "(b) tiny, empty cache", runtime: runtimeName, flags: b.cold, args: []string{"/tiny.wasm"}, want: "hello", before: clearCold},
		{key: "tiny-warm", title: "(c) tiny, warm cache", runtime: runtimeName, flags: b.warm, args: []string{"/tiny.wasm"}, want: "hello"},
		{key: "tiny-cli", title: "(d) tiny, wazero CLI in runc", runtime: runc, flags: []string{"--runc-root", b.runcRoot}, args: []string{"/wazero", "run", "/tiny.wasm"}, want: "hello"},
		{key: "go-cold", title: "(b) Go hello, empty cache", runtime: runtimeName, flags: b.cold, args: []string{"/hello-go.wasm"}, want: "Hello, world", before: clearCold},
		{key: "go-warm", title: "(c) Go hello, warm cache", runtime: runtimeName, flags: b.warm, args: []string{"/hello-go.wasm"}, want: "Hello, world"},
		{key: "go-cli", title: "(d) Go hello, wazero CLI in runc", runtime: runc, flags: []string{"--runc-root", b.runcRoot}, args: []string{"/wazero", "run", "/hello-go.wasm"}, want: "Hello, world"},
	} {
		b.workloads[w.key] = w
	}

	// wazero's bare compile time: in a fresh process (`wazero compile`),
	// as a compile helper runs, and in this process, where the heap is warm.
	for name, file := range map[string]string{"tiny": filepath.Join(e.fixtures, "hello.wasm"), "go": filepath.Join(fx, "hello-go.wasm")} {
		var ds []time.Duration
		for i := 0; i < 5; i++ {
			start := time.Now()
			if out, err := exec.Command(wz, "compile", file).CombinedOutput(); err != nil {
				t.Fatalf("wazero compile %s: %v: %s", file, err, out)
			}
			ds = append(ds, time.Since(start))
		}
		b.cliCompile[name] = median(ds)
	}
	for name, bin := range map[string][]byte{"tiny": tiny, "go": goHello} {
		var ds []time.Duration
		for i := 0; i < 5; i++ {
			ctx := context.Background()
			rt := wazero.NewRuntime(ctx)
			start := time.Now()
			if _, err := rt.CompileModule(ctx, bin); err != nil {
				t.Fatal(err)
			}
			ds = append(ds, time.Since(start))
			rt.Close(ctx)
		}
		b.compile[name] = median(ds)
	}
	return b
}

var benchIDs atomic.Int64

// run runs a workload once and returns its wall time and the container id.
func (b *bench) run(w workload, extraFlags ...string) (time.Duration, string, string, error) {
	if w.before != nil {
		if err := w.before(); err != nil {
			return 0, "", "", err
		}
	}
	id := fmt.Sprintf("bench-%s-%d", w.key, benchIDs.Add(1))
	args := []string{"--address", e.address, "run", "--rm", "--runtime", w.runtime}
	args = append(append(append(args, w.flags...), extraFlags...), benchImage, id)
	args = append(args, w.args...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.ctrBin, args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err == nil && !strings.Contains(stdout.String(), w.want) {
		err = fmt.Errorf("output %q lacks %q", stdout.String(), w.want)
	}
	if err != nil {
		return 0, id, "", fmt.Errorf("%s: %v: %s", w.title, err, stderr.String())
	}
	return d, id, stderr.String(), nil
}

var latencyOrder = []string{"native", "native-wasm-shim", "tiny-cold", "tiny-warm", "tiny-cli", "go-cold", "go-warm", "go-cli"}

// latency times every workload b.runs times, interleaved so that the
// machine's drift hits them alike, after one untimed warm-up run each.
func (b *bench) latency(t *testing.T) {
	for _, k := range latencyOrder {
		if _, _, _, err := b.run(b.workloads[k]); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < b.runs; i++ {
		for _, k := range latencyOrder {
			d, _, _, err := b.run(b.workloads[k])
			if err != nil {
				t.Fatal(err)
			}
			b.times[k] = append(b.times[k], d)
		}
	}
}

var logLine = regexp.MustCompile(`^time="([^"]+)" .*msg=(created|started) (.*)$`)

// shimTimings reads the shim's created/started log lines of container id:
// durations by key, and when Start returned.
func shimTimings(id string) (map[string]time.Duration, time.Time) {
	out := map[string]time.Duration{}
	var started time.Time
	f, err := os.Open(filepath.Join(e.dir, "containerd.log"))
	if err != nil {
		return out, started
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if !strings.Contains(l, " id="+id+" ") {
			continue
		}
		m := logLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		for _, kv := range strings.Fields(m[3]) {
			k, v, _ := strings.Cut(kv, "=")
			if d, err := time.ParseDuration(v); err == nil {
				out[k] = d
			}
		}
		if m[2] == "started" {
			started, _ = time.Parse(time.RFC3339Nano, m[1])
		}
	}
	return out, started
}

// breakdown runs the warm workloads with the runner's trace on, and the
// native hello through this shim, and splits their time into phases.
func (b *bench) breakdown(t *testing.T) {
	for _, k := range []string{"native-wasm-shim", "tiny-warm", "go-warm"} {
		w := b.workloads[k]
		if k != "native-wasm-shim" {
			w.flags = b.trace
		}
		ph := map[string][]time.Duration{}
		for i := 0; i < b.runs; i++ {
			total, id, stderr, err := b.run(w)
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond) // the shim's log lines reach containerd's log
			shim, started := shimTimings(id)
			for _, key := range []string{"prepare", "runc_create", "runc_start"} {
				ph[key] = append(ph[key], shim[key])
			}
			ph["total"] = append(ph["total"], total)
			if line := findLine(stderr, runner.TracePrefix); line != "" {
				var tr runner.Trace
				if err := json.Unmarshal([]byte(strings.TrimPrefix(line, runner.TracePrefix)), &tr); err != nil {
					t.Fatalf("trace %q: %v", line, err)
				}
				if !started.IsZero() {
					// From runc start's beginning to the runner's main.
					ph["runner_start"] = append(ph["runner_start"], tr.Started.Sub(started.Add(-shim["runc_start"])))
				}
				ph["setup"] = append(ph["setup"], tr.Setup)
				ph["read"] = append(ph["read"], tr.Read)
				ph["load"] = append(ph["load"], tr.Load)
				ph["instantiate"] = append(ph["instantiate"], tr.Instantiate)
				ph["run"] = append(ph["run"], tr.Run)
			}
		}
		b.phases[k] = ph
	}
}

// busyCPU is the machine's busy CPU time so far, from /proc/stat.
func busyCPU() time.Duration {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	f := strings.Fields(strings.SplitN(string(data), "\n", 2)[0])
	var busy int64
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return time.Duration(busy) * 10 * time.Millisecond // USER_HZ = 100
}

var cpuOrder = []string{"native", "native-wasm-shim", "tiny-warm", "go-warm"}

// cpu measures the machine's busy CPU time per task, over b.runs tasks
// run one after another: what bounds throughput once the cores are busy.
// With BENCH_PERF set to a directory, each workload's loop is recorded by
// `perf record -a` there, for `perf report --sort comm`.
func (b *bench) cpu(t *testing.T) {
	for _, k := range cpuOrder {
		var perf *exec.Cmd
		if dir := os.Getenv("BENCH_PERF"); dir != "" {
			perf = exec.Command("perf", "record", "-a", "-g", "-F", "499", "-o", filepath.Join(dir, k+".data"))
			if err := perf.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second)
		}
		start := busyCPU()
		for i := 0; i < b.runs; i++ {
			if _, _, _, err := b.run(b.workloads[k]); err != nil {
				t.Fatal(err)
			}
		}
		b.cpuPer[k] = (busyCPU() - start) / time.Duration(b.runs)
		if perf != nil {
			perf.Process.Signal(syscall.SIGINT)
			perf.Wait()
		}
	}
}

// throughput runs b.tasks tasks of each workload at several parallelisms.
// The workloads take turns, a fifth of their tasks at a time, so that a
// slow spell of the machine hits them alike.
func (b *bench) throughput(t *testing.T) {
	const rounds = 5
	keys := []string{"native", "tiny-warm", "go-warm"}
	for _, p := range []int{1, 8, 32} {
		wall := map[string]time.Duration{}
		failed := map[string]int64{}
		for round := 0; round < rounds; round++ {
			n := b.tasks / rounds
			if round == rounds-1 {
				n = b.tasks - n*(rounds-1)
			}
			for _, k := range keys {
				d, f, err := b.tasksAt(k, n, p)
				wall[k] += d
				failed[k] += f
				if err != nil {
					t.Errorf("%s at parallelism %d: %d failed, first: %v", k, p, f, err)
				}
			}
		}
		for _, k := range keys {
			row := tputRow{key: k, parallel: p, perSec: float64(int64(b.tasks)-failed[k]) / wall[k].Seconds(), failed: int(failed[k])}
			b.tput = append(b.tput, row)
			t.Logf("throughput %s p=%d: %.2f tasks/s", k, p, row.perSec)
		}
	}
}

// tasksAt runs n tasks of workload k with p at a time, and returns the
// wall time, the number that failed and the first failure.
func (b *bench) tasksAt(k string, n, p int) (time.Duration, int64, error) {
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	var firstErr error
	var once sync.Once
	start := time.Now()
	for i := 0; i < p; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				if _, _, _, err := b.run(b.workloads[k]); err != nil {
					failed.Add(1)
					once.Do(func() { firstErr = err })
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(start), failed.Load(), firstErr
}

// pss is the proportional set size of a process, in bytes.
func pss(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "Pss:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// detached starts a container in the background (ctr run -d) and returns
// its init pid once it runs.
func (b *bench) detached(t *testing.T, w workload, id string) int {
	t.Helper()
	args := []string{"run", "-d", "--runtime", w.runtime}
	args = append(append(append(args, w.flags...), benchImage, id), w.args...)
	if _, stderr, err := e.ctr(args...); err != nil {
		t.Fatalf("start %s: %v: %s", id, err, stderr)
	}
	t.Cleanup(func() { b.remove(id) })
	return waitRunning(t, id)
}

func (b *bench) remove(id string) {
	e.ctr("task", "delete", "--force", id)
	e.ctr("container", "delete", id)
}

func (b *bench) memory(t *testing.T) {
	runc := "io.containerd.runc.v2"
	idleWasm := workload{key: "idle-wasm", runtime: runtimeName, flags: b.warm, args: []string{"/probe.wasm", "sleep"}}
	idleNative := workload{key: "idle-native", runtime: runc, flags: []string{"--runc-root", b.runcRoot}, args: []string{"/pause"}}
	cliIdle := workload{key: "idle-cli", runtime: runc, flags: []string{"--runc-root", b.runcRoot}, args: []string{"/wazero", "run", "/probe.wasm", "sleep"}}
	if _, _, _, err := b.run(workload{key: "warm-probe", title: "probe", runtime: runtimeName, flags: b.warm, args: []string{"/probe.wasm", "echo", "x"}, want: "x"}); err != nil {
		t.Fatal(err)
	}

	// The shims' RSS with one idle container each.
	wasmPid := b.detached(t, idleWasm, "bench-mem-wasm")
	nativePid := b.detached(t, idleNative, "bench-mem-native")
	cliPid := b.detached(t, cliIdle, "bench-mem-cli")
	time.Sleep(2 * time.Second)
	b.mem = append(b.mem,
		memRow{what: "runc shim RSS, one idle native container", bytes: procStatus(parentPid(nativePid), "VmRSS"), per: "shim"},
		memRow{what: "  of which anonymous", bytes: procStatus(parentPid(nativePid), "RssAnon")},
		memRow{what: "this shim's RSS, one idle Wasm container", bytes: procStatus(parentPid(wasmPid), "VmRSS"), base: "runc shim RSS, one idle native container", per: "shim"},
		memRow{what: "  of which anonymous ", bytes: procStatus(parentPid(wasmPid), "RssAnon")},
		memRow{what: "wazero CLI peak RSS, probe.wasm (compiles)", bytes: procStatus(cliPid, "VmHWM"), per: "runner"},
		memRow{what: "runner peak RSS, probe.wasm (warm cache)", bytes: procStatus(wasmPid, "VmHWM"), base: "wazero CLI peak RSS, probe.wasm (compiles)", per: "runner"},
	)
	for _, id := range []string{"bench-mem-wasm", "bench-mem-native", "bench-mem-cli"} {
		b.remove(id)
	}

	// PSS per container with 50 idle containers of each kind.
	const n = 50
	for _, w := range []workload{idleNative, idleWasm} {
		var pids []int
		for i := 0; i < n; i++ {
			pids = append(pids, b.detached(t, w, fmt.Sprintf("bench-%s-%d", w.key, i)))
		}
		time.Sleep(2 * time.Second)
		var total, shims int64
		for _, pid := range pids {
			total += pss(pid)
			shims += pss(parentPid(pid))
		}
		what := map[string]string{"idle-native": "native (pause)", "idle-wasm": "Wasm (probe.wasm sleep)"}[w.key]
		row := memRow{what: fmt.Sprintf("PSS per container, %d idle %s: container process + shim", n, what), bytes: (total + shims) / n, per: "pss"}
		if w.key == "idle-wasm" {
			row.base = fmt.Sprintf("PSS per container, %d idle %s: container process + shim", n, "native (pause)")
		}
		b.mem = append(b.mem, row,
			memRow{what: fmt.Sprintf("  of which the shim (%s)", what), bytes: shims / n},
		)
		for i := 0; i < n; i++ {
			b.remove(fmt.Sprintf("bench-%s-%d", w.key, i))
		}
	}
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/1e6) }
func ms1(d time.Duration) string {
	return fmt.Sprintf("%.1f ms", float64(d)/1e6)
}
func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/(1<<20)) }

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**not met**"
}

func firstLine(cmd string, args ...string) string {
	out, err := exec.Command(cmd, args...).CombinedOutput()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
}

func machine() []string {
	cpu := "unknown"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	var memTotal string
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		memTotal = strings.TrimSpace(strings.TrimPrefix(strings.SplitN(string(data), "\n", 2)[0], "MemTotal:"))
	}
	containerd, _ := tool("containerd")
	return []string{
		fmt.Sprintf("- Machine: %s, %d CPUs, %s memory; kernel %s", cpu, goruntime.NumCPU(), memTotal, firstLine("uname", "-r")),
		fmt.Sprintf("- containerd: %s", firstLine(containerd, "--version")),
		fmt.Sprintf("- runc: %s", firstLine("runc", "--version")),
		fmt.Sprintf("- Go: %s", goruntime.Version()),
	}
}

// printPart prints the raw results of one part.
func (b *bench) printPart(t *testing.T, part string) {
	switch part {
	case "latency":
		for _, k := range latencyOrder {
			t.Logf("%-20s median %s", k, ms(median(b.times[k])))
		}
	case "breakdown":
		for k, ph := range b.phases {
			for key, ds := range ph {
				t.Logf("%-20s %-14s %s", k, key, ms1(median(ds)))
			}
		}
	case "cpu":
		for _, k := range cpuOrder {
			t.Logf("%-20s %s CPU per task", k, ms(b.cpuPer[k]))
		}
	case "memory":
		for _, r := range b.mem {
			t.Logf("%-80s %s", r.what, mb(r.bytes))
		}
	case "throughput":
		for _, r := range b.tput {
			t.Logf("%-12s p=%-3d %.2f tasks/s", r.key, r.parallel, r.perSec)
		}
	case "server", "programs", "pull", "exec", "margin":
		var out []string
		add := func(f string, a ...any) { out = append(out, fmt.Sprintf(f, a...)) }
		b.serverReport(add)
		b.programsReport(add)
		b.pullReport(add)
		b.execReport(add)
		b.marginReport(add)
		out = append(out, b.targets...)
		fmt.Println(strings.Join(out, "\n"))
	}
}

func (b *bench) report(t *testing.T) {
	var out []string
	add := func(format string, a ...any) { out = append(out, fmt.Sprintf(format, a...)) }
	add("Generated by `make bench` on %s (%d timed runs of each workload, interleaved; %d tasks per throughput run).", time.Now().UTC().Format("2006-01-02 15:04 UTC"), b.runs, b.tasks)
	add("")
	out = append(out, machine()...)
	add("- wazero: %s (the CLI in the image; the shim links the same version)", b.wazero)
	for _, n := range b.notes {
		add("- %s", n)
	}
	add("")
	add("### Start latency: `ctr run --rm`, wall time")
	add("")
	add("| Workload | median | min | max | vs (a) |")
	add("| --- | ---: | ---: | ---: | ---: |")
	base := median(b.times["native"])
	for _, k := range latencyOrder {
		ds := b.times[k]
		add("| %s | %s | %s | %s | %.2fx |", b.workloads[k].title, ms(median(ds)), ms(slices.Min(ds)), ms(slices.Max(ds)), float64(median(ds))/float64(base))
	}
	add("")
	add("wazero's bare compile, median of 5: `wazero compile` (a fresh process, as the compile helper is): tiny %s, Go hello %s; in a process with a warm heap: tiny %s, Go hello %s.", ms1(b.cliCompile["tiny"]), ms(b.cliCompile["go"]), ms1(b.compile["tiny"]), ms(b.compile["go"]))
	add("")
	add("### Where a warm Wasm start goes (medians of %d traced runs)", b.runs)
	add("")
	add("| Phase | native through this shim | tiny, warm | Go hello, warm |")
	add("| --- | ---: | ---: | ---: |")
	rows := []struct{ key, title string }{
		{"total", "`ctr run --rm` wall time"},
		{"prepare", "shim: mount rootfs, detect, hash, cache lookup and verify"},
		{"runc_create", "runc create (as the shim sees it)"},
		{"runc_start", "runc start"},
		{"runner_start", "runc start → runner's main (exec, Go runtime init)"},
		{"setup", "runner: config, close descriptors, denylist"},
		{"read", "runner: read module"},
		{"load", "runner: load compiled code"},
		{"instantiate", "runner: instantiate WASI and module"},
		{"run", "guest run"},
	}
	for _, r := range rows {
		cells := []string{}
		for _, k := range []string{"native-wasm-shim", "tiny-warm", "go-warm"} {
			if ds := b.phases[k][r.key]; len(ds) > 0 {
				cells = append(cells, ms1(median(ds)))
			} else {
				cells = append(cells, "–")
			}
		}
		add("| %s | %s |", r.title, strings.Join(cells, " | "))
	}
	add("")
	add("### CPU per task")
	add("")
	add("The machine's busy CPU time per `ctr run --rm`, over %d tasks run one after another (ctr, containerd, the shim, runc and the container): what bounds throughput once the cores are busy.", b.runs)
	add("")
	add("| Workload | CPU per task | vs (a) |")
	add("| --- | ---: | ---: |")
	for _, k := range cpuOrder {
		add("| %s | %s | %.2fx |", b.workloads[k].title, ms(b.cpuPer[k]), float64(b.cpuPer[k])/float64(b.cpuPer["native"]))
	}
	add("")
	add("### Throughput: %d tasks of `ctr run --rm` (workloads interleaved in five rounds)", b.tasks)
	add("")
	add("| Workload | parallelism | tasks/s | vs (a) | failed |")
	add("| --- | ---: | ---: | ---: | ---: |")
	nativeRate := map[int]float64{}
	for _, r := range b.tput {
		if r.key == "native" {
			nativeRate[r.parallel] = r.perSec
		}
	}
	for _, r := range b.tput {
		add("| %s | %d | %.2f | %.2fx | %d |", b.workloads[r.key].title, r.parallel, r.perSec, r.perSec/nativeRate[r.parallel], r.failed)
	}
	add("")
	add("### Memory")
	add("")
	add("| What | size | vs baseline |")
	add("| --- | ---: | ---: |")
	memOf := map[string]int64{}
	for _, r := range b.mem {
		memOf[r.what] = r.bytes
		ratio := ""
		if r.base != "" && memOf[r.base] > 0 {
			ratio = fmt.Sprintf("%.2fx", float64(r.bytes)/float64(memOf[r.base]))
		}
		add("| %s | %s | %s |", r.what, mb(r.bytes), ratio)
	}
	add("")
	b.serverReport(add)
	b.programsReport(add)
	b.pullReport(add)
	b.execReport(add)
	b.marginReport(add)
	add("### Targets")
	add("")
	med := func(k string) time.Duration { return median(b.times[k]) }
	rate := func(k string, p int) float64 {
		for _, r := range b.tput {
			if r.key == k && r.parallel == p {
				return r.perSec
			}
		}
		return 0
	}
	minRatio := func(k string) float64 {
		m := 0.0
		for i, p := range []int{1, 8, 32} {
			if r := rate(k, p) / nativeRate[p]; i == 0 || r < m {
				m = r
			}
		}
		return m
	}
	ratio := func(a, b time.Duration) float64 { return float64(a) / float64(b) }
	add("| Target | measured | |")
	add("| --- | --- | --- |")
	add("| tiny warm ≤ 1.1x native runc | %.2fx | %s |", ratio(med("tiny-warm"), base), verdict(ratio(med("tiny-warm"), base) <= 1.1))
	add("| Go hello warm ≤ 1.4x native runc | %.2fx | %s |", ratio(med("go-warm"), base), verdict(ratio(med("go-warm"), base) <= 1.4))
	add("| Go hello warm ≥ 7x faster than the wazero CLI | %.1fx | %s |", ratio(med("go-cli"), med("go-warm")), verdict(ratio(med("go-cli"), med("go-warm")) >= 7))
	for _, m := range []string{"tiny", "go"} {
		limit := time.Duration(1.1 * float64(b.cliCompile[m]+med(m+"-warm")))
		add("| %s cold ≤ 1.1x (`wazero compile` + warm start) = %s | %s | %s |", m, ms(limit), ms(med(m+"-cold")), verdict(med(m+"-cold") <= limit))
	}
	add("| tiny tasks/s ≥ 0.9x native (worst parallelism) | %.2fx | %s |", minRatio("tiny-warm"), verdict(minRatio("tiny-warm") >= 0.9))
	add("| Go hello tasks/s ≥ 0.7x native (worst parallelism) | %.2fx | %s |", minRatio("go-warm"), verdict(minRatio("go-warm") >= 0.7))
	shimRatio := float64(memOf["this shim's RSS, one idle Wasm container"]) / float64(memOf["runc shim RSS, one idle native container"])
	add("| shim RSS per pod ≤ runc shim's | %.2fx | %s |", shimRatio, verdict(shimRatio <= 1))
	runnerRatio := float64(memOf["runner peak RSS, probe.wasm (warm cache)"]) / float64(memOf["wazero CLI peak RSS, probe.wasm (compiles)"])
	add("| runner peak RSS ≤ 1.1x wazero CLI's | %.2fx | %s |", runnerRatio, verdict(runnerRatio <= 1.1))
	out = append(out, b.targets...)

	text := strings.Join(out, "\n") + "\n"
	fmt.Println(text)
	dest := os.Getenv("BENCH_OUT")
	if dest == "" {
		return
	}
	if err := writeBetweenMarkers(dest, text); err != nil {
		t.Fatal(err)
	}
	t.Logf("results written into %s", dest)
}

const (
	beginMarker = "<!-- bench:begin (written by make bench) -->"
	endMarker   = "<!-- bench:end -->"
)

// writeBetweenMarkers replaces what lies between the markers in path (or
// appends the markers), keeping the hand-written analysis around them.
func writeBetweenMarkers(path, text string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	s := string(old)
	i, j := strings.Index(s, beginMarker), strings.Index(s, endMarker)
	block := beginMarker + "\n" + text + endMarker
	if i < 0 || j < i {
		s = strings.TrimRight(s, "\n") + "\n\n" + block + "\n"
	} else {
		s = s[:i] + block + s[j+len(endMarker):]
	}
	return os.WriteFile(path, []byte(s), 0o644)
}
