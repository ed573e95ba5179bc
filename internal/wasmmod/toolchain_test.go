package wasmmod

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// wat2wasm assembles a module from the text format with wabt's wat2wasm,
// or skips the test if it is not installed.
func wat2wasm(t *testing.T, src string, flags ...string) []byte {
	t.Helper()
	tool, err := exec.LookPath("wat2wasm")
	if err != nil {
		t.Skip("wat2wasm (wabt) is not installed")
	}
	dir := t.TempDir()
	in, out := filepath.Join(dir, "m.wat"), filepath.Join(dir, "m.wasm")
	if err := os.WriteFile(in, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(tool, append(flags, "-o", out, in)...)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("wat2wasm: %v\n%s", err, msg)
	}
	bin, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// manyFuncs returns a module of n exported functions of various
// signatures, in the text format.
func manyFuncs(n int) string {
	names := []string{"i32", "i64", "f32", "f64", "v128", "funcref", "externref"}
	var b strings.Builder
	b.WriteString("(module\n")
	for i := range n {
		fmt.Fprintf(&b, "  (func (export \"f%d\") (param", i)
		for j := range i % 9 {
			b.WriteString(" " + names[(i+j)%len(names)])
		}
		b.WriteString(") (result")
		for j := range i % 3 {
			b.WriteString(" " + names[(i*j)%len(names)])
		}
		b.WriteString(") unreachable)\n")
	}
	b.WriteString(")\n")
	return b.String()
}

func TestWat(t *testing.T) {
	rt := wazeroRuntime(t)
	for _, tc := range []struct {
		name  string
		src   string
		flags []string
		entry map[string]string
	}{
		{name: "wasi command", src: `(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 8) "hello\n")
  (func $main (export "_start")
    (i32.store (i32.const 0) (i32.const 8))
    (i32.store (i32.const 4) (i32.const 6))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 20)))
    (call $proc_exit (i32.const 0))))`,
			entry: map[string]string{"_start": "", "memory": `no exported function "memory" (it is a memory export)`}},
		{name: "reactor", src: `(module
  (memory (export "memory") 1)
  (global (export "counter") (mut i32) (i32.const 0))
  (table (export "table") 1 funcref)
  (func (export "_initialize"))
  (func (export "add") (param i32 i32) (result i32) local.get 0 local.get 1 i32.add))`,
			entry: map[string]string{"_start": `no exported function "_start" (exports: _initialize, add)`, "_initialize": "",
				"add": `exported function "add" has type (i32, i32) -> (i32); an entry function takes no parameters and returns nothing, as WASI's _start`}},
		{name: "params and results", src: `(module (func (export "_start") (param i32 i64) (result f32 f64) unreachable))`,
			entry: map[string]string{"_start": `exported function "_start" has type (i32, i64) -> (f32, f64)`}},
		{name: "results", src: `(module (func (export "_start") (result i32) i32.const 0))`,
			entry: map[string]string{"_start": `exported function "_start" has type () -> (i32)`}},
		{name: "re-exported import", src: `(module
  (type $t (func (param f64)))
  (import "env" "start" (func $s (type $t)))
  (import "env" "mem" (memory 1))
  (import "env" "g" (global $g i32))
  (import "env" "tbl" (table 2 externref))
  (func $main (export "main") call $helper)
  (func $helper)
  (export "_start" (func $s)))`,
			entry: map[string]string{"_start": `exported function "_start" has type (f64) -> ()`, "main": ""}},
		{name: "vectors and references", src: `(module
  (func (export "v") (param v128) (result v128) local.get 0)
  (func (export "r") (param funcref externref) unreachable)
  (func (export "_start")))`,
			entry: map[string]string{"_start": "", "v": "has type (v128) -> (v128)", "r": "has type (funcref, externref) -> ()"}},
		{name: "shared memory", src: `(module (import "env" "mem" (memory 1 2 shared)) (func (export "_start")))`, flags: []string{"--enable-threads"},
			entry: map[string]string{"_start": ""}},
		{name: "many functions", src: manyFuncs(300),
			entry: map[string]string{"f0": "", "f1": "has type (i64) -> (i32); an entry function takes no parameters and returns nothing", "_start": "(exports: f0, f1, f10, f100, f101, and 295 more)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin := wat2wasm(t, tc.src, tc.flags...)
			e, err := ReadExports(bytes.NewReader(bin))
			if err != nil {
				t.Fatal(err)
			}
			for fn, want := range tc.entry {
				err := e.CheckEntry(fn)
				if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
					t.Errorf("CheckEntry(%q) = %v, want %q", fn, err, want)
				}
			}
			if err := crossCheck(t, rt, bin); err != nil {
				t.Logf("not compared with wazero: %v", err)
			}
		})
	}
}

// goBuild builds a Go program for wasip1, or skips the test if it cannot.
func goBuild(t testing.TB, src string, flags ...string) (path string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds a Go program")
	}
	tool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module hello\n\ngo 1.24\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "hello.wasm")
	cmd := exec.Command(tool, append(append([]string{"build"}, flags...), "-o", out, ".")...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "GOTOOLCHAIN=local", "GOWORK=off", "GOFLAGS=")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("GOOS=wasip1 GOARCH=wasm go build: %v\n%s", err, msg)
	}
	return out
}

func TestGoCommand(t *testing.T) {
	path := goBuild(t, "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hello\") }\n")
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	c := &countingReader{r: f}
	e, err := ReadExports(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.CheckEntry("_start"); err != nil {
		t.Fatal(err)
	}
	if got, ok := e.Func("_start"); !ok || len(got.Params)+len(got.Results) != 0 {
		t.Errorf("_start: %v, %v", got, ok)
	}
	t.Logf("read %d bytes of %d; exports: %v", c.n, fi.Size(), collect(e))
	if c.n > 64<<10 {
		t.Errorf("read %d bytes of %d", c.n, fi.Size())
	}
	bin, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := crossCheck(t, wazeroRuntime(t), bin); err != nil {
		t.Fatal(err)
	}
}

func TestGoReactor(t *testing.T) {
	path := goBuild(t, "package main\n\n//go:wasmexport add\nfunc add(a, b int32) int64 { return int64(a) + int64(b) }\n\nfunc main() {}\n", "-buildmode=c-shared")
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	e, err := ReadExports(bufio.NewReader(f))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.CheckEntry("_initialize"); err != nil {
		t.Error(err)
	}
	want := `exported function "add" has type (i32, i32) -> (i64); an entry function takes no parameters and returns nothing, as WASI's _start`
	if err := e.CheckEntry("add"); err == nil || err.Error() != want {
		t.Errorf("CheckEntry(add) = %v, want %s", err, want)
	}
	if err := e.CheckEntry("_start"); err == nil || !strings.Contains(err.Error(), "(exports: _initialize, add)") {
		t.Errorf("CheckEntry(_start) = %v", err)
	}
}

// BenchmarkReadExportsGo is what checkEntry costs a Create of the Go hello
// (2.6 MB): open the module, read it buffered up to its exports, check
// _start.
func BenchmarkReadExportsGo(b *testing.B) {
	path := goBuild(b, "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hello\") }\n")
	b.ReportAllocs()
	for b.Loop() {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		e, err := ReadExports(bufio.NewReader(f))
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
		if err := e.CheckEntry("_start"); err != nil {
			b.Fatal(err)
		}
	}
}
