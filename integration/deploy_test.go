package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// podFile is what the tests read of a Pod manifest in deploy/kubernetes.
type podFile struct {
	Spec struct {
		RuntimeClassName string `yaml:"runtimeClassName"`
		Containers       []struct {
			Name      string   `yaml:"name"`
			Image     string   `yaml:"image"`
			Command   []string `yaml:"command"`
			Args      []string `yaml:"args"`
			Env       []struct{ Name, Value string }
			Resources struct {
				Limits map[string]string `yaml:"limits"`
			} `yaml:"resources"`
		} `yaml:"containers"`
	} `yaml:"spec"`
}

// quantity parses the Kubernetes quantities the manifests use: memory in
// Ki, Mi or Gi, CPU in millicores ("500m") or cores.
func quantity(t *testing.T, s string) int64 {
	t.Helper()
	for suffix, mult := range map[string]int64{"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "m": 1} {
		if n, ok := strings.CutSuffix(s, suffix); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			if err != nil {
				t.Fatalf("quantity %q: %v", s, err)
			}
			return v * mult
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("quantity %q: %v", s, err)
	}
	return v * 1000 // cores, in millicores
}

// exampleImages builds, with the project's wasm-image as the manifests'
// comments say, the images deploy/kubernetes's Wasm containers run, and
// imports them into the CRI containerd.
func exampleImages(t *testing.T, c *criEnv) {
	t.Helper()
	dir := t.TempDir()
	tool := filepath.Join(dir, "wasm-image")
	if err := goBuild(tool, "./cmd/wasm-image", "CGO_ENABLED=0"); err != nil {
		t.Fatal(err)
	}
	hello := filepath.Join(dir, "hello.wasm")
	if err := goBuild(hello, "./examples/hello", "GOOS=wasip1", "GOARCH=wasm"); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"-name", "example.local/http-server:latest", "-wasm", filepath.Join(e.fixtures, "http-server.wasm")},
		{"-name", "example.local/hello:latest", "-wasm", hello, "-file", filepath.Join(repoRoot(), "examples/hello/greeting.txt") + ":/etc/greeting.txt"},
	} {
		tar := filepath.Join(dir, "image.tar")
		if out, err := exec.Command(tool, append([]string{"-o", tar}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("wasm-image %v: %v: %s", args, err, out)
		}
		c.importImage(t, tar, args[1])
	}
}

// TestDeployExamples runs the Wasm containers of deploy/kubernetes's pods
// through CRI as the manifests declare them (image, args, env, memory and
// CPU limits, RuntimeClass handler) and puts them to work: the hello pod
// runs to completion; the HTTP server serves 16 clients at once and then
// an exec beside it, and is still running, never OOM-killed. The native
// busybox sidecars are not run (no registry here): TestCRIWasmServer has a
// native client in a Wasm server's pod.
func TestDeployExamples(t *testing.T) {
	c := startCRI(t)
	exampleImages(t, c)
	files, err := filepath.Glob(filepath.Join(repoRoot(), "deploy/kubernetes/*-pod.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no pod manifests: %v", err)
	}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var pod podFile
		if err := yaml.Unmarshal(data, &pod); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if pod.Spec.RuntimeClassName != "wasm" {
			t.Fatalf("%s: runtimeClassName %q", file, pod.Spec.RuntimeClassName)
		}
		name := strings.TrimSuffix(filepath.Base(file), ".yaml")
		t.Run(name, func(t *testing.T) {
			podID, podCfg := c.pod(t, name, "wasm")
			ran := 0
			for _, ctn := range pod.Spec.Containers {
				if !strings.HasPrefix(ctn.Image, "example.local/") {
					continue // a native sidecar from a registry
				}
				ran++
				cfg := &cri.ContainerConfig{
					Metadata: &cri.ContainerMetadata{Name: ctn.Name},
					Image:    &cri.ImageSpec{Image: ctn.Image},
					Command:  ctn.Command,
					Args:     ctn.Args,
					LogPath:  ctn.Name + ".log",
					Linux:    &cri.LinuxContainerConfig{Resources: &cri.LinuxContainerResources{}},
				}
				for _, kv := range ctn.Env {
					cfg.Envs = append(cfg.Envs, &cri.KeyValue{Key: kv.Name, Value: []byte(kv.Value)})
				}
				if m, ok := ctn.Resources.Limits["memory"]; ok {
					cfg.Linux.Resources.MemoryLimitInBytes = quantity(t, m)
				}
				if cpu, ok := ctn.Resources.Limits["cpu"]; ok {
					cfg.Linux.Resources.CpuPeriod = 100000
					cfg.Linux.Resources.CpuQuota = quantity(t, cpu) * 100
				}
				id := c.containerConfig(t, podID, podCfg, cfg)
				switch ctn.Image {
				case "example.local/hello:latest":
					st := c.waitExit(t, id)
					out := strings.Join(logLines(t, st.LogPath, "stdout"), "|")
					if st.ExitCode != 0 || !strings.Contains(out, "Kubernetes") {
						t.Errorf("%s: exit %d, stdout %q", ctn.Name, st.ExitCode, out)
					}
				case "example.local/http-server:latest":
					serveUnderLimits(t, c, podID, id, cfg)
				default:
					t.Fatalf("%s: no check for image %s", file, ctn.Image)
				}
			}
			if ran == 0 {
				t.Fatalf("%s has no Wasm container", file)
			}
		})
	}
}

// serveUnderLimits loads the example server (container id, created with
// cfg's limits): 16 clients, 200 requests each, over the pod's IP; then a
// Wasm exec beside it; and checks that it served every request and is
// still running, never OOM-killed.
func serveUnderLimits(t *testing.T, c *criEnv, podID, id string, cfg *cri.ContainerConfig) {
	t.Helper()
	ctx := context.Background()
	status, err := c.rt.PodSandboxStatus(ctx, &cri.PodSandboxStatusRequest{PodSandboxId: podID})
	if err != nil {
		t.Fatal(err)
	}
	port := ""
	for _, kv := range cfg.Envs {
		if kv.Key == "WASM_LISTEN" {
			_, port, _ = strings.Cut(string(kv.Value), ":")
		}
	}
	url := fmt.Sprintf("http://%s:%s/load", status.GetStatus().GetNetwork().GetIp(), port)
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server does not answer on %s: %v", url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 200; j++ {
				resp, err := client.Get(url)
				if err != nil {
					errs <- err
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(body) != "hello from wasm, you asked for /load\n" {
					errs <- fmt.Errorf("%s: %q", resp.Status, body)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("a request to the server under its limits failed: %v", err)
	}

	// An exec of a Wasm module beside the server: it runs, or fails with
	// a clear error if it does not fit in the limit; the server serves on.
	resp, err := c.rt.ExecSync(ctx, &cri.ExecSyncRequest{ContainerId: id, Cmd: []string{"/http-server.wasm"}, Timeout: 60})
	if err != nil {
		t.Fatalf("ExecSync: %v", err)
	}
	t.Logf("exec beside the server: exit %d, stderr %q", resp.ExitCode, resp.Stderr)
	if resp.ExitCode == 0 || !strings.Contains(string(resp.Stderr), "no listener") && !strings.Contains(string(resp.Stderr), "does not fit in the container's memory limit") {
		t.Errorf("exec of the server's module beside it: exit %d, stderr %q; want it to say it has no listener or does not fit", resp.ExitCode, resp.Stderr)
	}

	if r, err := client.Get(url); err != nil {
		t.Errorf("the server stopped answering: %v", err)
	} else {
		r.Body.Close()
	}
	st, err := c.rt.ContainerStatus(ctx, &cri.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		t.Fatal(err)
	}
	if st.Status.State != cri.ContainerState_CONTAINER_RUNNING {
		t.Errorf("the server is %s (exit %d, %s)", st.Status.State, st.Status.ExitCode, st.Status.Reason)
	}
	pid := c.containerPid(t, id)
	t.Logf("server under a %d MiB limit: working set %d MiB after the load", cfg.Linux.Resources.MemoryLimitInBytes>>20, workingSet(t, pid)>>20)
	if n := oomKills(t, pid); n != 0 {
		t.Errorf("the container's cgroup saw %d OOM kills", n)
	}
}

// memoryCgroupDir is the v1 memory cgroup directory of process pid.
func memoryCgroupDir(t *testing.T, pid int) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) == 3 && f[1] == "memory" {
			return filepath.Join("/sys/fs/cgroup/memory", f[2])
		}
	}
	t.Fatalf("process %d has no v1 memory cgroup: %q", pid, data)
	return ""
}

// workingSet is the working set of pid's memory cgroup as the kubelet
// computes it: usage minus inactive file pages.
func workingSet(t *testing.T, pid int) int64 {
	dir := memoryCgroupDir(t, pid)
	usage, _ := os.ReadFile(filepath.Join(dir, "memory.usage_in_bytes"))
	u, _ := strconv.ParseInt(strings.TrimSpace(string(usage)), 10, 64)
	return u - cgroupStat(t, filepath.Join(dir, "memory.stat"), "total_inactive_file")
}

// oomKills is the number of OOM kills in pid's memory cgroup.
func oomKills(t *testing.T, pid int) int64 {
	return cgroupStat(t, filepath.Join(memoryCgroupDir(t, pid), "memory.oom_control"), "oom_kill")
}

// cgroupStat reads one "key value" line of a cgroup file.
func cgroupStat(t *testing.T, file, key string) int64 {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(l, " "); ok && k == key {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	t.Fatalf("%s has no %s", file, key)
	return 0
}
