//go:build bench

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/cgroups"
	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/runner"
)

// execResult is what the exec part measured: `ctr task exec` wall times
// into one running Wasm container, by kind.
type execResult struct {
	times map[string][]time.Duration
	// first is the first exec of a module new to the node's cache (the
	// shim compiles it).
	first time.Duration
}

// execOrder are the kinds of the exec part, in the report's order.
var execOrder = []struct{ key, title string }{
	{"native", "native program (/hello), runc exec"},
	{"entry", "the container's own module (probe.wasm, 3 MB Go)"},
	{"other", "another module (hello-go.wasm, 2.6 MB Go), after its first exec"},
}

// execs times execs into one Wasm container (probe.wasm sleeping, a
// compile cache of its own), b.runs of each kind, interleaved, after one
// untimed exec of each: a native program, the container's own module, and
// another module, which the shim compiles into the node's cache at its
// first exec (timed on its own) and every later exec loads.
func (b *bench) execs(t *testing.T) {
	b.exec = execResult{times: map[string][]time.Duration{}}
	p := filepath.Join(b.dir, "exec.toml")
	if err := os.WriteFile(p, []byte(e.runtimeOptionsWith(filepath.Join(b.dir, "exec-cache"), "")), 0o644); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(b.dir, "exec-cache"))
	id := fmt.Sprintf("bench-exec-%d", benchIDs.Add(1))
	w := workload{key: "exec", runtime: runtimeName, flags: []string{"--runtime-config-path", p}, args: []string{"/probe.wasm", "sleep"}}
	b.detached(t, w, id)
	defer b.remove(id)
	args := map[string][]string{
		"native": {"/hello"},
		"entry":  {"/probe.wasm", "echo", "x"},
		"other":  {"/hello-go.wasm"},
	}
	n := 0
	execOnce := func(kind string) time.Duration {
		n++
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, e.ctrBin, append([]string{"--address", e.address, "task", "exec", "--exec-id", "x" + strconv.Itoa(n), id}, args[kind]...)...)
		start := time.Now()
		out, err := cmd.CombinedOutput()
		d := time.Since(start)
		if err != nil {
			t.Fatalf("exec %s: %v: %s", kind, err, out)
		}
		return d
	}
	b.exec.first = execOnce("other")
	execOnce("native")
	execOnce("entry")
	for range b.runs {
		for _, k := range execOrder {
			b.exec.times[k.key] = append(b.exec.times[k.key], execOnce(k.key))
		}
	}
}

func (b *bench) execReport(add func(string, ...any)) {
	if b.exec.times == nil {
		return
	}
	add("### Exec into a running Wasm container: `ctr task exec`, wall time")
	add("")
	add("%d execs of each kind, interleaved, into one container running probe.wasm (what an exec probe does).", b.runs)
	add("")
	add("| Exec | median | min | max | vs the container's own module |")
	add("| --- | ---: | ---: | ---: | ---: |")
	entry := median(b.exec.times["entry"])
	for _, k := range execOrder {
		ds := b.exec.times[k.key]
		add("| %s | %s | %s | %s | %.2fx |", k.title, ms(median(ds)), ms(slices.Min(ds)), ms(slices.Max(ds)), float64(median(ds))/float64(entry))
	}
	add("")
	add("The first exec of hello-go.wasm, new to the node's cache (the shim compiles it): %s.", ms(b.exec.first))
	add("")
	ratio := float64(median(b.exec.times["other"])) / float64(entry)
	b.targets = append(b.targets, fmt.Sprintf("| second exec of another module ≤ 1.5x an exec of the entrypoint | %.2fx | %s |", ratio, verdict(ratio <= 1.5)))
}

// marginRow is one run of the margin part.
type marginRow struct {
	module         string
	code           int
	grownTo, peak  uint64
	refused        int
	limit          uint64
	killedByKernel bool
}

// margins measures what the memory guard's margin (runner.MemoryMargin)
// has to hold: guests that grow until refused under a 64 MiB limit, traced,
// their cgroup's peak charge (memory.max_usage_in_bytes, or memory.peak on
// cgroup v2) read as they run. The peak less the guard's count after the
// last grow it allowed (Trace.GrownTo) is what the runner and the kernel
// took past the guard's count.
func (b *bench) margins(t *testing.T) {
	p := filepath.Join(b.dir, "margin.toml")
	if err := os.WriteFile(p, []byte(e.runtimeOptionsWith(filepath.Join(b.dir, "warm-cache"), "Trace = true\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	const limit = 64 << 20
	for i := range max(b.runs/2, 5) {
		for _, args := range [][]string{{"/probe.wasm", "alloc"}, {"/grow.wasm"}} {
			id := fmt.Sprintf("bench-margin-%d-%d", i, benchIDs.Add(1))
			cmd := exec.Command(e.ctrBin, append([]string{"--address", e.address, "run", "--rm", "--runtime", runtimeName,
				"--runtime-config-path", p, "--memory-limit", strconv.Itoa(limit), benchImage, id}, args...)...)
			var stdout, stderr lockedBuffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			// grow.wasm waits on stdin once refused; its end ends it (ctr
			// hangs on an input that ends before the task starts).
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			var peak uint64
		sample:
			for {
				select {
				case err = <-done:
					break sample
				case <-time.After(2 * time.Millisecond):
				}
				if stdin != nil && strings.Contains(stdout.String(), "memory ") {
					stdin.Close()
					stdin = nil
				}
				for _, d := range cgroups.Dirs(cgroups.Root, "/default/"+id) {
					for _, f := range []string{"memory.max_usage_in_bytes", "memory.peak"} {
						if data, rerr := os.ReadFile(filepath.Join(d, f)); rerr == nil {
							if v, perr := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64); perr == nil {
								peak = max(peak, v)
							}
						}
					}
				}
			}
			row := marginRow{module: strings.Join(args, " "), limit: limit, peak: peak}
			if x, ok := err.(*exec.ExitError); ok {
				row.code = x.ExitCode()
			}
			row.killedByKernel = row.code == 137
			if line := findLine(stderr.String(), runner.TracePrefix); line != "" {
				var tr runner.Trace
				if jerr := json.Unmarshal([]byte(strings.TrimPrefix(line, runner.TracePrefix)), &tr); jerr == nil {
					row.grownTo, row.refused = tr.GrownTo, tr.Refused
				}
			}
			b.margin = append(b.margin, row)
		}
	}
}

func (b *bench) marginReport(add func(string, ...any)) {
	if len(b.margin) == 0 {
		return
	}
	add("### The memory guard's margin")
	add("")
	add("Guests grown until refused under a 64 MiB limit (the Go probe allocating 1 MiB blocks until Go's runtime gives up; grow.wasm, hand-written, growing 1 MiB at a time and touching every page), traced: the guard's count of the container's memory after the last grow it allowed, against the cgroup's peak charge (file pages included). `runner.MemoryMargin` is %d MiB.", runner.MemoryMargin>>20)
	add("")
	add("| Guest | runs | killed by the kernel | refused grows (median) | guard's count after the last grow (median) | peak charge (median) | peak past the count (max) |")
	add("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
	by := map[string][]marginRow{}
	var order []string
	for _, r := range b.margin {
		if by[r.module] == nil {
			order = append(order, r.module)
		}
		by[r.module] = append(by[r.module], r)
	}
	for _, m := range order {
		rows := by[m]
		killed := 0
		var grown, peak, refused []time.Duration // medians through the duration helper
		var worst int64
		for _, r := range rows {
			if r.killedByKernel {
				killed++
			}
			grown = append(grown, time.Duration(r.grownTo))
			peak = append(peak, time.Duration(r.peak))
			refused = append(refused, time.Duration(r.refused))
			worst = max(worst, int64(r.peak)-int64(r.grownTo))
		}
		add("| `%s` | %d | %d | %d | %s | %s | %.2f MiB |", m, len(rows), killed, median(refused), mb(int64(median(grown))), mb(int64(median(peak))), float64(worst)/(1<<20))
	}
	add("")
}
