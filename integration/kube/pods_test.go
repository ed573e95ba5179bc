package kube

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/cgroups"
	"github.com/containerd/console"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestMixedPodEmptyDir: a pod mixing Wasm and native containers shares
// an emptyDir: a Wasm init container, as root, writes a file into it; a
// native and a Wasm main container, as user 1000, read it.
func TestMixedPodEmptyDir(t *testing.T) {
	apply(t, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: mixed}
spec:
  runtimeClassName: wasm
  restartPolicy: Never
  volumes: [{name: shared, emptyDir: {}}]
  initContainers:
    - name: writer
      image: %[1]s
      imagePullPolicy: Never
      command: ["/probe.wasm", "to", "/shared/note", "written by a Wasm init container"]
      securityContext: {runAsUser: 0}
      volumeMounts: [{name: shared, mountPath: /shared}]
  containers:
    - name: native
      image: %[1]s
      imagePullPolicy: Never
      command: ["sh", "-c", "id -u && cat /shared/note"]
      securityContext: {runAsUser: 1000, runAsGroup: 1000}
      volumeMounts: [{name: shared, mountPath: /shared}]
    - name: wasm
      image: %[1]s
      imagePullPolicy: Never
      command: ["/probe.wasm", "cat", "/shared/note"]
      securityContext: {runAsUser: 1000, runAsGroup: 1000}
      volumeMounts: [{name: shared, mountPath: /shared}]
`, testImage))
	p := waitPod(t, "mixed", 2*time.Minute, func(p *corev1.Pod) string {
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			return ""
		}
		return "the pod's end (phase " + string(p.Status.Phase) + ")"
	})
	for _, c := range []string{"writer", "native", "wasm"} {
		cs := containerStatus(p, c)
		if cs == nil || cs.State.Terminated == nil || cs.State.Terminated.ExitCode != 0 {
			out, _ := l.kubectl(context.Background(), nil, "logs", "mixed", "-c", c)
			t.Errorf("container %s: %+v; log %q", c, cs, out)
		}
	}
	if out := logs(t, "mixed", "native"); out != "1000\nwritten by a Wasm init container" {
		t.Errorf("the native reader printed %q", out)
	}
	if out := logs(t, "mixed", "wasm"); out != "written by a Wasm init container" {
		t.Errorf("the Wasm reader printed %q", out)
	}
}

// criClient is a CRI client of the node's containerd.
func criClient(t *testing.T) cri.RuntimeServiceClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+l.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return cri.NewRuntimeServiceClient(conn)
}

// sandboxOf is the CRI pod sandbox id of pod uid ("" if none).
func sandboxOf(t *testing.T, uid string) string {
	t.Helper()
	resp, err := criClient(t).ListPodSandbox(context.Background(), &cri.ListPodSandboxRequest{Filter: &cri.PodSandboxFilter{LabelSelector: map[string]string{"io.kubernetes.pod.uid": uid}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Items) == 0 {
		return ""
	}
	return resp.Items[0].Id
}

// podTraces is what is left of a pod on the node: its shim and other
// processes naming its sandbox, its cgroups, its mounts (in the node's
// mount namespace), its CRI sandbox.
func podTraces(t *testing.T, uid, sandbox string) []string {
	t.Helper()
	var left []string
	for _, pid := range nsPids(l.mountNS, l.holder.Process.Pid) {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && strings.Contains(string(b), sandbox) {
			left = append(left, "process "+describe([]int{pid}))
		}
	}
	cg, _ := filepath.Glob(filepath.Join(cgroups.Root, "*", cgroupRoot, "kubepods*", "pod"+uid))
	cg2, _ := filepath.Glob(filepath.Join(cgroups.Root, "*", cgroupRoot, "kubepods*", "*", "pod"+uid))
	for _, d := range append(cg, cg2...) {
		left = append(left, "cgroup "+d)
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", l.holder.Process.Pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 4 && (strings.Contains(f[4], uid) || strings.Contains(f[4], sandbox)) {
				left = append(left, "mount "+f[4])
			}
		}
	}
	if sandboxOf(t, uid) != "" {
		left = append(left, "CRI sandbox "+sandbox)
	}
	return left
}

// podPids are the processes in pod uid's cgroups (memory hierarchy).
func podPids(uid string) []int {
	var out []int
	dirs, _ := filepath.Glob(filepath.Join(cgroups.Root, "memory", cgroupRoot, "kubepods*", "pod"+uid, "*", "cgroup.procs"))
	dirs2, _ := filepath.Glob(filepath.Join(cgroups.Root, "memory", cgroupRoot, "kubepods*", "*", "pod"+uid, "*", "cgroup.procs"))
	for _, p := range append(dirs, dirs2...) {
		b, _ := os.ReadFile(p)
		for _, f := range strings.Fields(string(b)) {
			pid, _ := strconv.Atoi(f)
			out = append(out, pid)
		}
	}
	return out
}

// TestDelete: kubectl delete of a Wasm server's pod (with a native
// sidecar), and of a native pod for comparison: the time until it is gone
// from the API server (printed), and then nothing of it left on the node:
// no shim, no container process, no cgroup, no mount, no CRI sandbox.
func TestDelete(t *testing.T) {
	pods := map[string]string{
		"del-wasm": wasmPod("del-wasm", "", `
      command: ["/server.wasm"]
      env: [{name: WASM_LISTEN, value: ":8080"}]
    - name: sidecar
      image: `+testImage+`
      imagePullPolicy: Never
      command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]`),
		"del-native": `apiVersion: v1
kind: Pod
metadata: {name: del-native}
spec:
  terminationGracePeriodSeconds: 5
  containers:
    - name: main
      image: ` + busyboxImage + `
      command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
`,
	}
	for _, name := range []string{"del-wasm", "del-native"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel() // each waits up to a minute for kubelet's garbage collection
			apply(t, pods[name])
			p := waitPod(t, name, 2*time.Minute, ready)
			uid := string(p.UID)
			sandbox := sandboxOf(t, uid)
			if sandbox == "" {
				t.Fatal("no CRI sandbox for the pod")
			}
			procs := podPids(uid)
			if len(procs) == 0 {
				t.Fatal("no process in the pod's cgroups")
			}
			if left := strings.Join(podTraces(t, uid, sandbox), "; "); !strings.Contains(left, "process ") || !strings.Contains(left, "cgroup ") || !strings.Contains(left, "mount ") {
				t.Fatalf("podTraces does not see the running pod's shim, cgroups and mounts (%s): the check would prove nothing", left)
			}
			start := time.Now()
			k(t, "delete", "pod", name, "--wait=true", "--timeout=2m")
			gone := time.Since(start)
			// What the shim and runc leave (processes, cgroups, mounts)
			// must go with the pod; the CRI sandbox's record is removed
			// by kubelet's garbage collection, once a minute.
			var left []string
			var clean time.Duration
			deadline := time.Now().Add(time.Minute)
			for {
				left = nil
				for _, tr := range podTraces(t, uid, sandbox) {
					if !strings.HasPrefix(tr, "CRI sandbox") {
						left = append(left, tr)
					}
				}
				for _, pid := range procs {
					if syscall.Kill(pid, 0) == nil {
						left = append(left, "container process "+describe([]int{pid}))
					}
				}
				if len(left) == 0 || time.Now().After(deadline) {
					clean = time.Since(start)
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if len(left) > 0 {
				t.Fatalf("left of pod %s a minute after its delete: %s", name, strings.Join(left, "; "))
			}
			deadline = time.Now().Add(3 * time.Minute)
			for sandboxOf(t, uid) != "" {
				if time.Now().After(deadline) {
					t.Fatalf("kubelet did not remove the CRI sandbox of pod %s in 3 minutes", name)
				}
				time.Sleep(time.Second)
			}
			t.Logf("kubectl delete pod %s: gone from the API server in %.2f s, its processes, cgroups and mounts from the node in %.2f s, its CRI sandbox in %.0f s",
				name, gone.Seconds(), clean.Seconds(), time.Since(start).Seconds())
		})
	}
}

// TestLogs: kubectl logs -f of a Wasm container streams its lines as it
// prints them; kubectl logs --previous shows the run before a restart.
func TestLogs(t *testing.T) {
	t.Run("follow", func(t *testing.T) {
		apply(t, wasmPod("logs-follow", "", `
      command: ["/probe.wasm", "tick"]`))
		waitPod(t, "logs-follow", 2*time.Minute, ready)
		sc := kubectlLines(t, "logs", "-f", "--tail=1", "logs-follow", "-c", "main")
		var ticks []int
		for len(ticks) < 20 && sc.Scan() {
			var n int
			if _, err := fmt.Sscanf(sc.Text(), "tick %d", &n); err == nil {
				ticks = append(ticks, n)
			}
		}
		if len(ticks) < 20 {
			t.Fatalf("kubectl logs -f streamed %v (%v)", ticks, sc.Err())
		}
		for i := 1; i < len(ticks); i++ {
			if ticks[i] != ticks[i-1]+1 {
				t.Errorf("kubectl logs -f: ticks %v are not consecutive", ticks)
				break
			}
		}
	})
	t.Run("previous", func(t *testing.T) {
		// The guest ticks until its process is killed (from the node, once):
		// kubelet starts it again, and --previous shows the first run's
		// ticks, the current log the second's.
		apply(t, wasmPod("logs-previous", "", `
      command: ["/probe.wasm", "tick"]`))
		p := waitPod(t, "logs-previous", 2*time.Minute, ready)
		waitLogs(t, "logs-previous", "main", "tick 3\n", time.Minute)
		first := containerStatus(p, "main").ContainerID
		pids := containerPids(t, p, "main")
		if len(pids) == 0 {
			t.Fatal("no process in the container's cgroup")
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		p = waitPod(t, "logs-previous", 3*time.Minute, func(p *corev1.Pod) string {
			if cs := containerStatus(p, "main"); cs != nil && cs.RestartCount >= 1 && cs.ContainerID != first && ready(p) == "" {
				return ""
			}
			return "the container started again"
		})
		cs := containerStatus(p, "main")
		if term := cs.LastTerminationState.Terminated; term == nil || term.ExitCode != 137 || term.ContainerID != first {
			t.Errorf("the previous run ended as %+v, want exit 137 of %s", cs.LastTerminationState, first)
		}
		prev := logs(t, "logs-previous", "main", "--previous")
		if !strings.HasPrefix(prev, "tick 0\ntick 1\ntick 2\ntick 3\n") {
			t.Errorf("kubectl logs --previous: %q", prev)
		}
		cur := waitLogs(t, "logs-previous", "main", "tick 0\n", time.Minute)
		if strings.HasPrefix(prev, cur) && len(cur) < len(prev) && cur != "tick 0\n" {
			t.Errorf("the current log %q looks like the previous one", cur)
		}
	})
}

// containerPids are the processes in the cgroup of container name of pod
// p (memory hierarchy).
func containerPids(t *testing.T, p *corev1.Pod, name string) []int {
	t.Helper()
	cs := containerStatus(p, name)
	if cs == nil {
		t.Fatalf("pod %s has no container %s", p.Name, name)
	}
	id := strings.TrimPrefix(cs.ContainerID, "containerd://")
	b, err := os.ReadFile(filepath.Join(podCgroup(t, "memory", string(p.UID)), id, "cgroup.procs"))
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		pid, _ := strconv.Atoi(f)
		out = append(out, pid)
	}
	return out
}

// TestExec: kubectl exec into a Wasm container of a Wasm module (its
// output and exit status), of a module no container ran (compiled at its
// exec, into the node's cache), of a native binary of the image, and on
// a terminal (kubectl exec -it).
func TestExec(t *testing.T) {
	apply(t, wasmPod("exec", "", `
      command: ["/probe.wasm", "sleep"]`))
	waitPod(t, "exec", 2*time.Minute, ready)
	t.Run("wasm", func(t *testing.T) {
		if out := k(t, "exec", "exec", "-c", "main", "--", "/probe.wasm", "echo", "a b", "c"); out != "[a b]\n[c]\n" {
			t.Errorf("exec of the probe module: %q", out)
		}
		_, err := l.kubectl(context.Background(), nil, "exec", "exec", "-c", "main", "--", "/probe.wasm", "exit", "3")
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 3 {
			t.Errorf("kubectl exec of a module exiting 3: %v", err)
		}
	})
	t.Run("a module compiled at its exec", func(t *testing.T) {
		// /fresh.wasm is in the image but no container runs it: the
		// agent compiled the image's entrypoint only, the exec compiles
		// it into the node's cache.
		sum := sha256.Sum256(fix.fresh)
		if cached(t, hex.EncodeToString(sum[:])) {
			t.Logf("/fresh.wasm was compiled before its exec")
		}
		if out := k(t, "exec", "exec", "-c", "main", "--", "/fresh.wasm", "echo", "fresh"); out != "[fresh]\n" {
			t.Errorf("exec of a module not compiled yet: %q", out)
		}
		if !cached(t, hex.EncodeToString(sum[:])) {
			t.Errorf("the exec'd module is not in the node's compile cache")
		}
		if out := k(t, "exec", "exec", "-c", "main", "--", "/fresh.wasm", "echo", "again"); out != "[again]\n" {
			t.Errorf("a second exec of it: %q", out)
		}
	})
	t.Run("native", func(t *testing.T) {
		if out := k(t, "exec", "exec", "-c", "main", "--", "sh", "-c", "echo native $(id -u)"); out != "native 0\n" {
			t.Errorf("exec of busybox sh in the Wasm container: %q", out)
		}
	})
	t.Run("tty", func(t *testing.T) {
		term := startOnTerminal(t, filepath.Join(l.kubeBin, "kubectl"), "--kubeconfig", l.kubeconfig, "exec", "-it", "exec", "-c", "main", "--", "/probe.wasm", "tty")
		term.waitFor(t, "/dev/stdin: terminal true")
		term.waitFor(t, "/dev/stdout: terminal true")
		term.master.Write([]byte("hello\r"))
		term.waitFor(t, `got "hello`)
		term.master.Write([]byte("quit\r"))
		select {
		case <-term.exited:
			if term.err != nil {
				t.Errorf("kubectl exec -it: %v; terminal %q", term.err, term.out.String())
			}
		case <-time.After(time.Minute):
			t.Fatalf("kubectl exec -it did not end: %q", term.out.String())
		}
	})
}

// TestAttach: kubectl attach to a Wasm container: its output, and with
// -i its stdin (stdinOnce: closing it ends the guest's input).
func TestAttach(t *testing.T) {
	t.Run("output", func(t *testing.T) {
		apply(t, wasmPod("attach-out", "", `
      command: ["/probe.wasm", "tick"]`))
		waitPod(t, "attach-out", 2*time.Minute, ready)
		sc := kubectlLines(t, "attach", "attach-out", "-c", "main")
		n := 0
		for n < 5 && sc.Scan() {
			if strings.HasPrefix(sc.Text(), "tick ") {
				n++
			}
		}
		if n < 5 {
			t.Fatalf("kubectl attach showed %d ticks (%v)", n, sc.Err())
		}
	})
	t.Run("stdin", func(t *testing.T) {
		apply(t, wasmPod("attach-in", `
  restartPolicy: Never`, `
      command: ["/probe.wasm", "stdin"]
      stdin: true
      stdinOnce: true`))
		waitPod(t, "attach-in", 2*time.Minute, ready)
		out, err := l.kubectl(context.Background(), []byte("line one\nline two\n"), "attach", "-i", "attach-in", "-c", "main")
		if err != nil {
			t.Fatalf("kubectl attach -i: %v", err)
		}
		p := waitPod(t, "attach-in", time.Minute, phase(corev1.PodSucceeded))
		if cs := containerStatus(p, "main"); cs == nil || cs.State.Terminated == nil || cs.State.Terminated.ExitCode != 0 {
			t.Errorf("the guest after its stdin closed: %+v", cs)
		}
		if log := logs(t, "attach-in", "main"); log != "line one\nline two\n" {
			t.Errorf("the guest's log: %q (kubectl attach printed %q)", log, out)
		}
	})
}

// onTerminal is a command run on a pty of the test's own.
type onTerminal struct {
	master console.Console
	cmd    *exec.Cmd
	out    lockedBuffer
	exited chan struct{}
	err    error
}

func startOnTerminal(t *testing.T, name string, args ...string) *onTerminal {
	t.Helper()
	master, slavePath, err := console.NewPty()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { master.Close() })
	master.Resize(console.WinSize{Height: 30, Width: 100})
	slave, err := os.OpenFile(slavePath, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer slave.Close()
	o := &onTerminal{master: master, exited: make(chan struct{})}
	o.cmd = exec.Command(name, args...)
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
		default:
			o.cmd.Process.Kill()
			<-o.exited
		}
	})
	return o
}

func (o *onTerminal) waitFor(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(o.out.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("the terminal shows no %q: %q", want, o.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// lockedBuffer is a strings.Builder safe for one writer and many readers.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// kubectlLines starts a kubectl that streams (logs -f, attach) and returns
// a scanner of its output's lines; it is ended when the test ends, or after
// two minutes.
func kubectlLines(t *testing.T, args ...string) *bufio.Scanner {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	cmd := exec.CommandContext(ctx, filepath.Join(l.kubeBin, "kubectl"), append([]string{"--kubeconfig", l.kubeconfig}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); cancel() })
	return bufio.NewScanner(out)
}
