package integration

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/console"
	"golang.org/x/sys/unix"
)

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

// TestTTY runs a Wasm guest with `ctr run -t` on a terminal of the test's
// own: the guest's stdin and stdout are a terminal, what is typed is
// echoed by it, and ResizePty sets its size.
func TestTTY(t *testing.T) {
	id := newID(t)
	o := startOnTerminal(t, 40, 100, ctrRunArgs(id, []string{"-t"}, []string{"/probe.wasm", "tty"})...)
	t.Cleanup(func() {
		select {
		case <-o.exited:
		default:
			e.ctr("task", "kill", "-s", "SIGKILL", id)
		}
	})
	o.waitFor(t, "/dev/stdout: terminal true")
	if !strings.Contains(o.out.String(), "/dev/stdin: terminal true") {
		t.Errorf("stdin is no terminal: %q", o.out.String())
	}
	// The terminal echoes the input, and turns the typed CR into NL.
	if _, err := o.master.Write([]byte("hello\r")); err != nil {
		t.Fatal(err)
	}
	o.waitFor(t, `got "hello\n"`)
	if s := o.out.String(); strings.Index(s, "hello\r") < 0 || strings.Index(s, "hello\r") > strings.Index(s, "got") {
		t.Errorf("the input was not echoed: %q", s)
	}

	// The size ctr set from its terminal, then one set through the API.
	pid := waitRunning(t, id)
	if ws := termSize(t, pid); ws.Row != 40 || ws.Col != 100 {
		t.Errorf("guest's terminal is %dx%d, want 40x100", ws.Row, ws.Col)
	}
	ctx, task := loadTask(t, id)
	if err := task.Resize(ctx, 120, 50); err != nil {
		t.Fatalf("resize: %v", err)
	}
	if ws := termSize(t, pid); ws.Row != 50 || ws.Col != 120 {
		t.Errorf("after ResizePty the guest's terminal is %dx%d, want 50x120", ws.Row, ws.Col)
	}
	o.end(t)
	assertClean(t, id)
}

// TestExecTTY: `ctr task exec -t` of a Wasm module gives it a terminal.
func TestExecTTY(t *testing.T) {
	b := startBackground(t, nil, "/probe.wasm", "sleep")
	b.waitOutput(t, "sleeping")
	o := startOnTerminal(t, 24, 80, "task", "exec", "-t", "--exec-id", "term", b.id, "/probe.wasm", "tty")
	o.waitFor(t, "/dev/stdout: terminal true")
	o.end(t)
	if s := o.out.String(); !strings.Contains(s, "/dev/stdin: terminal true") || !strings.Contains(s, `got "quit\n"`) {
		t.Errorf("exec's terminal: %q", s)
	}
	b.terminate(t)
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
