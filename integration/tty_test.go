package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/console"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"golang.org/x/sys/unix"
)

// TestExecTTY: `ctr task exec -t` of a Wasm module gives it a terminal.
func TestExecTTY(t *testing.T) {
	b := startBackground(t, nil, "/probe.wasm", "sleep")
	b.waitOutput(t, "sleeping")
	master, slavePath, err := console.NewPty()
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	slave, err := os.OpenFile(slavePath, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(e.ctrBin, "--address", e.address, "task", "exec", "-t", "--exec-id", "term", b.id, "/probe.wasm", "tty")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	var out lockedBuffer
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			out.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "/dev/stdout: terminal true") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	master.Write([]byte("quit\r"))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ctr task exec -t: %v", err)
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Errorf("the exec did not end")
	}
	if s := out.String(); !strings.Contains(s, "/dev/stdin: terminal true") || !strings.Contains(s, "/dev/stdout: terminal true") || !strings.Contains(s, `got "quit\n"`) {
		t.Errorf("exec's terminal: %q", s)
	}
	b.terminate(t)
}

// TestTTY runs a Wasm guest with `ctr run -t` on a terminal of the test's
// own: the guest's stdin and stdout are a terminal, what is typed is
// echoed by it, and ResizePty sets its size.
func TestTTY(t *testing.T) {
	master, slavePath, err := console.NewPty()
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	if err := master.Resize(console.WinSize{Height: 40, Width: 100}); err != nil {
		t.Fatal(err)
	}
	slave, err := os.OpenFile(slavePath, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	id := newID(t)
	args := ctrRunArgs(id, []string{"-t"}, []string{"/probe.wasm", "tty"})
	cmd := exec.Command(e.ctrBin, append([]string{"--address", e.address}, args...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	done := make(chan error, 1)
	exited := make(chan struct{})
	go func() { done <- cmd.Wait(); close(exited) }()
	defer func() {
		select {
		case <-exited:
		default:
			e.ctr("task", "kill", "-s", "SIGKILL", id)
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				t.Errorf("ctr run -t did not end after its task was killed")
			}
		}
	}()

	var out lockedBuffer
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			out.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	waitFor := func(want string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(out.String(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("terminal shows no %q: %q", want, out.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("/dev/stdout: terminal true")
	if !strings.Contains(out.String(), "/dev/stdin: terminal true") {
		t.Errorf("stdin is no terminal: %q", out.String())
	}
	// The terminal echoes the input, and turns the typed CR into NL.
	if _, err := master.Write([]byte("hello\r")); err != nil {
		t.Fatal(err)
	}
	waitFor(`got "hello\n"`)
	if echo := strings.Index(out.String(), "hello\r"); echo < 0 || echo > strings.Index(out.String(), "got") {
		t.Errorf("the input was not echoed: %q", out.String())
	}

	// The size ctr set from its terminal, then one set through the API.
	pid := waitRunning(t, id)
	if ws := termSize(t, pid); ws.Row != 40 || ws.Col != 100 {
		t.Errorf("guest's terminal is %dx%d, want 40x100", ws.Row, ws.Col)
	}
	resize(t, id, 120, 50)
	if ws := termSize(t, pid); ws.Row != 50 || ws.Col != 120 {
		t.Errorf("after ResizePty the guest's terminal is %dx%d, want 50x120", ws.Row, ws.Col)
	}

	master.Write([]byte("quit\r"))
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ctr run -t: %v; terminal %q", err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the guest did not end: %q", out.String())
	}
	assertClean(t, id)
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

// resize sends ResizePty for task id through containerd's client.
func resize(t *testing.T, id string, width, height uint32) {
	t.Helper()
	client, err := containerd.New(e.address)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), "default"), 30*time.Second)
	defer cancel()
	c, err := client.LoadContainer(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	task, err := c.Task(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Resize(ctx, width, height); err != nil {
		t.Fatalf("resize: %v", err)
	}
}
