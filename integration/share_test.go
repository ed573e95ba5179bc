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

// TestForeignContainersNotOurs: a Wasm container of another containerd on
// the machine, served by this very shim binary, is not the suite's: its
// runner, its shim and its shim's socket are left out of the suite's leak
// census, which is also what the suite kills at its end.
func TestForeignContainersNotOurs(t *testing.T) {
	dir, err := os.MkdirTemp("", "foreign-containerd-") // not one of ourDirs
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	address := filepath.Join(dir, "containerd.sock")
	cfg := filepath.Join(dir, "containerd.toml")
	if err := os.WriteFile(cfg, []byte(e.release.plainConfig(dir, address)), 0o644); err != nil {
		t.Fatal(err)
	}
	sockets := shimSockets()
	cmd := exec.Command(e.containerdArgs[0], "--config", cfg)
	cmd.Env = append(os.Environ(), "PATH="+e.bin+":"+filepath.Dir(e.containerdArgs[0])+":"+os.Getenv("PATH"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ctr := func(args ...string) string {
		t.Helper()
		stdout, stderr, err := e.ctrAt(address, args...)
		if err != nil {
			t.Fatalf("ctr %s: %v: %s", strings.Join(args, " "), err, stderr)
		}
		return stdout
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, _, err := e.ctrAt(address, "version"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the foreign containerd did not come up")
		}
	}
	var shimPid int
	defer func() {
		e.ctrAt(address, "task", "kill", "-s", "SIGKILL", "foreign")
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if _, _, err := e.ctrAt(address, "task", "delete", "foreign"); err == nil {
				break
			}
		}
		e.ctrAt(address, "container", "delete", "foreign")
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if shimPid != 0 {
			syscall.Kill(shimPid, syscall.SIGKILL) // its own, by pid, if still there
		}
		for _, m := range mountsUnder(dir) {
			syscall.Unmount(m, syscall.MNT_DETACH)
		}
	}()
	ctr("images", "import", filepath.Join(e.fixtures, "image.tar"))
	ctr("run", "-d", "--runtime", runtimeName, e.imageName, "foreign", "/probe.wasm", "sleep")
	var runner int
	for deadline := time.Now().Add(30 * time.Second); runner == 0; time.Sleep(50 * time.Millisecond) {
		for _, l := range strings.Split(ctr("task", "ls"), "\n") {
			if f := strings.Fields(l); len(f) == 3 && f[0] == "foreign" && f[2] == "RUNNING" {
				runner, _ = strconv.Atoi(f[1])
			}
		}
		if runner == 0 && time.Now().After(deadline) {
			t.Fatal("the foreign container is not running")
		}
	}
	if st, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(runner), "stat")); err == nil {
		f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:]))
		shimPid, _ = strconv.Atoi(f[1])
	}
	if slices.Contains(runnerPids(), runner) {
		t.Errorf("the foreign runner %d is counted as the suite's", runner)
	}
	if shimPid == 0 || slices.Contains(shimPids(e.shim), shimPid) {
		t.Errorf("the foreign shim %d is counted as the suite's (or was not found)", shimPid)
	}
	if left := newSockets(sockets); len(left) > 0 {
		t.Errorf("the foreign shim's socket is counted as the suite's: %v", left)
	}
}
