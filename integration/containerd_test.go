package integration

import (
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

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

// TestMatrixTestsExist: a test renamed or removed does not drop out of the
// version matrix unseen.
func TestMatrixTestsExist(t *testing.T) {
	files, err := filepath.Glob("*_test.go")
	if err != nil {
		t.Fatal(err)
	}
	defined := map[string]bool{}
	fset := token.NewFileSet()
	for _, f := range files {
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range file.Decls {
			if fn, ok := d.(*ast.FuncDecl); ok && fn.Recv == nil {
				defined[fn.Name.Name] = true
			}
		}
	}
	for _, name := range matrixTests {
		if !defined[name] {
			t.Errorf("the version matrix names %s, which is no test", name)
		}
	}
}
