package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/cgroups"
	corev1 "k8s.io/api/core/v1"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestProbes: exec liveness and readiness probes (default timeout, 1 s)
// on Wasm containers, in several pods at once, and httpGet probes on a
// Wasm server: every pod Ready, and no restart in 2 minutes. A readiness
// probe whose module exits 1 keeps its pod unready: the probes do run.
func TestProbes(t *testing.T) {
	t.Parallel()
	execProbes := `
      command: ["/probe.wasm", "sleep"]
      livenessProbe:
        exec: {command: ["/probe.wasm", "exit", "0"]}
      readinessProbe:
        exec: {command: ["/probe.wasm", "exit", "0"]}`
	names := []string{"probe-exec-1", "probe-exec-2", "probe-exec-3", "probe-http"}
	for _, n := range names[:3] {
		apply(t, wasmPod(n, "", execProbes))
	}
	apply(t, wasmPod("probe-http", "", `
      command: ["/server.wasm"]
      env: [{name: WASM_LISTEN, value: ":8080"}]
      livenessProbe:
        httpGet: {path: /live, port: 8080}
      readinessProbe:
        httpGet: {path: /ready, port: 8080}`))
	apply(t, wasmPod("probe-unready", "", `
      command: ["/probe.wasm", "sleep"]
      readinessProbe:
        exec: {command: ["/probe.wasm", "exit", "1"]}
        periodSeconds: 2`))
	for _, n := range names {
		waitPod(t, n, 2*time.Minute, ready)
	}
	execLatency(t, getPod(t, "probe-exec-1"))
	start := time.Now()
	for time.Since(start) < 2*time.Minute {
		for _, n := range names {
			p := getPod(t, n)
			if cs := containerStatus(p, "main"); cs == nil || cs.RestartCount != 0 {
				t.Fatalf("pod %s restarted %v after Ready: %+v\nevents: %s", n, time.Since(start).Round(time.Second), cs, strings.Join(events(t, n), "\n"))
			}
		}
		time.Sleep(5 * time.Second)
	}
	for _, n := range names {
		p := getPod(t, n)
		if why := ready(p); why != "" {
			t.Errorf("pod %s not Ready after 2 minutes: %s\nevents: %s", n, why, strings.Join(events(t, n), "\n"))
		}
		var unhealthy []string
		for _, e := range events(t, n) {
			if strings.HasPrefix(e, "Unhealthy") {
				unhealthy = append(unhealthy, e)
			}
		}
		if len(unhealthy) > 0 {
			t.Logf("pod %s had failed probes (no restart): %s", n, strings.Join(unhealthy, "; "))
		}
	}
	p := getPod(t, "probe-unready")
	if ready(p) == "" {
		t.Errorf("a pod whose readiness probe's module exits 1 is Ready")
	}
	unhealthy := false
	for _, e := range events(t, "probe-unready") {
		unhealthy = unhealthy || strings.HasPrefix(e, "Unhealthy")
	}
	if !unhealthy {
		t.Errorf("no Unhealthy event for the failing readiness probe: %v", events(t, "probe-unready"))
	}
}

// execLatency prints how long an exec probe's command takes through CRI's
// ExecSync, as kubelet runs it (median of 5): the probe's Wasm module
// against a native command in the same container. Printed, not asserted.
func execLatency(t *testing.T, p *corev1.Pod) {
	t.Helper()
	id := strings.TrimPrefix(containerStatus(p, "main").ContainerID, "containerd://")
	rt := criClient(t)
	median := func(cmd ...string) time.Duration {
		var ds []time.Duration
		for i := 0; i < 5; i++ {
			start := time.Now()
			resp, err := rt.ExecSync(context.Background(), &cri.ExecSyncRequest{ContainerId: id, Cmd: cmd, Timeout: 30})
			if err != nil || resp.ExitCode != 0 {
				t.Fatalf("ExecSync %v: %v %+v", cmd, err, resp)
			}
			ds = append(ds, time.Since(start))
		}
		slices.Sort(ds)
		return ds[len(ds)/2]
	}
	wasm, native := median("/probe.wasm", "exit", "0"), median("true")
	load, _ := os.ReadFile("/proc/loadavg")
	t.Logf("an exec probe's command through ExecSync (median of 5): /probe.wasm exit 0 %.0f ms, native true %.0f ms (load %s); the default timeout is 1 s",
		float64(wasm.Microseconds())/1000, float64(native.Microseconds())/1000, strings.Fields(string(load))[0])
}

// TestRestartPolicies: a crashing Wasm container (it exits 3) under each
// restartPolicy: Always and OnFailure restart it (with back-off), Never
// leaves the pod Failed; a Wasm container exiting 0 under OnFailure is
// not restarted.
func TestRestartPolicies(t *testing.T) {
	t.Parallel()
	crash := `
      command: ["/probe.wasm", "exit", "3"]`
	apply(t, wasmPod("restart-always", "\n  restartPolicy: Always", crash))
	apply(t, wasmPod("restart-onfailure", "\n  restartPolicy: OnFailure", crash))
	apply(t, wasmPod("restart-never", "\n  restartPolicy: Never", crash))
	apply(t, wasmPod("restart-onfailure-ok", "\n  restartPolicy: OnFailure", `
      command: ["/probe.wasm", "exit", "0"]`))
	restarted := func(n int32) func(p *corev1.Pod) string {
		return func(p *corev1.Pod) string {
			if cs := containerStatus(p, "main"); cs != nil && cs.RestartCount >= n {
				return ""
			}
			return fmt.Sprintf("%d restarts", n)
		}
	}
	for _, name := range []string{"restart-always", "restart-onfailure"} {
		p := waitPod(t, name, 3*time.Minute, restarted(2))
		cs := containerStatus(p, "main")
		if term := cs.LastTerminationState.Terminated; term == nil || term.ExitCode != 3 {
			t.Errorf("%s: the last run ended as %+v, want exit 3", name, cs.LastTerminationState)
		}
		if p.Status.Phase != corev1.PodRunning && p.Status.Phase != corev1.PodPending {
			t.Errorf("%s: phase %s", name, p.Status.Phase)
		}
	}
	p := waitPod(t, "restart-never", 2*time.Minute, phase(corev1.PodFailed))
	if cs := containerStatus(p, "main"); cs == nil || cs.RestartCount != 0 || cs.State.Terminated == nil || cs.State.Terminated.ExitCode != 3 {
		t.Errorf("restart-never: %+v", cs)
	}
	p = waitPod(t, "restart-onfailure-ok", 2*time.Minute, phase(corev1.PodSucceeded))
	if cs := containerStatus(p, "main"); cs == nil || cs.RestartCount != 0 {
		t.Errorf("restart-onfailure-ok: %+v", cs)
	}
}

// TestVolumes: a Wasm guest reads a configMap volume, a secret volume,
// downward API files and environment.
func TestVolumes(t *testing.T) {
	reader := func(name, path string) string {
		return fmt.Sprintf(`
    - name: %s
      image: %s
      imagePullPolicy: Never
      command: ["/probe.wasm", "cat", "%s"]
      volumeMounts:
        - {name: cm, mountPath: /cm}
        - {name: secret, mountPath: /secret}
        - {name: info, mountPath: /info}`, name, testImage, path)
	}
	apply(t, `apiVersion: v1
kind: ConfigMap
metadata: {name: vol-cm}
data: {greeting: "hello from a configMap"}
---
apiVersion: v1
kind: Secret
metadata: {name: vol-secret}
stringData: {token: "s3cret-token"}
`)
	apply(t, `apiVersion: v1
kind: Pod
metadata:
  name: volumes
  labels: {app: wasm-volumes}
  annotations: {note: "from the downward API"}
spec:
  runtimeClassName: wasm
  restartPolicy: Never
  volumes:
    - {name: cm, configMap: {name: vol-cm}}
    - {name: secret, secret: {secretName: vol-secret}}
    - name: info
      downwardAPI:
        items:
          - {path: labels, fieldRef: {fieldPath: metadata.labels}}
          - {path: annotations, fieldRef: {fieldPath: metadata.annotations}}
          - {path: mem, resourceFieldRef: {containerName: env, resource: limits.memory, divisor: 1Mi}}
  containers:`+reader("cm", "/cm/greeting")+reader("secret", "/secret/token")+reader("labels", "/info/labels")+reader("annotations", "/info/annotations")+reader("mem", "/info/mem")+`
    - name: env
      image: `+testImage+`
      imagePullPolicy: Never
      command: ["/probe.wasm", "env"]
      resources: {limits: {memory: 64Mi}}
      env:
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
        - {name: NODE_NAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
        - {name: MEM_LIMIT, valueFrom: {resourceFieldRef: {resource: limits.memory}}}
        - {name: GREETING, valueFrom: {configMapKeyRef: {name: vol-cm, key: greeting}}}
        - {name: TOKEN, valueFrom: {secretKeyRef: {name: vol-secret, key: token}}}
`)
	p := waitPod(t, "volumes", 2*time.Minute, func(p *corev1.Pod) string {
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			return ""
		}
		return "the pod's end"
	})
	want := map[string]string{
		"cm":          "hello from a configMap",
		"secret":      "s3cret-token",
		"labels":      `app="wasm-volumes"`,
		"annotations": `note="from the downward API"`,
		"mem":         "64",
	}
	for c, w := range want {
		out, _ := l.kubectl(context.Background(), nil, "logs", "volumes", "-c", c)
		if cs := containerStatus(p, c); cs == nil || cs.State.Terminated == nil || cs.State.Terminated.ExitCode != 0 || !strings.Contains(out, w) {
			t.Errorf("container %s: log %q, want %q; status %+v", c, out, w, cs)
		}
	}
	env := logs(t, "volumes", "env")
	for _, w := range []string{"POD_NAME=volumes", "POD_IP=" + p.Status.PodIP, "NODE_NAME=" + nodeName, "MEM_LIMIT=67108864", "GREETING=hello from a configMap", "TOKEN=s3cret-token"} {
		if !strings.Contains(env, w+"\n") {
			t.Errorf("the guest's environment has no %s:\n%s", w, env)
		}
	}
}

// TestOOMKilled: a Wasm container that dies out of memory shows
// kubectl the reason OOMKilled, whether its guest failed at the limit
// (its own status: Go's 2) or the kernel killed it (137).
func TestOOMKilled(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, args string
		code       int32
	}{
		{"oom-guest", `["alloc"]`, 2},
		{"oom-kernel", `["bigpath", "16"]`, 137},
	} {
		apply(t, wasmPod(tt.name, "\n  restartPolicy: Never", `
      args: `+tt.args+`
      resources: {limits: {memory: 64Mi}}`))
		p := waitPod(t, tt.name, 2*time.Minute, func(p *corev1.Pod) string {
			if cs := containerStatus(p, "main"); cs != nil && cs.State.Terminated != nil {
				return ""
			}
			return "the container's end"
		})
		term := containerStatus(p, "main").State.Terminated
		if term.Reason != "OOMKilled" || term.ExitCode != tt.code {
			t.Errorf("%s: reason %q, exit %d; want OOMKilled, %d (message %q)", tt.name, term.Reason, term.ExitCode, tt.code, term.Message)
		}
	}
}

// podCgroup is the directory of pod uid's cgroup in a v1 hierarchy.
func podCgroup(t *testing.T, controller, uid string) string {
	t.Helper()
	for _, pattern := range []string{"kubepods*/pod", "kubepods*/*/pod"} {
		m, _ := filepath.Glob(filepath.Join(cgroups.Root, controller, cgroupRoot, pattern+uid))
		if len(m) == 1 {
			return m[0]
		}
	}
	t.Fatalf("no %s cgroup for pod %s under %s", controller, uid, cgroupRoot)
	return ""
}

func cgroupInt(t *testing.T, path string) int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatalf("%s: %q", path, b)
	}
	return n
}

// TestLimitsOverhead: a Wasm container's memory and CPU limits are its
// cgroup's (where its runner and guest run); the pod's cgroup holds the
// containers' limits plus the RuntimeClass's 24Mi overhead.
func TestLimitsOverhead(t *testing.T) {
	apply(t, wasmPod("limits", "", `
      command: ["/probe.wasm", "sleep"]
      resources: {limits: {memory: 64Mi, cpu: 250m}}
    - name: sidecar
      image: `+testImage+`
      imagePullPolicy: Never
      command: ["sleep", "3600"]
      resources: {limits: {memory: 32Mi, cpu: 100m}}`))
	p := waitPod(t, "limits", 2*time.Minute, ready)
	if p.Status.QOSClass != corev1.PodQOSGuaranteed {
		t.Errorf("QoS class %s", p.Status.QOSClass)
	}
	uid := string(p.UID)
	mem, cpu := podCgroup(t, "memory", uid), podCgroup(t, "cpu", uid)
	const mi = 1 << 20
	if got := cgroupInt(t, filepath.Join(mem, "memory.limit_in_bytes")); got != (64+32+24)*mi {
		t.Errorf("the pod's memory limit is %d MiB, want 64+32 of its containers and 24 of the RuntimeClass's overhead", got/mi)
	}
	if got := cgroupInt(t, filepath.Join(cpu, "cpu.cfs_quota_us")); got != 35000 {
		t.Errorf("the pod's CPU quota is %d µs, want 35000 (350m)", got)
	}
	for _, c := range []struct {
		name        string
		mem, quota  int64
		wantProcess string
	}{{"main", 64 * mi, 25000, "/dev/.containerd-shim-wasm-runner"}, {"sidecar", 32 * mi, 10000, "sleep"}} {
		cs := containerStatus(p, c.name)
		id := strings.TrimPrefix(cs.ContainerID, "containerd://")
		if got := cgroupInt(t, filepath.Join(mem, id, "memory.limit_in_bytes")); got != c.mem {
			t.Errorf("container %s: memory limit %d, want %d", c.name, got, c.mem)
		}
		if got := cgroupInt(t, filepath.Join(cpu, id, "cpu.cfs_quota_us")); got != c.quota {
			t.Errorf("container %s: CPU quota %d, want %d", c.name, got, c.quota)
		}
		procs, _ := os.ReadFile(filepath.Join(mem, id, "cgroup.procs"))
		var cmds []string
		for _, f := range strings.Fields(string(procs)) {
			pid, _ := strconv.Atoi(f)
			cmds = append(cmds, describe([]int{pid}))
		}
		if !strings.Contains(strings.Join(cmds, " "), c.wantProcess) {
			t.Errorf("container %s's cgroup holds %v, want %s", c.name, cmds, c.wantProcess)
		}
	}
}

// meminfo reads /proc/meminfo's MemAvailable, in bytes.
func memAvailable(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "MemAvailable:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n << 10
		}
	}
	return 0
}

// lanePSS sums the proportional set size of every process of the node's
// pods (in kubelet's cgroups) and of their shims (in the node's mount
// namespace), in bytes.
func lanePSS() int64 {
	pids := map[int]bool{}
	filepath.WalkDir(filepath.Join(cgroups.Root, "memory", cgroupRoot), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == "cgroup.procs" {
			b, _ := os.ReadFile(p)
			for _, f := range strings.Fields(string(b)) {
				pid, _ := strconv.Atoi(f)
				pids[pid] = true
			}
		}
		return nil
	})
	for _, pid := range nsPids(l.mountNS, l.holder.Process.Pid) {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); strings.Contains(string(b), "containerd-shim") {
			pids[pid] = true
		}
	}
	var total int64
	for pid := range pids {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Pss:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				total += kb << 10
			}
		}
	}
	return total
}

// TestDensity creates 20 Wasm pods at once, then 20 native pods, and
// prints the time until all of each are Ready and the memory they take:
// the PSS of the pods' processes and their shims, and the node's
// MemAvailable (which other work on the machine moves too), before and
// once Ready. Printed, not asserted.
func TestDensity(t *testing.T) {
	const n = 20
	for _, kind := range []string{"wasm", "native"} {
		t.Run(kind, func(t *testing.T) {
			var b strings.Builder
			for i := 0; i < n; i++ {
				name := fmt.Sprintf("density-%s-%d", kind, i)
				if kind == "wasm" {
					b.WriteString(strings.Replace(wasmPod(name, "", `
      command: ["/probe.wasm", "sleep"]`), "  name: "+name, "  name: "+name+"\n  labels: {density: "+kind+"}", 1))
				} else {
					fmt.Fprintf(&b, `apiVersion: v1
kind: Pod
metadata:
  name: %s
  labels: {density: %s}
spec:
  terminationGracePeriodSeconds: 5
  containers:
    - name: main
      image: %s
      command: ["sleep", "3600"]
`, name, kind, busyboxImage)
				}
				b.WriteString("---\n")
			}
			before, pssBefore := memAvailable(t), lanePSS()
			start := time.Now()
			apply(t, b.String())
			deadline := time.Now().Add(5 * time.Minute)
			for {
				out := k(t, "get", "pods", "-l", "density="+kind, "-o", "json")
				var list corev1.PodList
				if err := json.Unmarshal([]byte(out), &list); err != nil {
					t.Fatal(err)
				}
				readyN := 0
				for i := range list.Items {
					if ready(&list.Items[i]) == "" {
						readyN++
					}
				}
				if readyN == n {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d of %d %s pods Ready after 5 minutes", readyN, n, kind)
				}
				time.Sleep(200 * time.Millisecond)
			}
			took := time.Since(start)
			time.Sleep(5 * time.Second) // let start-up allocations settle before measuring
			after, pssAfter := memAvailable(t), lanePSS()
			load, _ := os.ReadFile("/proc/loadavg")
			t.Logf("%d %s pods created at once: all Ready in %.1f s; the pods' and shims' PSS +%.0f MiB (%.1f MiB a pod), node MemAvailable %+.0f MiB; load %s",
				n, kind, took.Seconds(), float64(pssAfter-pssBefore)/(1<<20), float64(pssAfter-pssBefore)/(1<<20)/n,
				float64(after-before)/(1<<20), strings.Fields(string(load))[0])
			start = time.Now()
			k(t, "delete", "pods", "-l", "density="+kind, "--wait=true", "--timeout=3m")
			t.Logf("%d %s pods deleted in %.1f s", n, kind, time.Since(start).Seconds())
		})
	}
}
