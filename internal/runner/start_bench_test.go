package runner

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// startChildEnv has the test binary run one start of a module as a child
// of BenchmarkGoHelloStart: "MODE MODULE CACHE".
const startChildEnv = "RUNNER_BENCH_START_CHILD"

// BenchmarkGoHelloStart: what the runner's memory handling costs a start
// of the Go hello (examples/hello). Each start is a fresh process, as a
// runner is (in one process, wazero's memory would reuse pages the Go heap
// already faulted in), which loads the compiled module from a cache and
// then instantiates and runs it to its exit, timed: with wazero's own
// memory (the baseline), and with the runner's (the initial-memory check
// over every memory of the module, and an mmap reservation committed and
// populated as it grows). The two alternate; the medians are reported.
func BenchmarkGoHelloStart(b *testing.B) {
	dir := b.TempDir()
	wasm := buildGoHello(b, dir)
	cache := filepath.Join(dir, "cache")
	times := map[string][]float64{}
	child := func(mode string) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestGoHelloStartChild$")
		cmd.Env = append(os.Environ(), startChildEnv+"="+mode+" "+wasm+" "+cache)
		out, err := cmd.CombinedOutput()
		ns, perr := strconv.ParseFloat(strings.Fields(string(out) + " x")[0], 64)
		if err != nil || perr != nil {
			b.Fatalf("child %s: %v: %s", mode, err, out)
		}
		times[mode] = append(times[mode], ns)
	}
	child("wazero") // fills the cache
	times = map[string][]float64{}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		child("wazero")
		child("runner")
	}
	median := func(v []float64) float64 { slices.Sort(v); return v[len(v)/2] }
	w, r := median(times["wazero"]), median(times["runner"])
	b.ReportMetric(w/1e3, "µs-wazero-memory")
	b.ReportMetric(r/1e3, "µs-runner-memory")
	b.ReportMetric(r/w, "ratio")
}

// BenchmarkInitialMemoryCheck: reading the Go hello's memories (imported
// or defined, exported or not) before it is loaded.
func BenchmarkInitialMemoryCheck(b *testing.B) {
	bin, err := os.ReadFile(buildGoHello(b, b.TempDir()))
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, ok := initialMemory(bin); !ok {
			b.Fatal("initialMemory")
		}
	}
}

// buildGoHello builds examples/hello for wasip1 into dir.
func buildGoHello(b *testing.B, dir string) string {
	wasm := filepath.Join(dir, "hello.wasm")
	_, self, _, _ := runtime.Caller(0)
	cmd := exec.Command("go", "build", "-o", wasm, "./examples/hello")
	cmd.Dir = filepath.Join(filepath.Dir(self), "..", "..")
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build the Go hello: %v: %s", err, out)
	}
	return wasm
}

// TestGoHelloStartChild is BenchmarkGoHelloStart's child: it does nothing
// unless run by it.
func TestGoHelloStartChild(t *testing.T) {
	arg := os.Getenv(startChildEnv)
	if arg == "" {
		t.Skip("run by BenchmarkGoHelloStart")
	}
	f := strings.Fields(arg)
	mode, wasm, cacheDir := f[0], f[1], f[2]
	bin, err := os.ReadFile(wasm)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cache, err := wazero.NewCompilationCacheWithDir(cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	rt := wazero.NewRuntimeWithConfig(ctx, newRuntimeConfig().WithCompilationCache(cache))
	wasi_snapshot_preview1.MustInstantiate(ctx, rt)
	compiled, err := rt.CompileModule(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}
	mc := wazero.NewModuleConfig().WithName("").WithStdout(io.Discard).WithArgs("hello")
	start := time.Now()
	if mode == "runner" {
		if _, ok := initialMemory(bin); !ok {
			t.Fatal("initialMemory")
		}
		ctx = experimental.WithMemoryAllocator(ctx, mmapAllocator{})
	}
	_, err = rt.InstantiateModule(ctx, compiled, mc)
	took := time.Since(start)
	if status, _ := ExitStatus(err); err != nil && status != 0 {
		t.Fatal(err)
	}
	fmt.Println(took.Nanoseconds())
}
