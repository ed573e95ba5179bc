package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startAgent runs `containerd-shim-wasm-install agent` against c's
// containerd, and stops it when the test ends. It returns the process and
// its output.
func startAgent(t *testing.T, c *criEnv) (*exec.Cmd, *lockedBuffer) {
	t.Helper()
	bin := filepath.Join(e.fixtures, "containerd-shim-wasm-install")
	if _, err := os.Stat(bin); err != nil {
		if err := goBuild(bin, "./cmd/containerd-shim-wasm-install", "CGO_ENABLED=0"); err != nil {
			t.Fatal(err)
		}
	}
	out := &lockedBuffer{}
	// As in the DaemonSet's pod, the agent sees neither containerd's root
	// nor its state (a pod has the node's "/" at /host, not at containerd's
	// paths): only its socket.
	hide := `mount -t tmpfs none "$ROOT" && mount -t tmpfs none "$STATE" && exec "$@"`
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", hide, "sh", bin, "agent", "--containerd-socket", c.address)
	cmd.Env = append(os.Environ(), "ROOT="+filepath.Join(c.dir, "root"), "STATE="+filepath.Join(c.dir, "state"))
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("agent ended with %v on SIGTERM:\n%s", err, out)
			}
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			t.Errorf("agent still running 30 s after SIGTERM:\n%s", out)
		}
		t.Logf("agent's output:\n%s", out)
	})
	return cmd, out
}

// waitCached waits until the shared cache holds module's compiled code.
func waitCached(t *testing.T, module []byte, within time.Duration) bool {
	t.Helper()
	path := writeTemp(t, module)
	deadline := time.Now().Add(within)
	for !cachedIn(t, filepath.Join(e.cacheRoot, "v1"), path) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// TestAgent: the node agent compiles the module of each image pulled
// through CRI (a rootfs image and an artifact) before any container of it,
// so that the first pod starts on compiled code; a module that fails to
// compile leaves no compiled code and the agent goes on; a native image
// costs nothing; the agent leaves no container or snapshot behind.
func TestAgent(t *testing.T) {
	host := startRegistry(t)
	c := startCRI(t)
	// What an agent killed mid-compile leaves: its container and snapshot.
	leftover := "containerd-shim-wasm-compile-leftover"
	if _, stderr, err := e.ctrAt(c.address, "-n", "k8s.io", "containers", "create", pauseImage, leftover); err != nil {
		t.Fatalf("create a leftover container: %v: %s", err, stderr)
	}
	agentCmd, out := startAgent(t, c)
	probe, err := os.ReadFile(filepath.Join(e.fixtures, "probe.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	// Modules of their own, in any cache: only the agent can have compiled
	// them before their pods.
	nonce := strconv.FormatInt(time.Now().UnixNano(), 36)
	rootfsMod := withCustomSection(probe, "agent-rootfs-"+nonce)
	artifactMod := withCustomSection(probe, "agent-artifact-"+nonce)
	bad := []byte("\x00asm\x01\x00\x00\x00\x01\x7f\x01\x60\x00\x00 not a module past its first section")
	rootfs, artifact, invalid, native := host+"/agent/rootfs:v1", host+"/agent/artifact:v1", host+"/agent/invalid:v1", host+"/agent/native:v1"
	wasmImage(t, "-push", "-insecure", "-name", rootfs, "-wasm", writeTemp(t, rootfsMod), "echo", "warm rootfs")
	wasmImage(t, "-push", "-insecure", "-name", artifact, "-format", "artifact", "-wasm", writeTemp(t, artifactMod), "echo", "warm artifact")
	wasmImage(t, "-push", "-insecure", "-name", invalid, "-file", writeTemp(t, bad)+":/bad.wasm", "-entrypoint", "/bad.wasm")
	wasmImage(t, "-push", "-insecure", "-name", native, "-file", filepath.Join(e.fixtures, "native")+":/bin/native", "-entrypoint", "/bin/native")

	for _, ref := range []string{invalid, native, rootfs, artifact} {
		c.pull(t, ref)
	}
	for name, m := range map[string][]byte{"rootfs image": rootfsMod, "artifact": artifactMod} {
		if !waitCached(t, m, time.Minute) {
			t.Fatalf("%s: module not compiled a minute after its pull; agent's output:\n%s", name, out)
		}
	}
	if cachedIn(t, filepath.Join(e.cacheRoot, "v1"), writeTemp(t, bad)) {
		t.Error("the invalid module has compiled code")
	}
	// It was pulled first: the agent went on to the others.
	if err := agentCmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("the agent ended: %v", err)
	}

	// The first pods start on the code compiled at pull.
	podID, podCfg := c.pod(t, "agent", "wasm")
	for _, tt := range []struct{ image, want string }{{rootfs, "[warm rootfs]"}, {artifact, "[warm artifact]"}} {
		code, lines := c.runToEnd(t, podID, podCfg, strings.ReplaceAll(filepath.Base(tt.image), ":", "-"), tt.image)
		if code != 0 || !slices.Equal(lines, []string{tt.want}) {
			t.Errorf("%s: exit %d, stdout %q", tt.image, code, lines)
		}
	}

	// Nothing of the agent's own containers is left, nor of the earlier
	// agent's.
	stdout, stderr, err := e.ctrAt(c.address, "-n", "k8s.io", "containers", "ls", "-q")
	if err != nil {
		t.Fatalf("ctr containers ls: %v: %s", err, stderr)
	}
	if strings.Contains(stdout, "containerd-shim-wasm-compile-") {
		t.Errorf("agent's containers left:\n%s", stdout)
	}
	stdout, _, _ = e.ctrAt(c.address, "-n", "k8s.io", "snapshots", "ls")
	if strings.Contains(stdout, "containerd-shim-wasm-compile-") {
		t.Errorf("agent's snapshots left:\n%s", stdout)
	}
}
