package kube

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/oci/image"
	corev1 "k8s.io/api/core/v1"
)

// installerPod is the name of the installer DaemonSet's pod on the node.
func installerPod(t *testing.T) string {
	t.Helper()
	out := k(t, "get", "pods", "-n", "containerd-shim-wasm", "-l", "app.kubernetes.io/name=containerd-shim-wasm-installer", "-o", "jsonpath={.items[*].metadata.name}")
	names := strings.Fields(out)
	if len(names) != 1 {
		t.Fatalf("installer pods: %q", out)
	}
	return names[0]
}

// TestDaemonSet: deploy/kubernetes's installer, applied through the
// lane's overlay (TestMain), installed the shim and the handler in the
// node's root, had containerd restarted (the node's systemctl), labelled
// the node; the RuntimeClass puts a Wasm pod on that node with its
// overhead; and the DaemonSet's pod stays as the node agent, which
// compiles the module of an image imported after it started before that
// module's first pod.
func TestDaemonSet(t *testing.T) {
	for _, p := range []string{"usr/local/bin/containerd-shim-wasm-v1", "etc/containerd/conf.d/containerd-shim-wasm.toml"} {
		if _, err := os.Stat(filepath.Join(l.node, p)); err != nil {
			t.Errorf("the installer did not write the node's /%s: %v", p, err)
		}
	}
	if hs, err := l.handlers(context.Background()); err != nil || !slices.Contains(hs, "wasm") {
		t.Errorf("containerd's CRI serves %v (%v), want wasm among them", hs, err)
	}
	if l.restarts < 1 {
		t.Errorf("the installer never restarted containerd")
	}
	pod := installerPod(t)
	out, _ := l.kubectl(context.Background(), nil, "logs", "-n", "containerd-shim-wasm", pod)
	prev, _ := l.kubectl(context.Background(), nil, "logs", "-n", "containerd-shim-wasm", pod, "--previous")
	if !strings.Contains(out+prev, "labelled node "+nodeName) {
		t.Errorf("the installer's log does not say it labelled the node:\n%s\nprevious:\n%s", out, prev)
	}
	t.Logf("installer log:\n%s", out)

	t.Run("RuntimeClass", func(t *testing.T) {
		apply(t, wasmPod("rc-sched", "", `
      command: ["/probe.wasm", "sleep"]`))
		p := waitPod(t, "rc-sched", 2*time.Minute, ready)
		if p.Spec.NodeName != nodeName || p.Spec.NodeSelector["containerd-shim-wasm.io/handler"] != "wasm" {
			t.Errorf("pod on node %q with nodeSelector %v", p.Spec.NodeName, p.Spec.NodeSelector)
		}
		if m := p.Spec.Overhead.Memory(); m == nil || m.String() != "24Mi" {
			t.Errorf("pod overhead %v, want the RuntimeClass's 24Mi", p.Spec.Overhead)
		}
	})

	t.Run("agent compiles a pulled module before its first pod", func(t *testing.T) {
		// The agent is the DaemonSet pod's main process: it runs (and has
		// not restarted since it started).
		p := waitPod(t, "containerd-shim-wasm/"+pod, 2*time.Minute, ready)
		if cs := containerStatus(p, "install"); cs == nil || cs.RestartCount > 0 {
			out, _ := l.kubectl(context.Background(), nil, "logs", "-n", "containerd-shim-wasm", pod, "--previous")
			t.Fatalf("the installer's pod restarted (%+v); previous log:\n%s", cs, out)
		}
		module := withCustomSection(fix.probe, "agent "+time.Now().String())
		img := &image.Image{Name: "example.local/agent-pulled:v1", Files: []image.File{{Path: "/probe.wasm", Data: module}}, Entrypoint: []string{"/probe.wasm"}}
		if err := l.importImage(img); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(module)
		deadline := time.Now().Add(2 * time.Minute)
		for !cached(t, hex.EncodeToString(sum[:])) {
			if time.Now().After(deadline) {
				out, _ := l.kubectl(context.Background(), nil, "logs", "-n", "containerd-shim-wasm", pod)
				t.Fatalf("the agent did not compile the imported module in 2 minutes; its log:\n%s", out)
			}
			time.Sleep(200 * time.Millisecond)
		}
		apply(t, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: agent-first}
spec:
  runtimeClassName: wasm
  restartPolicy: Never
  containers:
    - name: probe
      image: %s
      imagePullPolicy: Never
      args: ["echo", "compiled ahead"]
`, img.Name))
		waitPod(t, "agent-first", 2*time.Minute, phase(corev1.PodSucceeded))
		if out := logs(t, "agent-first", "probe"); !strings.Contains(out, "[compiled ahead]") {
			t.Errorf("the module's first pod printed %q", out)
		}
	})
}

// cached says whether the node's compile cache (the installed handler's
// default CacheRoot, in the node's /var/lib) has the module of that
// SHA-256.
func cached(t *testing.T, sum string) bool {
	t.Helper()
	records, _ := filepath.Glob(filepath.Join(l.node, "var", "lib", "containerd-shim-wasm", "v1", "index", "*"))
	for _, p := range records {
		var rec struct{ Module string }
		if b, err := os.ReadFile(p); err == nil && json.Unmarshal(b, &rec) == nil && rec.Module == sum {
			return true
		}
	}
	return false
}

// withCustomSection appends a custom section to a module: another module
// of the same behaviour, which no cache has compiled.
func withCustomSection(module []byte, name string) []byte {
	leb := func(n int) []byte {
		var b []byte
		for {
			c := byte(n & 0x7f)
			n >>= 7
			if n != 0 {
				b = append(b, c|0x80)
			} else {
				return append(b, c)
			}
		}
	}
	payload := append(leb(len(name)), name...)
	out := append([]byte{}, module...)
	out = append(out, 0)
	out = append(out, leb(len(payload))...)
	return append(out, payload...)
}

// wasmPod is a pod of the lane's test image on the wasm RuntimeClass with
// one container "main" (its YAML lines after the image), and spec lines
// (restartPolicy etc.).
func wasmPod(name, spec, container string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
spec:
  runtimeClassName: wasm
  terminationGracePeriodSeconds: 5%s
  containers:
    - name: main
      image: %s
      imagePullPolicy: Never%s
`, name, spec, testImage, container)
}

// applyFile applies a manifest file as shipped, deleted at the test's end.
func applyFile(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	apply(t, string(data))
}

// TestExamplePods: deploy/kubernetes's example pods, applied as shipped.
// The hello pod's Wasm container greets and its native busybox sidecar
// runs beside it, to Succeeded. The HTTP pod's Wasm server becomes Ready
// (httpGet readiness probe), its native sidecar's first call is answered
// (it retries until the listener is open), and under its limits the
// server serves 16 clients at once over the pod's IP, never restarted nor
// OOM-killed.
func TestExamplePods(t *testing.T) {
	t.Run("hello", func(t *testing.T) {
		applyFile(t, filepath.Join(l.repo, "deploy/kubernetes/hello-pod.yaml"))
		p := waitPod(t, "wasm-hello", 2*time.Minute, phase(corev1.PodSucceeded))
		for _, name := range []string{"hello", "sidecar"} {
			if cs := containerStatus(p, name); cs == nil || cs.State.Terminated == nil || cs.State.Terminated.ExitCode != 0 {
				t.Errorf("container %s: %+v", name, cs)
			}
		}
		if out := logs(t, "wasm-hello", "hello"); !strings.Contains(out, "Hello, Kubernetes! (from wasip1/wasm") || !strings.Contains(out, "/etc/greeting.txt says:") {
			t.Errorf("hello's log: %q", out)
		}
		if out := logs(t, "wasm-hello", "sidecar"); !strings.Contains(out, "native sidecar beside a Wasm container") {
			t.Errorf("sidecar's log: %q", out)
		}
	})
	t.Run("http", func(t *testing.T) {
		applyFile(t, filepath.Join(l.repo, "deploy/kubernetes/http-pod.yaml"))
		p := waitPod(t, "wasm-http", 2*time.Minute, ready)
		out := waitLogs(t, "wasm-http", "sidecar", "hello from wasm, you asked for /from-sidecar", time.Minute)
		if strings.Contains(out, "wget:") {
			t.Errorf("the sidecar's calls failed: %q", out)
		}
		url := fmt.Sprintf("http://%s:8080/load", p.Status.PodIP)
		tr := &http.Transport{MaxIdleConnsPerHost: 16}
		defer tr.CloseIdleConnections()
		client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		start := time.Now()
		for i := 0; i < 16; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; j < 100; j++ {
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
		t.Logf("1600 requests from 16 clients in %.2f s", time.Since(start).Seconds())
		p = getPod(t, "wasm-http")
		for _, name := range []string{"server", "sidecar"} {
			cs := containerStatus(p, name)
			if cs == nil || cs.RestartCount != 0 || cs.State.Running == nil {
				t.Errorf("container %s after the load: %+v", name, cs)
			}
			if cs != nil && cs.LastTerminationState.Terminated != nil {
				t.Errorf("container %s ended once: %+v", name, cs.LastTerminationState.Terminated)
			}
		}
	})
}
