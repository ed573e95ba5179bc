package integration

import (
	"strings"
	"testing"
)

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
