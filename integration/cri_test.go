package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/cgroups"
)

// TestCRIPod plays kubelet: a pod on the wasm handler runs its pause
// container and a native container natively and a Wasm container in
// wazero, all in one shim; a pod on the runc handler runs beside it.
func TestCRIPod(t *testing.T) {
	if _, err := tool("containerd-shim-runc-v2"); err != nil {
		t.Fatal(err)
	}
	c := startCRI(t)
	ctx := context.Background()

	podID, podCfg := c.pod(t, "mixed", "wasm")
	shims := shimPids(e.shim)
	if len(shims) != 1 {
		t.Fatalf("shim processes after RunPodSandbox: %v, want one", shims)
	}
	runcPod, runcCfg := c.pod(t, "plain", "")

	wasmID := c.container(t, podID, podCfg, "wasm", "/probe.wasm", "echo", "from wasm", "in a pod")
	longID := c.container(t, podID, podCfg, "long", "/probe.wasm", "long", "20000")
	nativeID := c.container(t, podID, podCfg, "native", "/bin/native", "from native")
	failID := c.container(t, podID, podCfg, "fails", "/exit42.wasm")
	plainID := c.container(t, runcPod, runcCfg, "plain", "/bin/native", "on runc")

	// A running Wasm container shares the pod's network, IPC and UTS
	// namespaces with the pause container.
	sleeper := c.container(t, podID, podCfg, "sleeper", "/probe.wasm", "sleep")
	runner, pause := c.containerPid(t, sleeper), c.sandboxPid(t, podID)
	if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", runner)); !strings.HasPrefix(string(b), "/dev/.containerd-shim-wasm-runner") {
		t.Errorf("the Wasm container's process is %q, not the runner", b)
	}
	for _, ns := range []string{"net", "ipc", "uts"} {
		w, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", runner, ns))
		p, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pause, ns))
		if w == "" || w != p {
			t.Errorf("the Wasm container's %s namespace %q is not the pod's %q", ns, w, p)
		}
	}
	// Stopping one container of the shared shim leaves the others running.
	other := c.container(t, podID, podCfg, "other-sleeper", "/probe.wasm", "sleep")
	c.containerPid(t, other)
	if _, err := c.rt.StopContainer(ctx, &cri.StopContainerRequest{ContainerId: sleeper, Timeout: 30}); err != nil {
		t.Fatalf("StopContainer: %v", err)
	}
	if st := c.waitExit(t, sleeper); st.ExitCode != 143 || st.Reason != "Error" {
		t.Errorf("stopped Wasm container: exit code %d reason %q, want 143, Error", st.ExitCode, st.Reason)
	}
	if resp, err := c.rt.ContainerStatus(ctx, &cri.ContainerStatusRequest{ContainerId: other}); err != nil || resp.Status.State != cri.ContainerState_CONTAINER_RUNNING {
		t.Errorf("the pod's other Wasm container after one was stopped: %v, %v", resp.GetStatus().GetState(), err)
	}
	if _, err := c.rt.StopContainer(ctx, &cri.StopContainerRequest{ContainerId: other, Timeout: 30}); err != nil {
		t.Fatalf("StopContainer: %v", err)
	}
	c.waitExit(t, other)

	// A line longer than CRI's limit (16 KiB) is split into partial lines.
	if st := c.waitExit(t, longID); st.ExitCode != 0 {
		t.Errorf("long: exit code %d", st.ExitCode)
	} else {
		b, _ := os.ReadFile(st.LogPath)
		var tags []string
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if f := strings.SplitN(l, " ", 4); len(f) == 4 {
				tags = append(tags, f[2]+fmt.Sprint(len(f[3])))
			}
		}
		if len(tags) < 3 || tags[0][0] != 'P' || tags[len(tags)-1] != "F5" {
			t.Errorf("long line logged as %v; want partial (P) lines, then the rest and \"short\" in full (F)", tags)
		}
	}

	for _, tt := range []struct {
		id, name string
		code     int32
		stdout   []string
	}{
		{wasmID, "wasm", 0, []string{"[from wasm]", "[in a pod]"}},
		{nativeID, "native", 0, []string{`native hello, args ["from native"]`}},
		{failID, "fails", 42, nil},
		{plainID, "plain", 0, []string{`native hello, args ["on runc"]`}},
	} {
		st := c.waitExit(t, tt.id)
		if want := map[bool]string{true: "Completed", false: "Error"}[tt.code == 0]; st.Reason != want {
			t.Errorf("%s: reason %q, want %q", tt.name, st.Reason, want)
		}
		if st.ExitCode != tt.code {
			t.Errorf("%s: exit code %d, want %d (reason %q, message %q)", tt.name, st.ExitCode, tt.code, st.Reason, st.Message)
		}
		if tt.stdout != nil {
			if got := logLines(t, st.LogPath, "stdout"); strings.Join(got, "|") != strings.Join(tt.stdout, "|") {
				t.Errorf("%s: log %q, want %q", tt.name, got, tt.stdout)
			}
		}
	}
	if got := shimPids(e.shim); len(got) != 1 || got[0] != shims[0] {
		t.Errorf("shim processes %v, want the pod's one shim %v", got, shims)
	}

	for _, id := range []string{podID, runcPod} {
		if _, err := c.rt.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
			t.Fatalf("StopPodSandbox: %v", err)
		}
		if _, err := c.rt.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
			t.Fatalf("RemovePodSandbox: %v", err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(shimPids(e.shim)) > 0 || len(runnerPids()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("after RemovePodSandbox: shims %v, runners %v", shimPids(e.shim), runnerPids())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if m := mountsUnder(c.dir); len(m) > 0 {
		t.Errorf("mounts left after RemovePodSandbox: %v", m)
	}
	for _, id := range []string{podID, runcPod, wasmID, longID, nativeID, failID, plainID, sleeper, other} {
		if left := cgroups.Dirs(cgroups.Root, "/k8s.io/"+id); len(left) > 0 {
			t.Errorf("cgroups left after RemovePodSandbox: %v", left)
		}
	}
}

// TestCRIWasmServer: a Wasm HTTP server whose listener the pod author
// declares with WASM_LISTEN answers a native container of the same pod over
// localhost, and the node over the pod's IP.
func TestCRIWasmServer(t *testing.T) {
	c := startCRI(t)
	ctx := context.Background()
	podID, podCfg := c.pod(t, "server", "wasm")
	server := c.containerEnv(t, podID, podCfg, "server", []*cri.KeyValue{{Key: "WASM_LISTEN", Value: []byte(":8080")}}, "/http-server.wasm")
	client := c.container(t, podID, podCfg, "client", "/bin/httpget", "http://127.0.0.1:8080/from-sidecar")
	if st := c.waitExit(t, client); st.ExitCode != 0 {
		t.Fatalf("the native client failed: exit code %d", st.ExitCode)
	} else if got := logLines(t, st.LogPath, "stdout"); strings.Join(got, "|") != "200 hello from wasm, you asked for /from-sidecar" {
		t.Errorf("the native client got %q", got)
	}

	status, err := c.rt.PodSandboxStatus(ctx, &cri.PodSandboxStatusRequest{PodSandboxId: podID})
	if err != nil {
		t.Fatal(err)
	}
	ip := status.GetStatus().GetNetwork().GetIp()
	if ip == "" {
		t.Fatal("the pod has no IP")
	}
	out, err := exec.Command(filepath.Join(e.fixtures, "httpget"), "http://"+ip+":8080/from-node").CombinedOutput()
	if err != nil || string(out) != "200 hello from wasm, you asked for /from-node\n" {
		t.Errorf("GET from the node over %s: %q, %v", ip, out, err)
	}

	st, err := c.rt.ContainerStatus(ctx, &cri.ContainerStatusRequest{ContainerId: server})
	if err != nil {
		t.Fatal(err)
	}
	if got := logLines(t, st.Status.LogPath, "stdout"); len(got) == 0 || got[0] != "serving HTTP on 0.0.0.0:8080" {
		t.Errorf("server log %q", got)
	}
	runner := c.containerPid(t, server)
	cpu := func() int {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", runner))
		f := strings.Fields(string(b))
		u, _ := strconv.Atoi(f[13])
		s, _ := strconv.Atoi(f[14])
		return u + s
	}
	// An idle server must not spin (wazero's own poll_oneoff would have it
	// take a whole core): under 1% of a core, once start-up is over.
	time.Sleep(3 * time.Second)
	c0 := cpu()
	time.Sleep(3 * time.Second)
	ticks := cpu() - c0 // 100 ticks a second
	t.Logf("idle server: %d CPU ticks in 3 s", ticks)
	if ticks > 3 {
		t.Errorf("the idle Wasm server used %d%% of a core", ticks/3)
	}
	if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", runner)); strings.Contains(string(b), "WASM_LISTEN") {
		t.Errorf("the runner's environment holds WASM_LISTEN: %q", b)
	}
	// An exec into the serving container gets its environment but not its
	// listeners (they are the server's), and the server serves on.
	for _, cmd := range [][]string{{"/probe.wasm", "echo", "beside the server"}, {"/http-server.wasm"}} {
		resp, err := c.rt.ExecSync(ctx, &cri.ExecSyncRequest{ContainerId: server, Cmd: cmd, Timeout: 60})
		if err != nil {
			t.Fatalf("ExecSync %v: %v", cmd, err)
		}
		if strings.Contains(string(resp.Stderr), "address already in use") {
			t.Errorf("ExecSync %v opened the server's listener: %q", cmd, resp.Stderr)
		}
		if cmd[0] == "/probe.wasm" && (resp.ExitCode != 0 || string(resp.Stdout) != "[beside the server]\n") {
			t.Errorf("ExecSync %v: exit %d, stdout %q, stderr %q", cmd, resp.ExitCode, resp.Stdout, resp.Stderr)
		}
	}
	if out, err := exec.Command(filepath.Join(e.fixtures, "httpget"), "http://"+ip+":8080/after-exec").CombinedOutput(); err != nil || string(out) != "200 hello from wasm, you asked for /after-exec\n" {
		t.Errorf("GET after the execs: %q, %v", out, err)
	}
	// The handler's options reached the shim: the server (run by no other
	// test) was compiled into the tests' cache, not the node's default one.
	if !cachedIn(t, filepath.Join(e.cacheRoot, "v1"), filepath.Join(e.fixtures, "http-server.wasm")) {
		t.Errorf("the server is not in the compile cache of the handler's options (%s)", e.cacheRoot)
	}
}

// TestRuntimeClassOverhead: the RuntimeClass counts each pod's shim, which
// runs outside the pod's cgroup, as overhead.podFixed.memory: a pod's shim
// with one idle Wasm container stays within it.
func TestRuntimeClassOverhead(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot(), "deploy", "kubernetes", "runtimeclass.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rc struct {
		Overhead struct {
			PodFixed map[string]string `yaml:"podFixed"`
		} `yaml:"overhead"`
	}
	if err := yaml.Unmarshal(data, &rc); err != nil || rc.Overhead.PodFixed["memory"] == "" {
		t.Fatalf("runtimeclass.yaml: no overhead.podFixed.memory (%v)", err)
	}
	limit := quantity(t, rc.Overhead.PodFixed["memory"])
	c := startCRI(t)
	before := shimPids(e.shim)
	podID, podCfg := c.pod(t, "overhead", "wasm")
	c.containerPid(t, c.container(t, podID, podCfg, "idle", "/probe.wasm", "sleep"))
	var shim int
	for _, p := range shimPids(e.shim) {
		if !slices.Contains(before, p) {
			shim = p
		}
	}
	if shim == 0 {
		t.Fatal("no shim for the pod")
	}
	time.Sleep(2 * time.Second) // idle
	if rss := procStatus(shim, "VmRSS"); rss == 0 || rss > limit {
		t.Errorf("the pod's shim has %d bytes of RSS; the RuntimeClass counts %d", rss, limit)
	} else {
		t.Logf("the pod's shim: RSS %.1f MB, overhead %.1f MB", float64(rss)/1e6, float64(limit)/1e6)
	}
}
