package integration

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/runner"
)

// TestExec runs Wasm modules (the container's own and another), a native
// program and bad entrypoints in a running Wasm container: each with its
// own args, stdio and exit status, confined as the container's guest is,
// and the container runs on.
func TestExec(t *testing.T) {
	evs := watchEvents(t)
	traced := filepath.Join(t.TempDir(), "options.toml")
	if err := os.WriteFile(traced, []byte(e.runtimeOptionsWith(e.cacheRoot, "Trace = true\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	b := startBackground(t, []string{"--cwd", "/data", "--env", "FOO=bar", "--runtime-config-path", traced}, "/probe.wasm", "sleep")
	b.waitOutput(t, "sleeping")
	// shimFDs lists the shim's descriptors by what they point to. Not
	// counted: pidfds, Go's handles on processes the shim started, which its
	// garbage collector closes.
	shimFDs := func() []string {
		pids := shimPids(e.shim)
		for deadline := time.Now().Add(5 * time.Second); len(pids) != 1 && time.Now().Before(deadline); pids = shimPids(e.shim) {
			time.Sleep(50 * time.Millisecond) // a compile helper or a bootstrap still ending
		}
		if len(pids) != 1 {
			t.Fatalf("shim processes %v", pids)
		}
		ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pids[0]))
		var fds []string
		for _, e := range ents {
			if target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pids[0], e.Name())); target != "anon_inode:[pidfd]" {
				fds = append(fds, e.Name()+" -> "+target)
			}
		}
		return fds
	}
	fds := shimFDs()
	tests := []struct {
		name   string
		flags  []string
		args   []string
		code   int
		stdout []string // substrings, in order
		stderr string
	}{
		{"same module", nil, []string{"/probe.wasm", "echo", "a b", "c"}, 0, []string{"[a b]\n[c]\n"}, ""},
		{"its environment", nil, []string{"/probe.wasm", "env"}, 0, []string{"FOO=bar\n", "PWD=/data\n"}, ""},
		{"working directory", []string{"--cwd", "/work"}, []string{"/probe.wasm", "cat", "rel.txt"}, 0, []string{"relative to the working directory\n"}, ""},
		{"another module", nil, []string{"/exit42.wasm"}, 42, nil, ""},
		{"by PATH", nil, []string{"probe", "echo", "found"}, 0, []string{"[found]\n"}, ""},
		{"stderr", nil, []string{"/probe.wasm", "stderr"}, 0, []string{"to stdout\n"}, "to stderr"},
		{"confined", nil, []string{"/probe.wasm", "open", "/proc/self/mem", "/dev/.containerd-shim-wasm-runner", "/dev/.containerd-shim-wasm-cache", "/data/hello.txt"}, 0,
			[]string{"open /proc/self/mem: refused", "open /dev/.containerd-shim-wasm-runner: refused", "open /dev/.containerd-shim-wasm-cache: refused", "open /data/hello.txt: OPENED"}, ""},
		{"native", nil, []string{"/bin/native", "x"}, 0, []string{`native hello, args ["x"]`}, ""},
		{"trap", nil, []string{"/trap.wasm"}, 134, nil, "unreachable"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := execIn(t, b.id, "e"+strings.Repeat("x", i), tt.flags, tt.args...)
			if r.code != tt.code {
				t.Errorf("exit status %d, want %d (stdout %q, stderr %q)", r.code, tt.code, r.stdout, r.stderr)
			}
			rest := r.stdout
			for _, want := range tt.stdout {
				i := strings.Index(rest, want)
				if i < 0 {
					t.Errorf("stdout %q lacks %q", r.stdout, want)
					break
				}
				rest = rest[i+len(want):]
			}
			if !strings.Contains(r.stderr, tt.stderr) {
				t.Errorf("stderr %q lacks %q", r.stderr, tt.stderr)
			}
		})
	}
	// Bad entrypoints fail the exec with the reason, and the container
	// runs on.
	for _, bad := range []struct{ arg0, want string }{
		{"/text.txt", "neither a WebAssembly module nor a native executable"},
		{"/missing.wasm", "no such file in the container"},
		{"/corrupt.wasm", "corrupt.wasm"},
		{"/nostart.wasm", "_start"},
	} {
		r := execIn(t, b.id, "bad", nil, bad.arg0)
		if r.code == 0 || !strings.Contains(r.stderr, bad.want) {
			t.Errorf("exec %s: exit %d, stderr %q; want an error with %q", bad.arg0, r.code, r.stderr, bad.want)
		}
	}
	if st := taskStatus(t, b.id); st != "RUNNING" {
		t.Fatalf("container %s after the execs: %q", b.id, st)
	}
	// Every module exec'd, the container's own or another (exec'd above),
	// is served from the node's compile cache, as an entrypoint is: its
	// runner compiles nothing.
	for _, tt := range []struct {
		args []string
		want string
	}{{[]string{"/probe.wasm", "echo", "x"}, runner.CodeHit}, {[]string{"/exit42.wasm"}, runner.CodeHit}} {
		r := execIn(t, b.id, "traced", nil, tt.args...)
		if code := codeOf(t, r.stderr); code != tt.want {
			t.Errorf("exec of %s: code %q, want %q", tt.args[0], code, tt.want)
		}
	}
	// (A runner's reason pipe is closed once it has exited.)
	deadline := time.Now().Add(5 * time.Second)
	for now := shimFDs(); len(now) > len(fds); now = shimFDs() {
		if time.Now().After(deadline) {
			t.Errorf("the shim holds %d descriptors after the execs, %d before:\n%s\nbefore:\n%s", len(now), len(fds), strings.Join(now, "\n"), strings.Join(fds, "\n"))
			break
		}
		time.Sleep(50 * time.Millisecond)
	}

	// A long-running exec, killed: it ends, the container does not.
	tick := exec.Command(e.ctrBin, "--address", e.address, "task", "exec", "--exec-id", "ticker", b.id, "/probe.wasm", "tick")
	var out lockedBuffer
	tick.Stdout = &out
	if err := tick.Start(); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "tick 2") {
		if time.Now().After(deadline) {
			t.Fatalf("the ticking exec printed %q in 30 s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	ps, _, _ := e.ctr("task", "ps", b.id)
	if n := len(strings.Split(strings.TrimSpace(ps), "\n")) - 1; n != 2 {
		t.Errorf("task ps lists %d processes, want the runner and the exec's: %q", n, ps)
	}
	// The exec is the OOM killer's first pick in the container, not the
	// container's process.
	init := waitRunning(t, b.id)
	for _, l := range strings.Split(strings.TrimSpace(ps), "\n")[1:] {
		pid, _ := strconv.Atoi(strings.Fields(l)[0])
		adj, _ := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", pid))
		if got := strings.TrimSpace(string(adj)); (got == "1000") != (pid != init) {
			t.Errorf("process %d (init %d): oom_score_adj %q; want 1000 for the exec alone", pid, init, got)
		}
	}
	if _, stderr, err := e.ctr("task", "kill", "--exec-id", "ticker", "-s", "SIGTERM", b.id); err != nil {
		t.Fatalf("kill exec: %v: %s", err, stderr)
	}
	var exit *exec.ExitError
	if err := tick.Wait(); !errors.As(err, &exit) || exit.ExitCode() != 143 {
		t.Errorf("killed exec ended with %v, want 143", err)
	}
	if st := taskStatus(t, b.id); st != "RUNNING" {
		t.Errorf("container after its exec was killed: %q", st)
	}
	for _, topic := range []string{"/tasks/exec-added", "/tasks/exec-started"} {
		waitEvent(t, evs, topic, "ticker")
	}
	deadline = time.Now().Add(10 * time.Second)
	for !strings.Contains(evs.String(), `"id":"ticker","pid"`) || !strings.Contains(evs.String(), `"exit_status":143`) {
		if time.Now().After(deadline) {
			t.Errorf("no exit event for the exec: %q", evs.String())
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.terminate(t)
}

// TestExecCompiledOnce: a module exec'd into a container that is not its
// entrypoint is compiled once, by the shim into the node's compile cache,
// and every later exec of it loads that code, as a container's entrypoint
// does (its runner used to compile it at every exec).
func TestExecCompiledOnce(t *testing.T) {
	flags, cacheDir := ownCache(t, "")
	b := startBackground(t, flags, "/probe.wasm", "sleep")
	b.waitOutput(t, "sleeping")
	entries := func() int { return dirLen(t, filepath.Join(cacheDir, "entries")) }
	if n := entries(); n != 1 {
		t.Fatalf("%d entries in the cache with the container's own module, want 1", n)
	}
	for i, want := range []string{runner.CodeMiss, runner.CodeHit, runner.CodeHit} {
		r := execIn(t, b.id, fmt.Sprintf("exec%d", i), nil, "/exit42.wasm")
		if r.code != 42 {
			t.Errorf("exec %d: exit %d (stderr %q), want 42", i, r.code, r.stderr)
		}
		if code := codeOf(t, r.stderr); code != want {
			t.Errorf("exec %d: code %q, want %q", i, code, want)
		}
	}
	if n := entries(); n != 2 {
		t.Errorf("%d entries in the cache after the execs, want 2", n)
	}
	// Nothing of the execs' code is left pinned once they have exited.
	deadline := time.Now().Add(5 * time.Second)
	for dirLen(t, filepath.Join(cacheDir, "pins")) > 0 { // the container's own went once mounted
		if time.Now().After(deadline) {
			des, _ := os.ReadDir(filepath.Join(cacheDir, "pins"))
			t.Errorf("pins left after the execs: %v", des)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.terminate(t)
}

// TestExecNativeContainer: in a native container of the Wasm runtime a
// native exec runs; a Wasm module is refused with the reason, and the
// container runs on.
func TestExecNativeContainer(t *testing.T) {
	b := startBackground(t, nil, "/bin/native", "sleep")
	b.waitOutput(t, "sleeping")
	if r := execIn(t, b.id, "n", nil, "/bin/native", "hi"); r.code != 0 || !strings.Contains(r.stdout, `native hello, args ["hi"]`) {
		t.Errorf("native exec: %+v", r)
	}
	if r := execIn(t, b.id, "w", nil, "/probe.wasm", "echo"); r.code == 0 || !strings.Contains(r.stderr, "/probe.wasm: a Wasm module runs only in a container whose own entrypoint is Wasm") {
		t.Errorf("Wasm exec into a native container: %+v", r)
	}
	if st := taskStatus(t, b.id); st != "RUNNING" {
		t.Errorf("container after the execs: %q", st)
	}
	if _, stderr, err := e.ctr("task", "kill", "-s", "SIGKILL", b.id); err != nil {
		t.Fatalf("kill: %v: %s", err, stderr)
	}
	if r := b.wait(t, 10*time.Second); r.code != 137 {
		t.Errorf("exit status %d, want 137", r.code)
	}
	assertClean(t, b.id)
}
