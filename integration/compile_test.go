package integration

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/cgroups"
	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/runner"
	"github.com/containerd-shim-wasm/containerd-shim-wasm/oci/image"
)

// compileBomb is a small module that is slow and hungry to compile: one
// _start of blocks blocks, each adding two of locals i32 locals into a
// third and branching on one, which keeps them all live. (500, 5000) is
// 85 KB, compiled in about 3 s with a 280 MB peak; (1000, 10000) 14 s and
// 1 GB; (2000, 20000) over a minute and about 3 GB.
func compileBomb(locals, blocks int) []byte {
	uleb := func(n int) []byte { return binary.AppendUvarint(nil, uint64(n)) }
	body := append([]byte{1}, uleb(locals)...)
	body = append(body, 0x7f) // i32
	for i := 0; i < blocks; i++ {
		a, b, c := i%locals, (i*7+1)%locals, (i*13+5)%locals
		body = append(body, 0x02, 0x40, 0x20) // block; local.get a
		body = append(body, uleb(a)...)
		body = append(body, 0x20) // local.get b
		body = append(body, uleb(b)...)
		body = append(body, 0x6a, 0x21) // i32.add; local.set c
		body = append(body, uleb(c)...)
		body = append(body, 0x20) // local.get b
		body = append(body, uleb(b)...)
		body = append(body, 0x0d, 0x00, 0x0b) // br_if 0; end
	}
	body = append(body, 0x0b)
	return module(body)
}

// invalidModule is a module whose _start does not validate (i32.add on an
// empty stack): only compiling it finds that.
func invalidModule() []byte {
	return module([]byte{0, 0x6a, 0x0b})
}

// module is a module of one exported _start () -> () with body.
func module(body []byte) []byte {
	uleb := func(n int) []byte { return binary.AppendUvarint(nil, uint64(n)) }
	section := func(id byte, b []byte) []byte {
		return append(append([]byte{id}, uleb(len(b))...), b...)
	}
	var m bytes.Buffer
	m.WriteString("\x00asm\x01\x00\x00\x00")
	m.Write(section(1, []byte{1, 0x60, 0, 0}))
	m.Write(section(3, []byte{1, 0}))
	m.Write(section(7, append([]byte{1, 6}, append([]byte("_start"), 0, 0)...)))
	code := append([]byte{1}, uleb(len(body))...)
	m.Write(section(10, append(code, body...)))
	return m.Bytes()
}

// importModules imports an image named name holding files (path: module).
func importModules(t *testing.T, name string, files map[string][]byte) {
	t.Helper()
	img := &image.Image{Name: name}
	for p, data := range files {
		img.Files = append(img.Files, image.File{Path: p, Data: data, Mode: 0o644})
	}
	importImage(t, img)
}

// optionsFile writes runtime options with extra for the cache under
// cacheRoot, and returns ctr's flags to use them.
func optionsFile(t *testing.T, cacheRoot, extra string) []string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "options.toml")
	if err := os.WriteFile(p, []byte(e.runtimeOptionsWith(cacheRoot, extra)), 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{"--runtime-config-path", p}
}

// compileGroups counts the compile helpers' cgroups (in the memory
// controller): one per compile running.
func compileGroups() int {
	n := 0
	for _, d := range cgroups.Dirs(cgroups.Root, e.compileCg) {
		if !strings.Contains(d, "/memory/") {
			continue
		}
		ents, _ := os.ReadDir(d)
		for _, ent := range ents {
			if ent.IsDir() && strings.HasPrefix(ent.Name(), "compile-") {
				n++
			}
		}
	}
	return n
}

// compileHelpers lists the running compile helpers.
func compileHelpers() []int {
	return pids(func(dir string) bool {
		b, err := os.ReadFile(filepath.Join(dir, "cmdline"))
		return err == nil && strings.HasPrefix(string(b), runner.CompilerName+"\x00")
	})
}

// compileParentValue reads a file of the compile helpers' parent cgroup
// in the memory controller, as a number; -1 if it cannot.
func compileParentValue(name string) int64 {
	for _, d := range cgroups.Dirs(cgroups.Root, e.compileCg) {
		if strings.Contains(d, "/memory/") {
			data, err := os.ReadFile(filepath.Join(d, name))
			if err == nil {
				n, _ := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
				return n
			}
		}
	}
	return -1
}

// TestCompileFailuresRemembered: a module that failed to compile (out of
// the helper's memory, or invalid) fails every later create on the node at
// once with the same reason, from the cache's record, until the options
// its compile depends on change.
func TestCompileFailuresRemembered(t *testing.T) {
	const img = "example.local/compile-failures:latest"
	importModules(t, img, map[string][]byte{"/bomb.wasm": compileBomb(500, 5001), "/invalid.wasm": invalidModule()})
	cacheRoot := filepath.Join(t.TempDir(), "cache")
	small := optionsFile(t, cacheRoot, "CompileMemoryLimit = 67108864\n")
	tests := []struct {
		module, reason string
	}{
		{"/bomb.wasm", "CompileMemoryLimit"},
		{"/invalid.wasm", "/invalid.wasm"},
	}
	for _, tt := range tests {
		start := time.Now()
		first := runImage(t, img, small, tt.module)
		tookFirst := time.Since(start)
		start = time.Now()
		again := runImage(t, img, small, tt.module)
		tookAgain := time.Since(start)
		t.Logf("%s: failed in %s, then in %s: %s", tt.module, tookFirst.Round(time.Millisecond), tookAgain.Round(time.Millisecond), strings.TrimSpace(again.stderr))
		if first.code == 0 || !strings.Contains(first.stderr, tt.reason) {
			t.Errorf("%s: first create: %+v", tt.module, first)
		}
		if again.code == 0 || !strings.Contains(again.stderr, tt.reason) || !strings.Contains(again.stderr, "remembered") {
			t.Errorf("%s: second create did not fail with the remembered reason: %+v", tt.module, again)
		}
	}
	if n := dirLen(t, filepath.Join(cacheRoot, "v1", "failed")); n != 2 {
		t.Errorf("%d failure records, want 2", n)
	}
	// With a larger limit, the bomb is compiled again, and runs.
	large := optionsFile(t, cacheRoot, "CompileMemoryLimit = 1073741824\n")
	if r := runImage(t, img, large, "/bomb.wasm"); r.code != 0 {
		t.Errorf("bomb under a larger compile limit: %+v", r)
	}
	if r := runImage(t, img, large, "/invalid.wasm"); r.code == 0 || !strings.Contains(r.stderr, "/invalid.wasm") {
		t.Errorf("invalid module under other options: %+v", r)
	}
}

// TestCompileBounds: compile bombs created at once compile one at a time
// under CompileConcurrency = 1, and under a total limit of the compile
// helpers' parent cgroup that three at once would exceed; with no
// concurrency bound, the total limit holds them, and a compile that lost
// to the others is not remembered as the module's failure.
func TestCompileBounds(t *testing.T) {
	const img = "example.local/compile-bounds:latest"
	modules := map[string][]byte{}
	for i := range 3 {
		modules["/bomb"+strconv.Itoa(i)+".wasm"] = compileBomb(500, 5010+i)
	}
	importModules(t, img, modules)
	const total = 400 << 20
	for _, tt := range []struct {
		name       string
		concurrent int
	}{{"one at a time", 1}, {"unbounded", 3}} {
		t.Run(tt.name, func(t *testing.T) {
			cacheRoot := filepath.Join(t.TempDir(), "cache")
			flags := optionsFile(t, cacheRoot, "CompileTotalMemoryLimit = "+strconv.Itoa(total)+"\nCompileConcurrency = "+strconv.Itoa(tt.concurrent)+"\n")
			var wg sync.WaitGroup
			results := make([]result, 3)
			for i := range 3 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					id := newID(t) + "-" + strconv.Itoa(i)
					stdout, stderr, err := e.ctr(ctrRunImageArgs(img, id, flags, []string{"/bomb" + strconv.Itoa(i) + ".wasm"})...)
					results[i] = result{stdout: stdout, stderr: stderr}
					var exit *exec.ExitError
					if errors.As(err, &exit) {
						results[i].code = exit.ExitCode()
					} else if err != nil {
						results[i].code = -1
					}
				}()
			}
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			peak := 0
			for running := true; running; {
				select {
				case <-done:
					running = false
				case <-time.After(5 * time.Millisecond):
					peak = max(peak, compileGroups())
				}
			}
			limit, usage := compileParentValue("memory.limit_in_bytes"), compileParentValue("memory.max_usage_in_bytes")
			t.Logf("%d compiles at most at once; the compile cgroup's limit %d MiB, its peak %d MiB", peak, limit>>20, usage>>20)
			if limit != total {
				t.Errorf("compile cgroup's memory limit %d, want %d", limit, total)
			}
			if usage > total+total/64 { // the kernel charges in batches: a few pages past
				t.Errorf("compile cgroup's peak %d past its limit %d", usage, total)
			}
			if peak < 1 || peak > tt.concurrent {
				t.Errorf("%d compiles ran at once, want 1 to %d", peak, tt.concurrent)
			}
			failed := 0
			for i, r := range results {
				if r.code != 0 {
					failed++
				}
				switch {
				case r.code == 0:
				case tt.concurrent == 1:
					t.Errorf("bomb %d, compiled alone: %+v", i, r)
				case !strings.Contains(r.stderr, "CompileTotalMemoryLimit"):
					t.Errorf("bomb %d failed for another reason than the total limit: %+v", i, r)
				default:
					// Not the module's failure: alone, it compiles.
					if again := runImage(t, img, flags, "/bomb"+strconv.Itoa(i)+".wasm"); again.code != 0 {
						t.Errorf("bomb %d, after losing to the others: %+v", i, again)
					}
				}
			}
			t.Logf("%d of 3 failed for the total limit", failed)
			if n := compileGroups(); n != 0 {
				t.Errorf("%d compile cgroups left", n)
			}
		})
	}
}

// TestCompileOutlivesCreate: when containerd gives up on a create (its
// client's deadline passed) while the module compiles, the compile helper
// is killed and its cgroup removed, not left compiling for nobody.
func TestCompileOutlivesCreate(t *testing.T) {
	const img = "example.local/compile-giveup:latest"
	importModules(t, img, map[string][]byte{"/bomb.wasm": compileBomb(2000, 20000)})
	// A limit the bomb does not reach in the 4 s, however fast the machine:
	// the create must end by its deadline, not by an out of memory.
	flags := optionsFile(t, filepath.Join(t.TempDir(), "cache"), "CompileMemoryLimit = 4294967296\n")
	id := newID(t)
	start := time.Now()
	_, stderr, err := e.ctr(append([]string{"--timeout", "4s"}, ctrRunImageArgs(img, id, flags, []string{"/bomb.wasm"})...)...)
	if err == nil || !strings.Contains(stderr, "deadline") {
		t.Fatalf("create of a compile bomb with a 4 s deadline: %v: %s", err, stderr)
	}
	var groups, helpers int
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		groups, helpers = compileGroups(), len(compileHelpers())
		if groups == 0 && helpers == 0 {
			break
		}
	}
	t.Logf("containerd gave up after 4 s; %d compile helpers and %d compile cgroups %s later", helpers, groups, (time.Since(start) - 4*time.Second).Round(time.Millisecond))
	if groups != 0 || helpers != 0 {
		t.Errorf("%d compile helpers and %d compile cgroups left after containerd gave up", helpers, groups)
	}
	e.ctr("task", "delete", "--force", id)
	e.ctr("container", "delete", id)
}
