package integration

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/cgroups"
)

const runtimeName = "io.containerd.wasm.v1"

var (
	ids      atomic.Int64
	nonAlnum = regexp.MustCompile(`[^a-z0-9]+`)
)

// newID returns a container id unique in this run.
func newID(t *testing.T) string {
	name := strings.Trim(nonAlnum.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(name) > 40 {
		name = strings.TrimRight(name[:40], "-")
	}
	return fmt.Sprintf("%s-%d", name, ids.Add(1))
}

type result struct {
	stdout, stderr string
	code           int
}

// run has ctr run a container of the test image through the shim to its
// end, with --rm, and returns its output and exit status.
func run(t *testing.T, flags []string, args ...string) result {
	t.Helper()
	return runIn(t, nil, flags, args...)
}

func ctrRunArgs(id string, flags []string, args []string) []string {
	a := []string{"run", "--rm", "--runtime", runtimeName, "--runtime-config-path", e.optsFile}
	a = append(a, flags...)
	a = append(a, e.imageName, id)
	return append(a, args...)
}

func runIn(t *testing.T, stdin *strings.Reader, flags []string, args ...string) result {
	t.Helper()
	_, r := runNamed(t, stdin, flags, args...)
	return r
}

// runNamed is runIn, returning the container's id too.
func runNamed(t *testing.T, stdin *strings.Reader, flags []string, args ...string) (string, result) {
	t.Helper()
	id := newID(t)
	stdout, stderr, err := e.ctrIn(stdin, ctrRunArgs(id, flags, args)...)
	r := resultOf(t, stdout, stderr, err)
	assertClean(t, id)
	return id, r
}

// resultOf makes a result of a ctr command's output and error: its exit
// status, or a fatal error if it did not run.
func resultOf(t *testing.T, stdout, stderr string, err error) result {
	t.Helper()
	r := result{stdout: stdout, stderr: stderr}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		t.Fatalf("ctr: %v", err)
	}
	return r
}

// assertClean checks that nothing of container id is left: no bundle, no
// runc state, no cgroup, no mount, and (as no other container runs) no
// shim or runner process.
func assertClean(t *testing.T, id string) {
	t.Helper()
	paths := []string{
		filepath.Join(e.dir, "state", "io.containerd.runtime.v2.task", "default", id),
		filepath.Join(e.runcRoot, "default", id),
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := cgroups.Dirs(cgroups.Root, "/default/"+id)
		for _, p := range paths {
			if _, err := os.Stat(p); err == nil {
				left = append(left, p)
			}
		}
		for _, m := range mountsUnder(e.dir) {
			if strings.Contains(m, id) {
				left = append(left, "mount "+m)
			}
		}
		if pids := shimPids(e.shim); len(pids) > 0 {
			left = append(left, fmt.Sprintf("shim processes %v", pids))
		}
		if pids := runnerPids(); len(pids) > 0 {
			left = append(left, fmt.Sprintf("runner processes %v", pids))
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s left behind: %s", id, strings.Join(left, ", "))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runnerPids lists running Wasm runners (in any container).
func runnerPids() []int {
	return pids(func(dir string) bool {
		b, err := os.ReadFile(filepath.Join(dir, "cmdline"))
		return err == nil && strings.HasPrefix(string(b), "/dev/.containerd-shim-wasm-runner\x00")
	})
}

// background starts a container that keeps running, and returns a function
// that waits for its end and returns its result.
type bg struct {
	id     string
	cmd    *exec.Cmd
	stdout *lockedBuffer
	stderr *lockedBuffer
	stdin  io.WriteCloser
	done   chan struct{}
	res    result
}

func startBackground(t *testing.T, flags []string, args ...string) *bg {
	t.Helper()
	return startBackgroundIn(t, false, flags, args...)
}

// startBackgroundIn is startBackground with, if withStdin, a pipe to the
// container's stdin in b.stdin.
func startBackgroundIn(t *testing.T, withStdin bool, flags []string, args ...string) *bg {
	t.Helper()
	b := &bg{id: newID(t), stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, done: make(chan struct{})}
	b.cmd = exec.Command(e.ctrBin, append([]string{"--address", e.address}, ctrRunArgs(b.id, flags, args)...)...)
	b.cmd.Stdout, b.cmd.Stderr = b.stdout, b.stderr
	if withStdin {
		var err error
		if b.stdin, err = b.cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.cmd.Start(); err != nil {
		t.Fatalf("start ctr run: %v", err)
	}
	go func() {
		err := b.cmd.Wait()
		b.res = result{stdout: b.stdout.String(), stderr: filterWarnings(b.stderr.String())}
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			b.res.code = exit.ExitCode()
		}
		close(b.done)
	}()
	t.Cleanup(func() {
		select {
		case <-b.done:
		default:
			e.ctr("task", "kill", "-s", "SIGKILL", b.id)
			<-b.done
		}
	})
	return b
}

// waitOutput waits until the container printed want on stdout.
func (b *bg) waitOutput(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(b.stdout.String(), want) {
		select {
		case <-b.done:
			t.Fatalf("container %s ended before printing %q: %+v", b.id, want, b.res)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s did not print %q; stdout %q stderr %q", b.id, want, b.stdout.String(), b.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitRunning waits until task id runs, and returns its pid.
func waitRunning(t *testing.T, id string) int {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, _, _ := e.ctr("task", "ls")
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) == 3 && f[0] == id && f[2] == "RUNNING" {
				pid, _ := strconv.Atoi(f[1])
				return pid
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s is not running: %s", id, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// terminate sends SIGTERM to a running Wasm task, checks that it ends with
// 143 and leaves nothing behind.
func (b *bg) terminate(t *testing.T) {
	t.Helper()
	if _, stderr, err := e.ctr("task", "kill", "-s", "SIGTERM", b.id); err != nil {
		t.Fatalf("kill: %v: %s", err, stderr)
	}
	if r := b.wait(t, 10*time.Second); r.code != 143 {
		t.Errorf("exit status %d, want 143 (stderr %q)", r.code, r.stderr)
	}
	assertClean(t, b.id)
}

// wait returns the container's result.
func (b *bg) wait(t *testing.T, timeout time.Duration) result {
	t.Helper()
	select {
	case <-b.done:
		return b.res
	case <-time.After(timeout):
		t.Fatalf("container %s still running after %v", b.id, timeout)
	}
	return result{}
}
