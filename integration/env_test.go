package integration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/cgroups"
)

// env is one private containerd and what the tests need around it.
type env struct {
	dir       string // everything lives under here
	bin       string // the shim's directory, first on containerd's PATH
	shim      string // the shim binary
	ctrBin    string
	release   release // of containerd
	address   string
	runcRoot  string
	optsFile  string    // runtime options: runc's root, the compile cache and cgroup under dir
	cacheRoot string    // the compile cache
	compileCg string    // the compile helpers' parent cgroup
	cmd       *exec.Cmd // containerd, while it runs
	// containerdArgs start containerd.
	containerdArgs []string
	logFile        *os.File
	fixtures       string // built modules and programs
	imageName      string
}

var e *env

func TestMain(m *testing.M) {
	os.Exit(mainTest(m))
}

func mainTest(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "integration tests need root")
		return 1
	}
	selectMatrix()
	sockets := shimSockets()
	var err error
	e, err = start()
	if err != nil {
		fmt.Fprintf(os.Stderr, "integration: %v\n", err)
		if e != nil {
			e.stop()
		}
		return 1
	}
	code := m.Run()
	err = e.stop()
	if left := newSockets(sockets); len(left) > 0 {
		err = errors.Join(err, fmt.Errorf("shim sockets left in %s: %v", shimSocketDir, left))
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "integration: teardown: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

func repoRoot() string {
	wd, _ := os.Getwd()
	return filepath.Dir(wd)
}

// tool finds a binary: containerd's own (containerd, ctr,
// containerd-shim-runc-v2) in the directory of the containerd release under
// test (see containerdDir), others in the repository's .tools/bin; then on
// PATH.
func tool(name string) (string, error) {
	dirs := []string{filepath.Join(repoRoot(), ".tools", "bin")}
	switch name {
	case "containerd", "ctr", "containerd-shim-runc-v2":
		if d := containerdDir(); d != "" {
			dirs = []string{d}
		}
	}
	for _, d := range dirs {
		local := filepath.Join(d, name)
		if _, err := os.Stat(local); err == nil {
			return filepath.Abs(local)
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s not found in %s nor on PATH (run `make test`, which installs it, or set CONTAINERD_DIR to a containerd release's directory): %w", name, strings.Join(dirs, ", "), err)
	}
	return p, nil
}

// containerdDir is the directory of the containerd release under test:
// $CONTAINERD_DIR (make sets it), else the newest release that make built
// into .tools/containerd/VERSION; "" if there is none.
func containerdDir() string {
	if d := os.Getenv("CONTAINERD_DIR"); d != "" {
		return d
	}
	built, _ := filepath.Glob(filepath.Join(repoRoot(), ".tools", "containerd", "v*", ".built"))
	var newest string
	var newestV [3]int
	for _, b := range built {
		var v [3]int
		if _, err := fmt.Sscanf(filepath.Base(filepath.Dir(b)), "v%d.%d.%d", &v[0], &v[1], &v[2]); err == nil && (newest == "" || slices.Compare(v[:], newestV[:]) > 0) {
			newest, newestV = filepath.Dir(b), v
		}
	}
	return newest
}

func start() (*env, error) {
	dir, err := os.MkdirTemp("", "shim-wasm-it-")
	if err != nil {
		return nil, err
	}
	e := &env{
		dir:       dir,
		bin:       filepath.Join(dir, "bin"),
		address:   filepath.Join(dir, "containerd.sock"),
		runcRoot:  filepath.Join(dir, "runc"),
		fixtures:  filepath.Join(dir, "fixtures"),
		imageName: "example.local/wasm-it:latest",
	}
	for _, d := range []string{e.bin, e.fixtures} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return e, err
		}
	}
	containerd, err := tool("containerd")
	if err != nil {
		return e, err
	}
	if e.ctrBin, err = tool("ctr"); err != nil {
		return e, err
	}
	if _, err := exec.LookPath("runc"); err != nil {
		return e, fmt.Errorf("runc not found on PATH: %w", err)
	}
	e.shim = filepath.Join(e.bin, "containerd-shim-wasm-v1")
	if prebuilt := os.Getenv("WASM_SHIM_BIN"); prebuilt != "" {
		if err := os.Symlink(prebuilt, e.shim); err != nil {
			return e, err
		}
	} else if err := goBuild(e.shim, "./cmd/containerd-shim-wasm-v1", "CGO_ENABLED=0"); err != nil {
		return e, err
	}
	e.optsFile = filepath.Join(dir, "runtime-options.toml")
	e.cacheRoot = filepath.Join(dir, "cache")
	e.compileCg = fmt.Sprintf("/containerd-shim-wasm-it-%d", os.Getpid())
	if err := os.WriteFile(e.optsFile, []byte(e.runtimeOptions()), 0o644); err != nil {
		return e, err
	}
	if e.release, err = containerdRelease(containerd); err != nil {
		return e, err
	}
	cfgPath := filepath.Join(dir, "containerd.toml")
	if err := os.WriteFile(cfgPath, []byte(e.release.plainConfig(dir, e.address)), 0o644); err != nil {
		return e, err
	}
	if e.logFile, err = os.Create(filepath.Join(dir, "containerd.log")); err != nil {
		return e, err
	}
	e.containerdArgs = []string{containerd, "--config", cfgPath, "--log-level", "debug"}
	if err := e.startContainerd(); err != nil {
		return e, err
	}
	if err := e.buildImage(); err != nil {
		return e, err
	}
	return e, nil
}

// startContainerd starts containerd and waits until it serves.
func (e *env) startContainerd() error {
	e.cmd = exec.Command(e.containerdArgs[0], e.containerdArgs[1:]...)
	// The shim first, then containerd's own runc shim of the same release.
	e.cmd.Env = append(os.Environ(), "PATH="+e.bin+":"+filepath.Dir(e.containerdArgs[0])+":"+os.Getenv("PATH"))
	e.cmd.Stdout, e.cmd.Stderr = e.logFile, e.logFile
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := e.cmd.Start(); err != nil {
		return fmt.Errorf("start containerd: %w", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, _, err := e.ctr("version"); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd did not come up; see %s", e.logFile.Name())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stopContainerd ends containerd as its service manager would: SIGTERM,
// then SIGKILL after 20 s. Shims and their containers go on.
func (e *env) stopContainerd() {
	if e.cmd == nil || e.cmd.Process == nil {
		return
	}
	e.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { e.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		e.cmd.Process.Kill()
		<-done
	}
	e.cmd = nil
}

// goBuild builds a package of this repository.
func goBuild(out, pkg string, env ...string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = repoRoot()
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// ctr runs ctr against the private containerd.
func (e *env) ctr(args ...string) (string, string, error) {
	return e.ctrIn(nil, args...)
}

func (e *env) ctrIn(stdin *strings.Reader, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.ctrBin, append([]string{"--address", e.address}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != nil {
		cmd.Stdin = stdin
	}
	err := cmd.Run()
	return stdout.String(), filterWarnings(stderr.String()), err
}

// filterWarnings drops containerd's cgroup v1 deprecation notice.
func filterWarnings(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.Contains(l, "DEPRECATION") && l != "" {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// runtimeOptions are the shim's runtime options in every test, as TOML.
func (e *env) runtimeOptions() string {
	return e.runtimeOptionsWith(e.cacheRoot, "")
}

// runtimeOptionsWith are runtimeOptions with another compile cache and
// extra TOML lines.
func (e *env) runtimeOptionsWith(cacheRoot, extra string) string {
	return fmt.Sprintf("Root = %q\nCacheRoot = %q\nCompileCgroup = %q\n%s", e.runcRoot, cacheRoot, e.compileCg, extra)
}

// stop ends containerd and every shim it started, and removes what the
// tests left, reporting leaks as errors.
func (e *env) stop() error {
	var errs []error
	e.stopContainerd()
	if pids := shimPids(e.shim); len(pids) > 0 {
		errs = append(errs, fmt.Errorf("shim processes left running: %v", pids))
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if pids := runnerPids(); len(pids) > 0 {
		errs = append(errs, fmt.Errorf("runner processes left running: %v", pids))
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	for _, m := range mountsUnder(e.dir) {
		errs = append(errs, fmt.Errorf("mount left: %s", m))
		syscall.Unmount(m, syscall.MNT_DETACH)
	}
	if pins, _ := os.ReadDir(filepath.Join(e.cacheRoot, "v1", "pins")); len(pins) > 0 {
		errs = append(errs, fmt.Errorf("compile cache pins left: %d", len(pins)))
	}
	if e.compileCg != "" { // set once start got that far
		for _, d := range cgroups.Dirs(cgroups.Root, e.compileCg) {
			if sub, _ := filepath.Glob(filepath.Join(d, "*", "cgroup.procs")); len(sub) > 0 {
				errs = append(errs, fmt.Errorf("compile helper cgroups left: %v", sub))
			}
			os.Remove(d)
		}
	}
	if e.logFile != nil {
		e.logFile.Close()
		if len(errs) > 0 {
			errs = append(errs, fmt.Errorf("containerd log kept in %s", e.logFile.Name()))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if os.Getenv("KEEP_TEST_DIR") == "" {
		os.RemoveAll(e.dir)
	}
	return nil
}

// shimSocketDir is where shims started by containerd before 2.3 make their
// sockets (2.3 and newer name a directory under their state directory).
const shimSocketDir = "/run/containerd/s"

// shimSockets lists the sockets in shimSocketDir.
func shimSockets() map[string]bool {
	out := map[string]bool{}
	ents, _ := os.ReadDir(shimSocketDir)
	for _, ent := range ents {
		out[ent.Name()] = true
	}
	return out
}

// newSockets lists the sockets in shimSocketDir that were not in before.
func newSockets(before map[string]bool) []string {
	var out []string
	for name := range shimSockets() {
		if !before[name] {
			out = append(out, name)
		}
	}
	return out
}

// pids lists the running processes for which match, given a /proc/PID
// directory, is true.
func pids(match func(dir string) bool) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		var pid int
		if _, err := fmt.Sscanf(ent.Name(), "%d", &pid); err == nil && match(filepath.Join("/proc", ent.Name())) {
			out = append(out, pid)
		}
	}
	return out
}

// shimPids lists running processes of the shim binary.
func shimPids(shim string) []int {
	return pids(func(dir string) bool {
		exe, err := os.Readlink(filepath.Join(dir, "exe"))
		return err == nil && (exe == shim || exe == resolved(shim))
	})
}

func resolved(p string) string {
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		return p
	}
	return r
}

// mountsUnder lists the mount points under dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			out = append([]string{fields[4]}, out...)
		}
	}
	return out
}
