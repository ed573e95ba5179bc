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
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/cgroups"
)

// env is one private containerd and what the tests need around it.
type env struct {
	dir       string // everything lives under here
	bin       string // the shim's directory, first on containerd's PATH
	shim      string // the shim binary
	ctrBin    string
	address   string
	runcRoot  string
	optsFile  string // runtime options: runc's root, the compile cache and cgroup under dir
	cacheRoot string // the compile cache
	compileCg string // the compile helpers' parent cgroup
	cmd       *exec.Cmd
	logFile   *os.File
	fixtures  string // built modules and programs
	imageName string
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
	if err := e.stop(); err != nil {
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

// tool finds a binary on PATH or in the repository's .tools/bin.
func tool(name string) (string, error) {
	local := filepath.Join(repoRoot(), ".tools", "bin", name)
	if _, err := os.Stat(local); err == nil {
		return local, nil
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s not found on PATH nor in .tools/bin (run `make test`, which installs it): %w", name, err)
	}
	return p, nil
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
	config := fmt.Sprintf(`version = 3
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime"]
[grpc]
  address = %q
[ttrpc]
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), e.address, e.address+".ttrpc")
	cfgPath := filepath.Join(dir, "containerd.toml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		return e, err
	}
	if e.logFile, err = os.Create(filepath.Join(dir, "containerd.log")); err != nil {
		return e, err
	}
	e.cmd = exec.Command(containerd, "--config", cfgPath, "--log-level", "debug")
	e.cmd.Env = append(os.Environ(), "PATH="+e.bin+":"+os.Getenv("PATH"))
	e.cmd.Stdout, e.cmd.Stderr = e.logFile, e.logFile
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := e.cmd.Start(); err != nil {
		return e, fmt.Errorf("start containerd: %w", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, _, err := e.ctr("version"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return e, fmt.Errorf("containerd did not come up; see %s", e.logFile.Name())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := e.buildImage(); err != nil {
		return e, err
	}
	return e, nil
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
	if e.cmd != nil && e.cmd.Process != nil {
		e.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { e.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			e.cmd.Process.Kill()
			<-done
		}
	}
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
	for _, d := range cgroups.Dirs(cgroups.Root, e.compileCg) {
		if sub, _ := filepath.Glob(filepath.Join(d, "*", "cgroup.procs")); len(sub) > 0 {
			errs = append(errs, fmt.Errorf("compile helper cgroups left: %v", sub))
		}
		os.Remove(d)
	}
	if e.logFile != nil {
		e.logFile.Close()
	}
	if len(errs) > 0 {
		errs = append(errs, fmt.Errorf("containerd log kept in %s", e.logFile.Name()))
		return errors.Join(errs...)
	}
	if os.Getenv("KEEP_TEST_DIR") == "" {
		os.RemoveAll(e.dir)
	}
	return nil
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
