package integration

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/cgroups"
	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/runner"
	"github.com/containerd-shim-wasm/containerd-shim-wasm/oci/image"
	"github.com/containerd/console"
	eventstypes "github.com/containerd/containerd/api/events"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/ttrpc"
	"github.com/gorilla/websocket"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
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
	ourDirs.Store(dir, true)
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

// ctrAt runs ctr against the containerd at address.
func (e *env) ctrAt(address string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, e.ctrBin, append([]string{"--address", address}, args...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
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

// newSockets lists the sockets in shimSocketDir that were not in before
// and that no process but this suite's shims listens on: a socket another
// containerd's live shim serves is not this suite's to count.
func newSockets(before map[string]bool) []string {
	held := foreignSockets()
	var out []string
	for name := range shimSockets() {
		if !before[name] && !held[filepath.Join(shimSocketDir, name)] {
			out = append(out, name)
		}
	}
	return out
}

// foreignSockets lists the paths of the unix sockets that processes other
// than this suite's shims hold open.
func foreignSockets() map[string]bool {
	inodes := map[string]string{} // socket inode -> path
	if b, err := os.ReadFile("/proc/net/unix"); err == nil {
		for _, l := range strings.Split(string(b), "\n")[1:] {
			if f := strings.Fields(l); len(f) >= 8 {
				inodes[f[6]] = f[7]
			}
		}
	}
	ours := map[int]bool{}
	for _, pid := range shimPids(e.shim) {
		ours[pid] = true
	}
	out := map[string]bool{}
	pids(func(dir string) bool {
		if pid, _ := strconv.Atoi(filepath.Base(dir)); ours[pid] {
			return false
		}
		fds, _ := os.ReadDir(filepath.Join(dir, "fd"))
		for _, fd := range fds {
			target, _ := os.Readlink(filepath.Join(dir, "fd", fd.Name()))
			if inode, ok := strings.CutPrefix(target, "socket:["); ok {
				if path := inodes[strings.TrimSuffix(inode, "]")]; path != "" {
					out[path] = true
				}
			}
		}
		return false
	})
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

// shimPids lists the running processes of the shim binary that serve one
// of this suite's containerds (their -address lies under ourDirs): a shim
// of the same binary serving another containerd is not the suite's.
func shimPids(shim string) []int {
	return pids(func(dir string) bool { return isShimOf(dir, shim) })
}

// isShimOf tells whether the process at dir (/proc/PID) runs shim for one
// of this suite's containerds.
func isShimOf(dir, shim string) bool {
	exe, err := os.Readlink(filepath.Join(dir, "exe"))
	if err != nil || (exe != shim && exe != resolved(shim)) {
		return false
	}
	b, err := os.ReadFile(filepath.Join(dir, "cmdline"))
	if err != nil {
		return false
	}
	args := strings.Split(string(b), "\x00")
	for i, a := range args {
		if (a == "-address" || a == "--address") && i+1 < len(args) {
			return underOurDirs(args[i+1])
		}
	}
	return false
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

// hostSecret is a file on the host, outside every container, that no guest
// may read.
const hostSecretName = "host-secret.txt"

// buildImage builds the test modules and programs and imports one image
// holding all of them.
func (e *env) buildImage() error {
	probe := filepath.Join(e.fixtures, "probe.wasm")
	if err := goBuild(probe, "./integration/testdata/probe", "GOOS=wasip1", "GOARCH=wasm"); err != nil {
		return err
	}
	native := filepath.Join(e.fixtures, "native")
	if err := goBuild(native, "./integration/testdata/native", "CGO_ENABLED=0", "GOOS=linux"); err != nil {
		return err
	}
	server := filepath.Join(e.fixtures, "http-server.wasm")
	if err := goBuild(server, "./examples/http-server", "GOOS=wasip1", "GOARCH=wasm"); err != nil {
		return err
	}
	httpget := filepath.Join(e.fixtures, "httpget")
	if err := goBuild(httpget, "./integration/testdata/httpget", "CGO_ENABLED=0", "GOOS=linux"); err != nil {
		return err
	}
	pause := filepath.Join(e.fixtures, "pause")
	if err := goBuild(pause, "./integration/testdata/pause", "CGO_ENABLED=0", "GOOS=linux"); err != nil {
		return err
	}
	read := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			panic(err)
		}
		return b
	}
	img := &image.Image{
		Name: e.imageName,
		Files: []image.File{
			{Path: "/probe.wasm", Data: read(probe), Mode: 0o644}, // a module runs whatever its mode bits
			{Path: "/usr/bin/probe", Type: tar.TypeSymlink, Linkname: "../../probe.wasm"},
			{Path: "/link.wasm", Type: tar.TypeSymlink, Linkname: "/probe.wasm"},
			{Path: "/bin/native", Data: read(native), Mode: 0o755},
			{Path: "/bin/httpget", Data: read(httpget), Mode: 0o755},
			{Path: "/http-server.wasm", Data: read(server), Mode: 0o644},
			{Path: "/text.txt", Data: []byte("just some text\n"), Mode: 0o755},
			{Path: "/fifo", Type: tar.TypeFifo, Mode: 0o644},
			{Path: "/corrupt.wasm", Data: []byte("\x00asm\x01\x00\x00\x00\x01\xff\xff\xff\xff garbage"), Mode: 0o644},
			{Path: "/empty.wasm", Data: []byte("\x00asm"), Mode: 0o644},
			{Path: "/data/hello.txt", Data: []byte("hello from the image\n"), Mode: 0o644},
			{Path: "/work/rel.txt", Data: []byte("relative to the working directory\n"), Mode: 0o644},
			{Path: "/mem-link", Type: tar.TypeSymlink, Linkname: "/proc/self/mem"},
			{Path: "/fd-link", Type: tar.TypeSymlink, Linkname: "../proc/self/fd"},
			{Path: "/escape-link", Type: tar.TypeSymlink, Linkname: "../../../../../../.." + filepath.Join(e.dir, hostSecretName)},
			{Path: "/escape-dir", Type: tar.TypeSymlink, Linkname: "../../../../../../.." + e.dir},
			{Path: "/tmp/.keep", Data: nil, Mode: 0o644},
			{Path: "/hiddenbig.wasm", Data: hiddenBehindLargeSection(), Mode: 0o644},
		},
	}
	if err := os.WriteFile(filepath.Join(e.dir, hostSecretName), []byte("HOST SECRET\n"), 0o644); err != nil {
		return err
	}
	wats, err := filepath.Glob(filepath.Join(repoRoot(), "integration", "testdata", "*.wat"))
	if err != nil {
		return err
	}
	for _, wat := range wats {
		name := strings.TrimSuffix(filepath.Base(wat), ".wat") + ".wasm"
		out := filepath.Join(e.fixtures, name)
		if b, err := exec.Command("wat2wasm", wat, "-o", out).CombinedOutput(); err != nil {
			return fmt.Errorf("wat2wasm %s (install Debian's wabt): %v\n%s", wat, err, b)
		}
		img.Files = append(img.Files, image.File{Path: "/" + name, Data: read(out), Mode: 0o644})
	}
	var buf bytes.Buffer
	if err := img.WriteTar(&buf); err != nil {
		return err
	}
	var pauseTar bytes.Buffer
	pauseImg := &image.Image{Name: "example.local/pause:test", Files: []image.File{{Path: "/pause", Data: read(pause), Mode: 0o755}}, Entrypoint: []string{"/pause"}}
	if err := pauseImg.WriteTar(&pauseTar); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(e.fixtures, "pause.tar"), pauseTar.Bytes(), 0o644); err != nil {
		return err
	}
	tarPath := filepath.Join(e.fixtures, "image.tar")
	if err := os.WriteFile(tarPath, buf.Bytes(), 0o644); err != nil {
		return err
	}
	if _, stderr, err := e.ctr("images", "import", tarPath); err != nil {
		return fmt.Errorf("import test image: %v: %s", err, stderr)
	}
	return nil
}

// release is the containerd release the tests run against: the one in
// containerdDir, 2.4 unless make runs the version matrix.
type release struct {
	major, minor int
	text         string // as `containerd --version` prints it
}

// containerdRelease asks a containerd binary its version.
func containerdRelease(bin string) (release, error) {
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return release{}, fmt.Errorf("%s --version: %w", bin, err)
	}
	// "containerd github.com/containerd/containerd/v2 2.2.9+unknown <revision>"
	f := strings.Fields(string(out))
	if len(f) < 3 {
		return release{}, fmt.Errorf("%s --version: %q", bin, out)
	}
	r := release{text: strings.TrimPrefix(f[2], "v")}
	if _, err := fmt.Sscanf(r.text, "%d.%d", &r.major, &r.minor); err != nil {
		return release{}, fmt.Errorf("%s --version: %q: %w", bin, out, err)
	}
	return r, nil
}

// atLeast tells whether the release is major.minor or newer.
func (r release) atLeast(major, minor int) bool {
	return r.major > major || r.major == major && r.minor >= minor
}

// criRuntime is the name of the CRI plugin table that holds the runtime
// handlers: config version 3 for containerd 2.x, 2 for 1.7.
func (r release) criRuntime() string {
	if r.atLeast(2, 0) {
		return `plugins."io.containerd.cri.v1.runtime"`
	}
	return `plugins."io.containerd.grpc.v1.cri"`
}

// baseConfig is a containerd config of this release's version with only
// the paths of a private instance under dir, and the lines of extra.
func (r release) baseConfig(dir, address, extra string) string {
	version := 3
	if !r.atLeast(2, 0) {
		version = 2
	}
	return fmt.Sprintf("version = %d\nroot = %q\nstate = %q\n%s\n[grpc]\n  address = %q\n[ttrpc]\n  address = %q\n",
		version, filepath.Join(dir, "root"), filepath.Join(dir, "state"), extra, address, address+".ttrpc")
}

// plainConfig is a private containerd without CRI.
func (r release) plainConfig(dir, address string) string {
	disabled := `["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime"]`
	if !r.atLeast(2, 0) {
		disabled = `["io.containerd.grpc.v1.cri"]`
	}
	return r.baseConfig(dir, address, "disabled_plugins = "+disabled)
}

// criSettings are what a test containerd needs for CRI on these machines
// (see the notes): the pause image the tests build, oom_score_adj left
// alone, pod network namespaces under the state directory, CNI from
// Debian's plugins and the test's conflist, the handler "runc" beside
// "wasm", and runc's state under the test's directory. wasmOptions are more
// lines of the wasm handler's options ("Key = value").
type criSettings struct {
	pauseImage, cniConfDir, runcRoot string
	wasmOptions                      []string
}

// criConfig is a private containerd with the CRI plugin and the handler
// "wasm" from deploy/containerd, as a node gets it: containerd 2.x imports
// wasm.toml; containerd 1.7, which would replace its whole CRI section
// with an imported file's, has wasm-containerd-1.7.toml appended.
func (r release) criConfig(dir, address string, s criSettings) (string, error) {
	return r.criConfigWith(dir, address, s, true)
}

// criNodeConfig is criConfig without the handler "wasm": a node's config
// before the installer.
func (r release) criNodeConfig(dir, address string, s criSettings) string {
	c, _ := r.criConfigWith(dir, address, s, false)
	return c
}

func (r release) criConfigWith(dir, address string, s criSettings, wasm bool) (string, error) {
	rt := r.criRuntime()
	var b strings.Builder
	fmt.Fprintf(&b, "[%s]\n  restrict_oom_score_adj = true\n  netns_mounts_under_state_dir = true\n", rt)
	if r.atLeast(2, 0) {
		fmt.Fprintf(&b, "[plugins.\"io.containerd.cri.v1.images\".pinned_images]\n  sandbox = %q\n", s.pauseImage)
	} else {
		fmt.Fprintf(&b, "  sandbox_image = %q\n", s.pauseImage)
	}
	// containerd 2.0 and 2.1 (and 1.7) read one CNI binary directory,
	// bin_dir; 2.2 and newer a list, bin_dirs.
	fmt.Fprintf(&b, "[%s.cni]\n  conf_dir = %q\n", rt, s.cniConfDir)
	if r.atLeast(2, 2) {
		b.WriteString("  bin_dirs = [\"/usr/lib/cni\"]\n")
	} else {
		b.WriteString("  bin_dir = \"/usr/lib/cni\"\n")
	}
	fmt.Fprintf(&b, "[%s.containerd]\n  default_runtime_name = \"runc\"\n", rt)
	fmt.Fprintf(&b, "[%s.containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n", rt)
	fmt.Fprintf(&b, "[%s.containerd.runtimes.runc.options]\n  Root = %q\n", rt, s.runcRoot)
	wasmOptions := fmt.Sprintf("  Root = %q\n", s.runcRoot)
	for _, l := range s.wasmOptions {
		wasmOptions += "  " + l + "\n"
	}
	if !wasm {
		return r.baseConfig(dir, address, "") + b.String(), nil
	}
	optionsTable := fmt.Sprintf("[%s.containerd.runtimes.wasm.options]\n", rt)
	deploy := filepath.Join(repoRoot(), "deploy", "containerd")
	if r.atLeast(2, 0) {
		b.WriteString(optionsTable + wasmOptions)
		return r.baseConfig(dir, address, fmt.Sprintf("imports = [%q]", filepath.Join(deploy, "wasm.toml"))) + b.String(), nil
	}
	snippet, err := os.ReadFile(filepath.Join(deploy, "wasm-containerd-1.7.toml"))
	if err != nil {
		return "", err
	}
	// The node's own keys go into the snippet's options table.
	text := string(snippet)
	i := strings.Index(text, strings.TrimSpace(optionsTable))
	if i < 0 {
		return "", fmt.Errorf("wasm-containerd-1.7.toml has no table %s", optionsTable)
	}
	i += len(optionsTable)
	return r.baseConfig(dir, address, "") + b.String() + text[:i] + wasmOptions + text[i:], nil
}

// matrixTests are the tests that make runs on each older containerd
// release (INTEGRATION_MATRIX set; the whole suite runs on the primary
// one): an area of the shim's service to containerd each.
var matrixTests = []string{
	"TestOutput",            // ctr run of Wasm and native programs: output, exit statuses
	"TestStdin",             // stdin
	"TestTTY",               // a terminal, ResizePty
	"TestExecTTY",           // exec on a terminal
	"TestKill",              // kill: 143, 130, 137, ...
	"TestEvents",            // create/start/exit/delete events, their pids and statuses
	"TestExec",              // exec of Wasm and native programs
	"TestPauseResume",       // pause, resume, their events
	"TestPidsAndMetrics",    // ps, metrics
	"TestMemoryLimit",       // a limit, and Update moving it
	"TestOOM",               // the OOM kill: 137 and /tasks/oom
	"TestBadInput",          // bad entrypoints: errors, the shim serving on, nothing left
	"TestTaskAPIErrors",     // the task API's error codes, over that release's task API
	"TestContainerdRestart", // containerd restarted under running containers
	"TestCRIPod",            // a pod mixing Wasm and native containers, one shim, stop and remove
	"TestCRIOperate",        // CRI exec, stats and update
	"TestCRIOOMKilled",      // OOMKilled for a guest out of memory and a kernel OOM kill
	"TestWasmImagesCRI",     // Wasm artifacts and layers pulled from a registry through CRI
	"TestAgent",             // the node agent compiling pulled images through that release
	"TestWasmVariantCRI",    // one image name: native under runc, Wasm under wasm
	"TestInstaller",         // the installer against that release's config
}

// selectMatrix has the test binary run matrixTests alone when
// INTEGRATION_MATRIX is set and no -run was given.
func selectMatrix() {
	flag.Parse()
	if os.Getenv("INTEGRATION_MATRIX") == "" || flag.Lookup("test.run").Value.String() != "" {
		return
	}
	flag.Set("test.run", "^("+strings.Join(matrixTests, "|")+")$")
}

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
	return ctrRunImageArgs(e.imageName, id, flags, args)
}

// ctrRunImageArgs is ctrRunArgs for image img.
func ctrRunImageArgs(img, id string, flags []string, args []string) []string {
	a := []string{"run", "--rm", "--runtime", runtimeName, "--runtime-config-path", e.optsFile}
	a = append(a, flags...)
	a = append(a, img, id)
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

// runnerPids lists the running Wasm runners of this suite's containers:
// those whose parent (the shim, their subreaper) is one of this suite's
// shims (see isShimOf), or whose root lies under the directory of one of
// its containerds (a runner whose shim died). Another containerd's runners on
// the machine are never counted, and so never killed.
func runnerPids() []int {
	return pids(func(dir string) bool {
		b, err := os.ReadFile(filepath.Join(dir, "cmdline"))
		if err != nil || !strings.HasPrefix(string(b), "/dev/.containerd-shim-wasm-runner\x00") {
			return false
		}
		if st, err := os.ReadFile(filepath.Join(dir, "stat")); err == nil {
			// pid (comm) state ppid ...: comm may hold spaces, not ")".
			if f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:])); len(f) > 1 && isShimOf(filepath.Join("/proc", f[1]), e.shim) {
				return true
			}
		}
		root, err := os.Readlink(filepath.Join(dir, "root"))
		return err == nil && underOurDirs(root)
	})
}

// ourDirs are the directories of the containerds this suite started: its
// own (e.dir) and each CRI test's (see startCRIWith).
var ourDirs sync.Map

// underOurDirs tells whether p lies under one of ourDirs.
func underOurDirs(p string) bool {
	found := false
	ourDirs.Range(func(k, _ any) bool {
		found = strings.HasPrefix(p, k.(string)+"/")
		return !found
	})
	return found
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

// lockedBuffer is a bytes.Buffer safe for one writer and many readers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// ownCache writes runtime options with a compile cache of the test's own
// and the runner's trace on (plus extra TOML lines), and returns ctr's
// flags to use them and the cache's layout directory.
func ownCache(t *testing.T, extra string) ([]string, string) {
	t.Helper()
	dir := filepath.Join(e.dir, "caches", newID(t))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	opts := filepath.Join(dir, "options.toml")
	if err := os.WriteFile(opts, []byte(e.runtimeOptionsWith(filepath.Join(dir, "cache"), "Trace = true\n"+extra)), 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{"--runtime-config-path", opts}, filepath.Join(dir, "cache", "v1")
}

// codeOf returns where a traced runner's compiled code came from
// (runner.CodeHit, CodeMiss or CodeCompiled), read from the trace it
// wrote on the guest's stderr.
func codeOf(t *testing.T, stderr string) string {
	t.Helper()
	for _, l := range strings.Split(stderr, "\n") {
		if rest, ok := strings.CutPrefix(l, runner.TracePrefix); ok {
			var tr runner.Trace
			if err := json.Unmarshal([]byte(rest), &tr); err != nil {
				t.Fatalf("trace %q: %v", rest, err)
			}
			return tr.Code
		}
	}
	t.Fatalf("no runner trace in stderr %q", stderr)
	return ""
}

// shimLog returns the shim's log line with msg=msg for container id, from
// containerd's log (it is written asynchronously, so this waits a little).
func shimLog(t *testing.T, id, msg string) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(filepath.Join(e.dir, "containerd.log"))
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, " msg="+msg+" ") && strings.Contains(l, " id="+id+" ") {
				return l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q log line for %s", msg, id)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func dirLen(t *testing.T, dir string) int {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return len(des)
}

// runProbeEcho runs the probe module, which prints its arguments, checks
// its output and returns where its compiled code came from (see codeOf:
// flags must turn the trace on).
func runProbeEcho(t *testing.T, flags []string, args ...string) string {
	t.Helper()
	want := strings.Join(args, " ")
	r := run(t, flags, append([]string{"/probe.wasm", "echo"}, args...)...)
	if r.code != 0 || !strings.Contains(r.stdout, want) {
		t.Fatalf("probe echo %s: %+v", want, r)
	}
	return codeOf(t, r.stderr)
}

// entryName is the name (in wazero's layout) of module's entry in the
// cache's layout directory dir, or "".
func entryName(t *testing.T, dir, module string) string {
	t.Helper()
	bin, err := os.ReadFile(module)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(bin)
	records, _ := filepath.Glob(filepath.Join(dir, "index", "*"))
	for _, p := range records {
		var rec struct{ Module, Name string }
		b, err := os.ReadFile(p)
		if err == nil {
			err = json.Unmarshal(b, &rec)
		}
		if err != nil || rec.Module == "" || rec.Name == "" {
			t.Fatalf("cache record %s unreadable (%v): the cache's layout changed?", p, err)
		}
		if rec.Module == hex.EncodeToString(sum[:]) {
			return rec.Name
		}
	}
	return ""
}

// cachedIn says whether a cache's layout directory has module's entry.
func cachedIn(t *testing.T, dir, module string) bool {
	t.Helper()
	return entryName(t, dir, module) != ""
}

// newestEntry is the most recently written compiled code in a cache.
func newestEntry(t *testing.T, dir string) string {
	t.Helper()
	des, err := os.ReadDir(filepath.Join(dir, "entries"))
	if err != nil || len(des) == 0 {
		t.Fatalf("no cache entries: %v", err)
	}
	var newest string
	var when time.Time
	for _, de := range des {
		if info, err := de.Info(); err == nil && info.ModTime().After(when) {
			newest, when = filepath.Join(dir, "entries", de.Name()), info.ModTime()
		}
	}
	return newest
}

// unusableCache returns ctr flags for runtime options whose cache root is
// a regular file.
func unusableCache(t *testing.T) []string {
	flags, dir := ownCache(t, "")
	root := filepath.Dir(dir)
	if err := os.WriteFile(root, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	return flags
}

const (
	criBridge    = "cniwasm0"
	pauseImage   = "example.local/pause:test"
	criNamespace = "k8s.io"
)

// criEnv is a second private containerd with the CRI plugin on, the
// runtime handlers "wasm" (this shim) and "runc", CNI (loopback and a
// bridge) and a pause image built by the tests: a kubelet's view.
type criEnv struct {
	dir     string
	address string
	rt      cri.RuntimeServiceClient
	images  cri.ImageServiceClient
}

func startCRI(t *testing.T) *criEnv {
	t.Helper()
	return startCRIWith(t, nil)
}

// criNode installs the handler on a node whose containerd config is
// config, in dir, and returns how to start that node's containerd: the
// config's path and the command that runs containerd ARGS.
type criNode func(dir, config string) (configPath string, wrap []string)

// startCRIWith is startCRI on a node that install sets up (nil: the
// handler from the shipped drop-in, as startCRI).
func startCRIWith(t *testing.T, install criNode) *criEnv {
	t.Helper()
	dir, err := os.MkdirTemp("", "shim-wasm-cri-")
	if err != nil {
		t.Fatal(err)
	}
	ourDirs.Store(dir, true)
	c := &criEnv{dir: dir, address: filepath.Join(dir, "containerd.sock")}
	runcRoot := filepath.Join(dir, "runc")
	cniConf := filepath.Join(dir, "cni")
	os.MkdirAll(cniConf, 0o755)
	conflist := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "wasm-test", "plugins": [
  {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": "10.88.77.0/24"}]]}},
  {"type": "loopback"}]}`, criBridge, filepath.Join(dir, "ipam"))
	if err := os.WriteFile(filepath.Join(cniConf, "10-wasm-test.conflist"), []byte(conflist), 0o644); err != nil {
		t.Fatal(err)
	}
	// The handler "wasm" comes from the shipped drop-in, as on a node; only
	// runc's state directory and the compile cache are the test's own.
	settings := criSettings{
		pauseImage: pauseImage, cniConfDir: cniConf, runcRoot: runcRoot,
		wasmOptions: []string{fmt.Sprintf("CacheRoot = %q", e.cacheRoot), fmt.Sprintf("CompileCgroup = %q", e.compileCg)},
	}
	containerd, err := tool("containerd")
	if err != nil {
		t.Fatal(err)
	}
	var cmd *exec.Cmd
	path := e.bin + ":" + filepath.Dir(containerd) + ":" + os.Getenv("PATH")
	if install == nil {
		config, err := e.release.criConfig(dir, c.address, settings)
		if err != nil {
			t.Fatal(err)
		}
		cfgPath := filepath.Join(dir, "containerd.toml")
		os.WriteFile(cfgPath, []byte(config), 0o644)
		cmd = exec.Command(containerd, "--config", cfgPath)
	} else {
		cfgPath, wrap := install(dir, e.release.criNodeConfig(dir, c.address, settings))
		cmd = exec.Command(wrap[0], append(wrap[1:], containerd, "--config", cfgPath)...)
		path = filepath.Dir(containerd) + ":" + os.Getenv("PATH") // the shim only where the installer put it
	}
	logFile, _ := os.Create(filepath.Join(dir, "containerd.log"))
	cmd.Env = append(os.Environ(), "PATH="+path)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		logFile.Close()
		exec.Command("ip", "link", "del", criBridge).Run()
		var left []string
		for _, m := range mountsUnder(dir) {
			left = append(left, m)
			syscall.Unmount(m, syscall.MNT_DETACH)
		}
		if len(left) > 0 {
			t.Errorf("mounts left under the CRI containerd: %v (log kept in %s)", left, dir)
			return
		}
		if !t.Failed() {
			os.RemoveAll(dir)
		} else {
			t.Logf("CRI containerd's directory kept: %s", dir)
		}
	})
	ctr := func(args ...string) error {
		out, err := exec.Command(e.ctrBin, append([]string{"--address", c.address, "-n", criNamespace}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ctr %v: %v: %s", args, err, out)
		}
		return nil
	}
	deadline := time.Now().Add(30 * time.Second)
	for ctr("version") != nil {
		if time.Now().After(deadline) {
			t.Fatalf("CRI containerd did not come up; see %s", logFile.Name())
		}
		time.Sleep(100 * time.Millisecond)
	}
	conn, err := grpc.NewClient("unix://"+c.address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c.rt = cri.NewRuntimeServiceClient(conn)
	c.images = cri.NewImageServiceClient(conn)
	c.importImage(t, filepath.Join(e.fixtures, "image.tar"), e.imageName)
	c.importImage(t, filepath.Join(e.fixtures, "pause.tar"), pauseImage)
	return c
}

// importImage imports an image tarball into CRI's namespace and waits until
// CRI resolves each of refs: CRI learns of an imported image from
// containerd's events, after `ctr images import` has returned (containerd
// 2.0 answered a CreateContainer right after it with NotFound).
func (c *criEnv) importImage(t *testing.T, tarball string, refs ...string) {
	t.Helper()
	if _, stderr, err := e.ctrAt(c.address, "-n", criNamespace, "images", "import", tarball); err != nil {
		t.Fatalf("import %s: %v: %s", tarball, err, stderr)
	}
	for _, ref := range refs {
		deadline := time.Now().Add(time.Minute)
		for {
			resp, err := c.images.ImageStatus(context.Background(), &cri.ImageStatusRequest{Image: &cri.ImageSpec{Image: ref}})
			if err == nil && resp.Image != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("CRI does not resolve %s a minute after its import: %v", ref, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// pod runs a pod sandbox on handler and returns its id and config.
func (c *criEnv) pod(t *testing.T, name, handler string) (string, *cri.PodSandboxConfig) {
	t.Helper()
	cfg := &cri.PodSandboxConfig{
		Metadata:     &cri.PodSandboxMetadata{Name: name, Uid: name + "-uid", Namespace: "default"},
		Hostname:     name,
		LogDirectory: filepath.Join(c.dir, "logs", name),
		Linux:        &cri.LinuxPodSandboxConfig{},
	}
	os.MkdirAll(cfg.LogDirectory, 0o755)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := c.rt.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: cfg, RuntimeHandler: handler})
	if err != nil {
		t.Fatalf("RunPodSandbox(%s, handler %q): %v", name, handler, err)
	}
	// A pod outlives containerd: remove it even when the test fails early
	// (removing it twice is harmless).
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c.rt.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: resp.PodSandboxId})
		c.rt.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: resp.PodSandboxId})
	})
	return resp.PodSandboxId, cfg
}

// container creates and starts a container of the test image in a pod.
func (c *criEnv) container(t *testing.T, podID string, podCfg *cri.PodSandboxConfig, name string, cmd ...string) string {
	t.Helper()
	return c.containerEnv(t, podID, podCfg, name, nil, cmd...)
}

// containerEnv is container with environment variables.
func (c *criEnv) containerEnv(t *testing.T, podID string, podCfg *cri.PodSandboxConfig, name string, env []*cri.KeyValue, cmd ...string) string {
	t.Helper()
	return c.containerConfig(t, podID, podCfg, &cri.ContainerConfig{
		Metadata: &cri.ContainerMetadata{Name: name},
		Image:    &cri.ImageSpec{Image: e.imageName},
		Command:  cmd[:1],
		Args:     cmd[1:],
		Envs:     env,
		LogPath:  name + ".log",
	})
}

// containerConfig creates and starts a container as cfg says.
func (c *criEnv) containerConfig(t *testing.T, podID string, podCfg *cri.PodSandboxConfig, cfg *cri.ContainerConfig) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := c.rt.CreateContainer(ctx, &cri.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: podCfg})
	if err != nil {
		t.Fatalf("CreateContainer(%s): %v", cfg.Metadata.Name, err)
	}
	if _, err := c.rt.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: resp.ContainerId}); err != nil {
		t.Fatalf("StartContainer(%s): %v", cfg.Metadata.Name, err)
	}
	return resp.ContainerId
}

// containerPid returns the pid of a running container's process.
func (c *criEnv) containerPid(t *testing.T, id string) int {
	t.Helper()
	resp, err := c.rt.ContainerStatus(context.Background(), &cri.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	return infoPid(t, resp.Info)
}

// sandboxPid returns the pid of a pod's pause process.
func (c *criEnv) sandboxPid(t *testing.T, id string) int {
	t.Helper()
	resp, err := c.rt.PodSandboxStatus(context.Background(), &cri.PodSandboxStatusRequest{PodSandboxId: id, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	return infoPid(t, resp.Info)
}

func infoPid(t *testing.T, info map[string]string) int {
	t.Helper()
	var v struct {
		Pid int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(info["info"]), &v); err != nil || v.Pid == 0 {
		t.Fatalf("no pid in the verbose status %q: %v", info["info"], err)
	}
	return v.Pid
}

// waitExit waits for a container to exit and returns its status.
func (c *criEnv) waitExit(t *testing.T, id string) *cri.ContainerStatus {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := c.rt.ContainerStatus(context.Background(), &cri.ContainerStatusRequest{ContainerId: id})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Status.State == cri.ContainerState_CONTAINER_EXITED {
			return resp.Status
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s still %v", id, resp.Status.State)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// logLines returns the text of a container's CRI log lines for stream.
func logLines(t *testing.T, path, stream string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "2026-01-02T15:04:05.999999999Z stdout F text"
		f := strings.SplitN(sc.Text(), " ", 4)
		if len(f) == 4 && f[1] == stream {
			out = append(out, f[3])
		}
	}
	return out
}

// criCgroupValue reads a number from a file of CRI container id's cgroup.
func criCgroupValue(t *testing.T, id, name string) int64 {
	t.Helper()
	for _, d := range cgroups.Dirs(cgroups.Root, "/k8s.io/"+id) {
		if data, err := os.ReadFile(filepath.Join(d, name)); err == nil {
			n, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
			if err != nil {
				t.Fatalf("%s of %s: %q", name, id, data)
			}
			return n
		}
	}
	t.Fatalf("container %s has no cgroup file %s", id, name)
	return 0
}

var criMemoryLine = regexp.MustCompile(`memory (\d+) MiB`)

// growExec runs the grow guest in container id with ExecSync and returns
// how far it could grow, in MiB.
func (c *criEnv) growExec(t *testing.T, id string) int {
	t.Helper()
	resp, err := c.rt.ExecSync(context.Background(), &cri.ExecSyncRequest{ContainerId: id, Cmd: []string{"/grow.wasm"}, Timeout: 60})
	if err != nil {
		t.Fatalf("ExecSync grow: %v", err)
	}
	m := criMemoryLine.FindSubmatch(resp.Stdout)
	if resp.ExitCode != 0 || m == nil {
		t.Fatalf("grow exec: exit %d, stdout %q, stderr %q", resp.ExitCode, resp.Stdout, resp.Stderr)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// streamExec runs cmd in container id through CRI Exec and the streaming
// server's WebSocket protocol (v4.channel.k8s.io), and returns stdout,
// stderr and the status the server sends on the error channel.
func (c *criEnv) streamExec(t *testing.T, id string, cmd ...string) (string, string, string) {
	t.Helper()
	resp, err := c.rt.Exec(context.Background(), &cri.ExecRequest{ContainerId: id, Cmd: cmd, Stdout: true, Stderr: true})
	if err != nil {
		t.Fatalf("Exec: %v", err)
	}
	u := "ws" + strings.TrimPrefix(resp.Url, "http")
	dialer := websocket.Dialer{Subprotocols: []string{"v4.channel.k8s.io"}, HandshakeTimeout: 10 * time.Second}
	conn, _, err := dialer.Dial(u, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	var stdout, stderr, status strings.Builder
	for {
		_, msg, err := conn.ReadMessage()
		if err != nil {
			break // the server closes the connection once the exec ended
		}
		if len(msg) == 0 {
			continue
		}
		switch msg[0] {
		case 1:
			stdout.Write(msg[1:])
		case 2:
			stderr.Write(msg[1:])
		case 3:
			status.Write(msg[1:])
		}
	}
	return stdout.String(), stderr.String(), status.String()
}

// execIn runs `ctr task exec` in container id and returns its result.
func execIn(t *testing.T, id, execID string, flags []string, args ...string) result {
	t.Helper()
	a := append([]string{"task", "exec", "--exec-id", execID}, flags...)
	stdout, stderr, err := e.ctr(append(append(a, id), args...)...)
	return resultOf(t, stdout, stderr, err)
}

const mib = 1 << 20

// cgroupFile returns the contents of a file of container id's cgroup
// (looked for in every controller's directory), trimmed; "" if none.
func cgroupFile(t *testing.T, id, name string) string {
	t.Helper()
	for _, d := range cgroups.Dirs(cgroups.Root, "/default/"+id) {
		if data, err := os.ReadFile(filepath.Join(d, name)); err == nil {
			return strings.TrimSpace(string(data))
		}
	}
	return ""
}

// cgroupValue returns the number a cgroup file holds, or the value of key
// in a flat-keyed one (memory.stat, cpu.stat, memory.oom_control).
func cgroupValue(t *testing.T, id, name, key string) int64 {
	t.Helper()
	data := cgroupFile(t, id, name)
	if key == "" {
		n, err := strconv.ParseInt(data, 10, 64)
		if err != nil {
			t.Fatalf("%s of %s: %q", name, id, data)
		}
		return n
	}
	for _, l := range strings.Split(data, "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == key {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	t.Fatalf("%s of %s has no %s: %q", name, id, key, data)
	return 0
}

// loadTask returns task id through containerd's client (for what ctr
// 2.x has no command for), and a context for calls on it.
func loadTask(t *testing.T, id string) (context.Context, containerd.Task) {
	t.Helper()
	ctx, task, err := taskOf(t, id)
	if err != nil {
		t.Fatal(err)
	}
	return ctx, task
}

// taskOf is loadTask returning its error.
func taskOf(t *testing.T, id string) (context.Context, containerd.Task, error) {
	t.Helper()
	client, err := containerd.New(e.address)
	if err != nil {
		return nil, nil, err
	}
	t.Cleanup(func() { client.Close() })
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), "default"), 30*time.Second)
	t.Cleanup(cancel)
	c, err := client.LoadContainer(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	task, err := c.Task(ctx, nil)
	return ctx, task, err
}

// updateTask changes the resources of running task id (ctr 2.x has no
// `task update`).
func updateTask(t *testing.T, id string, res *specs.LinuxResources) {
	t.Helper()
	ctx, task := loadTask(t, id)
	if err := task.Update(ctx, containerd.WithResources(res)); err != nil {
		t.Fatalf("update %s: %v", id, err)
	}
}

// watchEvents runs `ctr events` for the rest of the test.
func watchEvents(t *testing.T) *lockedBuffer {
	t.Helper()
	cmd := exec.Command(e.ctrBin, "--address", e.address, "events")
	evs := &lockedBuffer{}
	cmd.Stdout = evs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// Subscribed once an event published now reaches it.
	client, err := containerd.New(e.address)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx := namespaces.WithNamespace(context.Background(), "default")
	marker := newID(t) + "-events-ready"
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(evs.String(), marker); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("ctr events saw nothing in 10 s: %q", evs.String())
		}
		if err := client.EventService().Publish(ctx, "/integration/ready", &eventstypes.TaskStart{ContainerID: marker}); err != nil {
			t.Fatal(err)
		}
	}
	return evs
}

// waitEvent waits for an event on topic for container id.
func waitEvent(t *testing.T, evs *lockedBuffer, topic, id string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !hasEvent(evs, topic, id) {
		if time.Now().After(deadline) {
			t.Errorf("no %s event for %s in %q", topic, id, evs.String())
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func hasEvent(evs *lockedBuffer, topic, id string) bool {
	return eventIndex(evs, topic, id) >= 0
}

// eventIndex is the line number of the first event of topic about id,
// -1 if there is none.
func eventIndex(evs *lockedBuffer, topic, id string) int {
	for i, l := range strings.Split(evs.String(), "\n") {
		if strings.Contains(l, " "+topic+" ") && strings.Contains(l, `"`+id+`"`) {
			return i
		}
	}
	return -1
}

// lastLines is the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

var memoryLine = regexp.MustCompile(`memory (\d+) MiB\n`)

// grownTo returns the grow guest's memory, in MiB, after it grew as far
// as it could for the round-th time (it grows once at start, then once per
// line of input: the rounds after the first are asked for).
func grownTo(t *testing.T, b *bg, round int) int {
	t.Helper()
	if round > 1 {
		if _, err := b.stdin.Write([]byte("grow\n")); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := memoryLine.FindAllStringSubmatch(b.stdout.String(), -1); len(m) >= round {
			n, _ := strconv.Atoi(m[round-1][1])
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("grow guest did not report round %d: stdout %q stderr %q", round, b.stdout.String(), b.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cpuUsage returns the container's CPU time, in seconds, used over d.
func cpuUsage(t *testing.T, id string, d time.Duration) float64 {
	t.Helper()
	before := cgroupValue(t, id, "cpuacct.usage", "")
	start := time.Now()
	time.Sleep(d)
	after := cgroupValue(t, id, "cpuacct.usage", "")
	return float64(after-before) / 1e9 / time.Since(start).Seconds()
}

// taskStatus is the task's status in `ctr task ls`.
func taskStatus(t *testing.T, id string) string {
	t.Helper()
	out, _, _ := e.ctr("task", "ls")
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == id {
			return f[2]
		}
	}
	return ""
}

// moduleVersion is the version of a module this repository requires.
func moduleVersion(t *testing.T, module string) string {
	t.Helper()
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Version}}", module)
	cmd.Dir = repoRoot()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -m %s: %v", module, err)
	}
	return strings.TrimSpace(string(out))
}

// shimVersion is the version the shim's binary reports of itself.
func shimVersion(t *testing.T) string {
	t.Helper()
	out, err := exec.Command(e.shim, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v", e.shim, err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "Version:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no Version in %s --version:\n%s", e.shim, out)
	return ""
}

// startDetached has `ctr run -d` start a container of the test image, its
// output logged to a file, and returns its id and the log's path. The
// test's end kills and removes it, if it is still there.
func startDetached(t *testing.T, args ...string) (string, string) {
	t.Helper()
	id := newID(t)
	log := filepath.Join(e.dir, id+".log")
	a := []string{"run", "-d", "--runtime", runtimeName, "--runtime-config-path", e.optsFile, "--log-uri", "file://" + log, e.imageName, id}
	if _, stderr, err := e.ctr(append(a, args...)...); err != nil {
		t.Fatalf("ctr run -d: %v: %s", err, stderr)
	}
	t.Cleanup(func() {
		e.ctr("task", "kill", "-s", "SIGKILL", id)
		e.ctr("task", "rm", "-f", id)
		e.ctr("container", "rm", id)
	})
	return id, log
}

// waitLog waits until the file at path holds want.
func waitLog(t *testing.T, path, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not hold %q: %q", path, want, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dialShim connects to the shim of task id as containerd does: at the
// address of the bundle's bootstrap.json (containerd 2.x), or of its
// address file (1.7).
func dialShim(t *testing.T, id string) *ttrpc.Client {
	t.Helper()
	bundle := filepath.Join(e.dir, "state", "io.containerd.runtime.v2.task", "default", id)
	var address string
	if bootstrap, err := os.ReadFile(filepath.Join(bundle, "bootstrap.json")); err == nil {
		var params struct {
			Address string `json:"address"`
		}
		if err := json.Unmarshal(bootstrap, &params); err != nil {
			t.Fatal(err)
		}
		address = params.Address
	} else if b, err := os.ReadFile(filepath.Join(bundle, "address")); err == nil {
		address = string(b)
	} else {
		t.Fatalf("no bootstrap.json nor address file in the bundle: %v", err)
	}
	conn, err := net.Dial("unix", strings.TrimPrefix(address, "unix://"))
	if err != nil {
		t.Fatal(err)
	}
	return ttrpc.NewClient(conn)
}

// onTerminal is a ctr command run on a terminal of the test's own.
type onTerminal struct {
	master console.Console
	cmd    *exec.Cmd
	out    lockedBuffer
	exited chan struct{}
	err    error // cmd's, once exited is closed
}

// startOnTerminal starts ctr with args on a new pty of size rows x cols,
// as its controlling terminal, and copies what the pty shows.
func startOnTerminal(t *testing.T, rows, cols uint16, args ...string) *onTerminal {
	t.Helper()
	master, slavePath, err := console.NewPty()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { master.Close() })
	if err := master.Resize(console.WinSize{Height: rows, Width: cols}); err != nil {
		t.Fatal(err)
	}
	slave, err := os.OpenFile(slavePath, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer slave.Close()
	o := &onTerminal{master: master, exited: make(chan struct{})}
	o.cmd = exec.Command(e.ctrBin, append([]string{"--address", e.address}, args...)...)
	o.cmd.Stdin, o.cmd.Stdout, o.cmd.Stderr = slave, slave, slave
	o.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if err := o.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { o.err = o.cmd.Wait(); close(o.exited) }()
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			o.out.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		select {
		case <-o.exited:
		case <-time.After(10 * time.Second):
			o.cmd.Process.Kill()
			t.Errorf("ctr %v did not end", args)
		}
	})
	return o
}

// waitFor waits until the terminal shows want.
func (o *onTerminal) waitFor(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(o.out.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("terminal shows no %q: %q", want, o.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// end types "quit" for the probe's tty command, and waits for ctr to end.
func (o *onTerminal) end(t *testing.T) {
	t.Helper()
	o.master.Write([]byte("quit\r"))
	select {
	case <-o.exited:
		if o.err != nil {
			t.Errorf("ctr: %v; terminal %q", o.err, o.out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the guest did not end: %q", o.out.String())
	}
}

// termSize returns the size of the terminal on process pid's stdin.
func termSize(t *testing.T, pid int) *unix.Winsize {
	t.Helper()
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/fd/0", pid), os.O_RDONLY|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil {
		t.Fatalf("the runner's stdin is no terminal: %v", err)
	}
	return ws
}

func findLine(s, prefix string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

// writeOnly says whether descriptor fd of process pid is open write-only.
func writeOnly(t *testing.T, pid, fd int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "flags:"); ok {
			flags, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32)
			return err == nil && flags&3 == 1 // O_WRONLY
		}
	}
	return false
}

// procStatus reads a field (in kB) of /proc/PID/status, in bytes.
func procStatus(pid int, field string) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// parentPid is the parent of process pid (the shim of a container's
// process); 0 if pid is gone.
func parentPid(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}
