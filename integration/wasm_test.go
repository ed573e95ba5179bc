package integration

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestOutput(t *testing.T) {
	tests := []struct {
		name       string
		flags      []string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{name: "stdout and stderr", args: []string{"/probe.wasm", "stderr"}, wantStdout: "to stdout\n", wantStderr: "to stderr"},
		{name: "args with spaces", args: []string{"/probe.wasm", "echo", "a b", " c ", ""}, wantStdout: "[a b]\n[ c ]\n[]\n"},
		{name: "exit status via proc_exit", args: []string{"/exit42.wasm"}, wantCode: 42},
		{name: "exit status over 255 is 255", args: []string{"/exit300.wasm"}, wantCode: 255},
		{name: "Go guest exit status", args: []string{"/probe.wasm", "exit", "7"}, wantCode: 7},
		{name: "entry function", args: []string{"/funcs.wasm#greet"}, wantStdout: "hello from greet\n"},
		{name: "default entry of the same module", args: []string{"/funcs.wasm"}, wantCode: 3},
		{name: "symlinked module", args: []string{"/link.wasm", "echo", "via link"}, wantStdout: "[via link]\n"},
		{name: "bare name on PATH", args: []string{"probe", "echo", "on path"}, wantStdout: "[on path]\n"},
		{name: "file shipped in the image", args: []string{"/probe.wasm", "cat", "/data/hello.txt"}, wantStdout: "hello from the image\n"},
		{name: "write to a writable rootfs", args: []string{"/probe.wasm", "write", "/tmp/out.txt", "fresh"}, wantStdout: "wrote fresh\n"},
		{name: "write to a read-only rootfs fails", flags: []string{"--read-only"}, args: []string{"/probe.wasm", "write", "/tmp/out.txt", "fresh"}, wantCode: 1, wantStderr: "Read-only file system"},
		{name: "read from a read-only rootfs", flags: []string{"--read-only"}, args: []string{"/probe.wasm", "cat", "/data/hello.txt"}, wantStdout: "hello from the image\n"},
		{name: "cwd", flags: []string{"--cwd", "/work"}, args: []string{"/probe.wasm", "cwd"}, wantStdout: "/work\n"},
		{name: "relative path from cwd", flags: []string{"--cwd", "/work"}, args: []string{"/probe.wasm", "cat", "rel.txt"}, wantStdout: "relative to the working directory\n"},
		{name: "relative module path from cwd", flags: []string{"--cwd", "/data"}, args: []string{"../probe.wasm", "echo", "rel"}, wantStdout: "[rel]\n"},
		{name: "native static binary", args: []string{"/bin/native", "x y"}, wantStdout: "native hello, args [\"x y\"]\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, tt.flags, tt.args...)
			if r.code != tt.wantCode {
				t.Errorf("exit status %d, want %d; stdout %q stderr %q", r.code, tt.wantCode, r.stdout, r.stderr)
			}
			if tt.wantStdout != "" && r.stdout != tt.wantStdout {
				t.Errorf("stdout %q, want %q", r.stdout, tt.wantStdout)
			}
			if tt.wantStdout == "" && tt.wantCode != 0 && r.stdout != "" {
				t.Errorf("unexpected stdout %q", r.stdout)
			}
			if !strings.Contains(r.stderr, tt.wantStderr) {
				t.Errorf("stderr %q, want it to contain %q", r.stderr, tt.wantStderr)
			}
		})
	}
}

func TestTrap(t *testing.T) {
	id, r := runNamed(t, nil, nil, "/trap.wasm")
	if r.code != 134 {
		t.Errorf("exit status %d, want 134 for a trap", r.code)
	}
	if !strings.Contains(r.stderr, "unreachable") {
		t.Errorf("stderr %q does not give the trap", r.stderr)
	}
	// The shim's log has it too, with the container's names.
	if l := shimLog(t, id, `"wasm guest failed"`); !strings.Contains(l, "unreachable") || !strings.Contains(l, "namespace=default") {
		t.Errorf("shim log: %s", l)
	}
}

// TestStdin pipes input through. The input ends only once the task runs:
// ctr closes a task's stdin only if its input ends after the task was
// created (the same holds for containerd's runc shim).
func TestStdin(t *testing.T) {
	b := startBackgroundIn(t, true, nil, "/probe.wasm", "stdin")
	waitRunning(t, b.id)
	if _, err := io.WriteString(b.stdin, "line one\nline two\n"); err != nil {
		t.Fatal(err)
	}
	b.stdin.Close()
	if r := b.wait(t, 30*time.Second); r.code != 0 || r.stdout != "line one\nline two\n" {
		t.Fatalf("got %+v, want stdin echoed", r)
	}
	assertClean(t, b.id)
}

// TestEnv: the guest gets process.env, PWD, and HOME as runc sets it for
// a native process of the same spec (the image has no /etc/passwd: "/"),
// unless the spec sets it; nothing of the shim's or the runner's own.
func TestEnv(t *testing.T) {
	const path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, tt := range []struct {
		name  string
		flags []string
		want  []string
	}{
		{"spec's", []string{"--env", "FOO=bar baz", "--env", "EMPTY=", "--env", "GOGC=1"},
			[]string{"EMPTY=", "FOO=bar baz", "GOGC=1", "HOME=/", path, "PWD=/"}},
		{"HOME set", []string{"--env", "HOME=/data"}, []string{"HOME=/data", path, "PWD=/"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, tt.flags, "/probe.wasm", "env")
			if r.code != 0 {
				t.Fatalf("exit status %d: %s", r.code, r.stderr)
			}
			if got := strings.Split(strings.TrimSpace(r.stdout), "\n"); !slices.Equal(got, tt.want) {
				t.Errorf("guest env\n%s\nwant exactly\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

// TestStdioPaths: a guest writing to /dev/stdout, /dev/stderr or
// /dev/fd/N (symlinks into procfs in a container) writes to its own
// stdio, as a native program does; /dev/fd/3 stays out of reach.
func TestStdioPaths(t *testing.T) {
	for _, tt := range []struct {
		path           string
		stdout, stderr string
	}{
		{"/dev/stdout", "to stdout by name", ""},
		{"/dev/fd/1", "to fd 1 by name", ""},
		{"/dev/stderr", "", "to stderr by name"},
		{"/dev/fd/2", "", "to fd 2 by name"},
	} {
		text := tt.stdout + tt.stderr
		r := run(t, nil, "/probe.wasm", "to", tt.path, text)
		if r.code != 0 || r.stdout != tt.stdout || r.stderr != tt.stderr {
			t.Errorf("write to %s: %+v, want stdout %q and stderr %q", tt.path, r, tt.stdout, tt.stderr)
		}
	}
	if r := run(t, nil, "/probe.wasm", "to", "/dev/fd/3", "x"); r.code == 0 {
		t.Errorf("write to /dev/fd/3: %+v, want it refused", r)
	}
}

// TestGuestConfinement: the guest reaches neither procfs nor sysfs (through
// any path or symlink), nor host files through ../ or symlinks.
func TestGuestConfinement(t *testing.T) {
	secret := filepath.Join(e.dir, hostSecretName)
	paths := []string{
		"/proc/self/mem", "/proc/self/fd/0", "/proc/self/fd", "/proc/1/environ", "/proc",
		"/sys", "/sys/kernel", "/mem-link", "/fd-link", "/fd-link/1",
		"/dev/.containerd-shim-wasm-runner", "/dev/.containerd-shim-wasm-cache",
		"/dev/.containerd-shim-wasm-cache/any",
		"/dev/.containerd-shim-wasm-cgroup", "/dev/.containerd-shim-wasm-cgroup/memory",
		"/dev/.containerd-shim-wasm-cgroup/memory/memory.limit_in_bytes",
		secret, "/../../../../.." + secret, "/escape-link", "/escape-dir/" + hostSecretName,
		"/data/../../../.." + secret,
	}
	r := run(t, nil, append([]string{"/probe.wasm", "open"}, paths...)...)
	if r.code != 0 {
		t.Fatalf("probe failed: %+v", r)
	}
	for _, p := range paths {
		line := findLine(r.stdout, "open "+p+": ")
		if line == "" {
			t.Errorf("no report for %s in %q", p, r.stdout)
			continue
		}
		if !strings.Contains(line, "refused") {
			t.Errorf("guest reached %s: %s", p, line)
		}
	}
	if strings.Contains(r.stdout, "HOST SECRET") {
		t.Errorf("guest read the host's file")
	}
	w := run(t, nil, "/probe.wasm", "openw", "/proc/self/mem", "/mem-link", "/sys/kernel/mm")
	for _, p := range []string{"/proc/self/mem", "/mem-link", "/sys/kernel/mm"} {
		if line := findLine(w.stdout, "openw "+p+": "); !strings.Contains(line, "refused") {
			t.Errorf("guest opened %s for writing: %q", p, line)
		}
	}
	// Nor through symlinks the guest makes itself, however they are spelt.
	targets := []string{"/proc/self/mem", "../proc/self/mem", "../proc/self/fd/0", "nowhere/../../proc/self/mem", "nowhere/../../proc/self/fd/1", "../sys/kernel/../kernel", "../../../../proc", "../dev/.containerd-shim-wasm-runner", "../dev/.containerd-shim-wasm-cache", "../dev/.containerd-shim-wasm-cgroup/memory"}
	l := run(t, nil, append([]string{"/probe.wasm", "linkopen"}, targets...)...)
	for _, target := range targets {
		if line := findLine(l.stdout, "linkopen "+target+": "); !strings.Contains(line, "refused") {
			t.Errorf("guest reached %s through its own symlink: %q (stderr %q)", target, line, l.stderr)
		}
	}
	// The runner's configuration is no file in the container.
	if r := run(t, nil, "/probe.wasm", "ls", "/dev"); strings.Contains(r.stdout, "config") || !strings.Contains(r.stdout, ".containerd-shim-wasm-runner") {
		t.Errorf("/dev in the container holds %q; want the runner and no configuration file", r.stdout)
	}
	// The guest does see the rest of its root.
	if r := run(t, nil, "/probe.wasm", "open", "/data/hello.txt"); !strings.Contains(r.stdout, "OPENED") {
		t.Errorf("guest cannot open its own files: %q", r.stdout)
	}
}

// TestKill: a terminating signal ends a spinning guest, which cannot handle
// it, and is reported as 128 + the signal, also after the runner went
// through a GC. (It is sent as SIGKILL: a guest left to end by itself
// would spin until the wait's deadline. How fast it ends is measured by the
// TestCreatedModes: files and directories a guest creates get the modes a
// native process's would under runc's umask (0022): 0644 and 0755,
// whatever the guest asked for (WASI carries no mode), so that another
// user of a shared volume can read them.
func TestCreatedModes(t *testing.T) {
	out := t.TempDir()
	os.Chmod(out, 0o777)
	r := run(t, []string{"--mount", "type=bind,src=" + out + ",dst=/out,options=rbind:rw"}, "/probe.wasm", "mkfiles", "/out")
	if r.code != 0 || r.stdout != "made\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	for name, want := range map[string]os.FileMode{"d": 0o755, "f": 0o644, "d/f": 0o644} {
		st, err := os.Stat(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode().Perm(); got != want {
			t.Errorf("%s: mode %04o, want %04o", name, got, want)
		}
	}
}

// benchmark, not here.)
func TestKill(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		signal string
		want   int
	}{
		{"SIGTERM spinning", []string{"spin"}, "SIGTERM", 143},
		{"SIGTERM spinning after GC", []string{"spin", "gc"}, "SIGTERM", 143},
		{"SIGINT", []string{"spin"}, "SIGINT", 130},
		{"SIGKILL", []string{"spin"}, "SIGKILL", 137},
		{"SIGTERM sleeping", []string{"sleep"}, "SIGTERM", 143},
		{"SIGTERM to all processes", []string{"spin"}, "SIGTERM --all", 143},
		{"SIGHUP", []string{"spin"}, "SIGHUP", 129},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := startBackground(t, nil, append([]string{"/probe.wasm"}, tt.args...)...)
			want := "spinning"
			if tt.args[0] == "sleep" {
				want = "sleeping"
			}
			b.waitOutput(t, want)
			sig, all, _ := strings.Cut(tt.signal, " ")
			args := []string{"task", "kill", "-s", sig, b.id}
			if all != "" {
				args = []string{"task", "kill", all, "-s", sig, b.id}
			}
			if _, stderr, err := e.ctr(args...); err != nil {
				t.Fatalf("kill: %v: %s", err, stderr)
			}
			r := b.wait(t, 30*time.Second)
			if r.code != tt.want {
				t.Errorf("exit status %d, want %d (stderr %q)", r.code, tt.want, r.stderr)
			}
			assertClean(t, b.id)
		})
	}
}

// TestRunnerDescriptors: the runner holds no descriptor but the guest's
// stdio, the root it pre-opens and the Go runtime's poller.
func TestRunnerDescriptors(t *testing.T) {
	b := startBackground(t, nil, "/probe.wasm", "sleep")
	b.waitOutput(t, "sleeping")
	pids := runnerPids()
	if len(pids) != 1 {
		t.Fatalf("runner processes %v, want one", pids)
	}
	fdDir := filepath.Join("/proc", strconv.Itoa(pids[0]), "fd")
	ents, err := os.ReadDir(fdDir)
	if err != nil {
		t.Fatal(err)
	}
	stdio := map[string]bool{}
	for _, fd := range []string{"0", "1", "2"} {
		target, _ := os.Readlink(filepath.Join(fdDir, fd))
		stdio[target] = true
	}
	for _, ent := range ents {
		target, _ := os.Readlink(filepath.Join(fdDir, ent.Name()))
		switch {
		case ent.Name() == "0" || ent.Name() == "1" || ent.Name() == "2":
		case stdio[target]: // wazero's own handle on the guest's stdio
		case target == "/": // the guest's pre-opened root
		case target == "anon_inode:[eventpoll]" || target == "anon_inode:[eventfd]": // the Go runtime's poller
		case ent.Name() == "4" && strings.HasPrefix(target, "pipe:") && writeOnly(t, pids[0], 4):
			// the write end of the pipe on which the runner tells the shim
			// why the guest failed
		default:
			t.Errorf("runner holds fd %s -> %s", ent.Name(), target)
		}
	}
	env, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pids[0]), "environ"))
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range strings.Split(string(env), "\x00") {
		if kv != "" && !strings.HasPrefix(kv, "HOME=") {
			t.Errorf("runner environment has %q; it must be fixed", kv)
		}
	}
}

// TestStopSignals: stop and continue signals reach a Wasm task as they are
// (only terminating signals become SIGKILL).
func TestStopSignals(t *testing.T) {
	b := startBackground(t, nil, "/probe.wasm", "spin")
	b.waitOutput(t, "spinning")
	pids := runnerPids()
	if len(pids) != 1 {
		t.Fatalf("runner processes %v, want one", pids)
	}
	state := func() string {
		s, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pids[0]), "status"))
		for _, l := range strings.Split(string(s), "\n") {
			if strings.HasPrefix(l, "State:") {
				return strings.Fields(l)[1]
			}
		}
		return ""
	}
	// The thread group leader's state: T when stopped; otherwise R or S
	// (the guest may spin on another thread).
	waitState := func(want string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for (want == "T") != (state() == "T") {
			if time.Now().After(deadline) {
				t.Fatalf("runner state %q, want %q", state(), want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, step := range []struct{ sig, state string }{{"SIGSTOP", "T"}, {"SIGCONT", "running"}} {
		if _, stderr, err := e.ctr("task", "kill", "-s", step.sig, b.id); err != nil {
			t.Fatalf("kill -s %s: %v: %s", step.sig, err, stderr)
		}
		waitState(step.state)
	}
	b.terminate(t)
}

// TestClocksAndRandom: the guest's clocks, sleep and random are real, not
// wazero's deterministic defaults.
func TestClocksAndRandom(t *testing.T) {
	var randoms []string
	for i := 0; i < 2; i++ {
		before := time.Now().Unix()
		r := run(t, nil, "/probe.wasm", "clock")
		if r.code != 0 {
			t.Fatalf("probe: %+v", r)
		}
		values := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
			k, v, _ := strings.Cut(l, " ")
			values[k] = v
		}
		for _, k := range []string{"unix", "slept", "random"} {
			if values[k] == "" {
				t.Fatalf("run %d: no %q line in %q", i, k, r.stdout)
			}
		}
		unix, _ := strconv.ParseInt(values["unix"], 10, 64)
		if unix < before-1 || unix > time.Now().Unix()+1 {
			t.Errorf("guest wall clock %d, host %d", unix, before)
		}
		if ms, _ := strconv.Atoi(values["slept"]); ms < 200 {
			t.Errorf("a 200 ms sleep took %d ms on the guest's monotonic clock", ms)
		}
		randoms = append(randoms, values["random"])
	}
	if randoms[0] == randoms[1] || randoms[0] == strings.Repeat("0", 32) {
		t.Errorf("random bytes repeat across runs: %v", randoms)
	}
}

// TestLogURI: stdout and stderr go to a file:// log URI, as for runc
// containers.
func TestLogURI(t *testing.T) {
	log := filepath.Join(e.dir, "guest.log")
	r := run(t, []string{"--log-uri", "file://" + log}, "/probe.wasm", "stderr")
	if r.code != 0 {
		t.Fatalf("probe: %+v", r)
	}
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "to stdout") || !strings.Contains(string(b), "to stderr") {
		t.Errorf("log file holds %q", b)
	}
}

// TestKillWhileCompiling: a task killed as soon as it runs, while the runner
// is still compiling its module (about a second for the Go probe: with an
// unusable compile cache, the runner compiles), ends with 143 and leaves
// nothing behind.
func TestKillWhileCompiling(t *testing.T) {
	b := startBackground(t, unusableCache(t), "/probe.wasm", "sleep") // so the runner compiles
	waitRunning(t, b.id)
	b.terminate(t)
}

// TestPathRace: one guest swaps a directory for a symlink into its own
// runner's descriptors (/proc/1/fd) and back, as fast as it can, while a
// second guest of the container (a Wasm exec) opens files through that
// directory. Every open must get the directory's own file or be refused:
// the runner opens what it checked, never a symlink swapped in after. When
// the runner checked a path and then opened it by name, about one open in
// a thousand reached the first runner's descriptors (its reason pipe, its
// root).
func TestPathRace(t *testing.T) {
	b := startBackground(t, nil, "/probe.wasm", "swap", "/tmp/race", "../proc/1/fd")
	b.waitOutput(t, "swapping")
	// 10,500 opens: the runner that opened by name let 8 to 12 of them
	// escape in each of three runs.
	const rounds = 1500
	r := execIn(t, b.id, "race", nil, "/probe.wasm", "raceopen", "/tmp/race", strconv.Itoa(rounds))
	if r.code != 0 {
		t.Fatalf("raceopen: %+v", r)
	}
	var ok, escaped, refused int
	line := findLine(r.stdout, "ok=")
	if _, err := fmt.Sscanf(line, "ok=%d escaped=%d refused=%d", &ok, &escaped, &refused); err != nil {
		t.Fatalf("raceopen printed %q: %v", r.stdout, err)
	}
	if escaped != 0 {
		t.Errorf("%d of %d opens reached another file than the directory's:\n%s", escaped, ok+escaped+refused, r.stdout)
	}
	// Both sides of the race were seen, or the test proves nothing.
	if ok < 20 || refused < 20 {
		t.Errorf("the race was not run: %d opens got the directory's file, %d were refused", ok, refused)
	}
	t.Logf("%d opened the directory's file, %d refused, %d escaped", ok, refused, escaped)
	b.terminate(t)
}
