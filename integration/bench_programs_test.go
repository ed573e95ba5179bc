//go:build bench

package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/oci/image"
)

// programFiles are the bench image's real programs (make programs, with
// Yosys): a Rust std program with and without DWARF, and Yosys with a
// Verilog design.
func programFiles(t *testing.T) []image.File {
	dir := os.Getenv("PROGRAMS_DIR")
	if dir == "" {
		t.Fatal("PROGRAMS_DIR is not set: run make bench")
	}
	var files []image.File
	for _, name := range []string{"std.wasm", "std-stripped.wasm", "yosys.wasm"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("%v (make bench builds it)", err)
		}
		files = append(files, image.File{Path: "/" + name, Data: data, Mode: 0o644})
	}
	return append(files, image.File{Path: "/top.v", Data: []byte("module top(input a, b, output y); assign y = a & b; endmodule\n")})
}

// programWorkloads are the workloads of the programs part.
func (b *bench) programWorkloads() []workload {
	runc := "io.containerd.runc.v2"
	clearCold := func() error { return os.RemoveAll(b.coldRoot) }
	yosys := []string{"/yosys.wasm", "-Q", "-T", "-p", "read_verilog /top.v; proc; opt; stat"}
	return []workload{
		{key: "rust-dwarf", title: "Rust std program with DWARF (6.3 MB), warm", runtime: runtimeName, flags: b.warm, args: []string{"/std.wasm", "0"}, want: "sum:"},
		{key: "rust-stripped", title: "the same, stripped (0.15 MB), warm", runtime: runtimeName, flags: b.warm, args: []string{"/std-stripped.wasm", "0"}, want: "sum:"},
		{key: "rust-dwarf-cli", title: "with DWARF, wazero CLI in runc", runtime: runc, flags: []string{"--runc-root", b.runcRoot}, args: []string{"/wazero", "run", "-cachedir", "/tmp/wz", "-mount", "/:/", "/std.wasm", "0"}, want: "sum:"},
		{key: "rust-stripped-cli", title: "stripped, wazero CLI in runc", runtime: runc, flags: []string{"--runc-root", b.runcRoot}, args: []string{"/wazero", "run", "-cachedir", "/tmp/wz", "-mount", "/:/", "/std-stripped.wasm", "0"}, want: "sum:"},
		{key: "yosys-cold", title: "Yosys (30 MB), empty cache", runtime: runtimeName, flags: b.cold, args: yosys, want: "Removed a total of", before: clearCold},
		{key: "yosys-warm", title: "Yosys, warm cache", runtime: runtimeName, flags: b.warm, args: yosys, want: "Removed a total of"},
	}
}

// programs times the exit of a program with DWARF against the same program
// stripped (interleaved, b.runs each, after a warm-up), and Yosys's cold
// and warm start, with the compile helper's peak memory.
func (b *bench) programs(t *testing.T) {
	for _, w := range b.programWorkloads() {
		b.workloads[w.key] = w
	}
	exitKeys := []string{"rust-dwarf", "rust-stripped", "rust-dwarf-cli", "rust-stripped-cli"}
	for _, k := range append(exitKeys, "yosys-warm") {
		if _, _, _, err := b.run(b.workloads[k]); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < b.runs; i++ {
		for _, k := range exitKeys {
			d, _, _, err := b.run(b.workloads[k])
			if err != nil {
				t.Fatal(err)
			}
			b.times[k] = append(b.times[k], d)
		}
	}
	peakFile := filepath.Join("/sys/fs/cgroup/memory", e.compileCg, "memory.max_usage_in_bytes")
	for i := 0; i < 3; i++ {
		os.WriteFile(peakFile, []byte("0"), 0o644)
		d, _, _, err := b.run(b.workloads["yosys-cold"])
		if err != nil {
			t.Fatal(err)
		}
		b.times["yosys-cold"] = append(b.times["yosys-cold"], d)
		data, _ := os.ReadFile(peakFile)
		peak, _ := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
		b.compilePeak = max(b.compilePeak, peak)
	}
	b.compiledSize = dirBytes(b.coldRoot)
	for i := 0; i < 5; i++ {
		d, _, _, err := b.run(b.workloads["yosys-warm"])
		if err != nil {
			t.Fatal(err)
		}
		b.times["yosys-warm"] = append(b.times["yosys-warm"], d)
	}
}

// dirBytes is the size of the files under dir.
func dirBytes(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// programsReport is the programs part of the report.
func (b *bench) programsReport(add func(string, ...any)) {
	if len(b.times["rust-dwarf"]) == 0 {
		return
	}
	med := func(k string) time.Duration { return median(b.times[k]) }
	add("### Real programs: exit with DWARF, and a large module")
	add("")
	add("`ctr run --rm` wall time, medians (%d interleaved runs each for the Rust program; Yosys 3 cold, 5 warm). The Rust program (integration/testdata/programs/std.rs, Debian's rustc) ends with `std::process::exit`.", b.runs)
	add("")
	add("| Workload | median | vs stripped |")
	add("| --- | ---: | ---: |")
	for _, pair := range [][2]string{{"rust-dwarf", "rust-stripped"}, {"rust-stripped", "rust-stripped"}, {"rust-dwarf-cli", "rust-stripped-cli"}, {"rust-stripped-cli", "rust-stripped-cli"}} {
		add("| %s | %s | %.2fx |", b.workloads[pair[0]].title, ms(med(pair[0])), float64(med(pair[0]))/float64(med(pair[1])))
	}
	add("| %s | %s | |", b.workloads["yosys-cold"].title, ms(med("yosys-cold")))
	add("| %s | %s | |", b.workloads["yosys-warm"].title, ms(med("yosys-warm")))
	add("")
	add("Yosys's compiled code: %s in the cache; the compile helper's peak memory (its cgroup's max usage): %s.", mb(b.compiledSize), mb(b.compilePeak))
	add("")
	extra := med("rust-dwarf") - med("rust-stripped")
	b.targets = append(b.targets, fmt.Sprintf("| exit with DWARF costs no more than without (≤ 50 ms more, the 6 MB module's read and hash included) | %s more | %s |", ms(extra), verdict(extra <= 50*time.Millisecond)))
}
