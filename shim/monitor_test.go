package shim

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestConfigMonitorInject: a registered configuration reaches `runc
// create` of its bundle and `runc exec` with its pid file, and nothing
// else.
func TestConfigMonitorInject(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := newConfigMonitor(nil)
	m.register("/b/one", f)
	withdraw := m.register("/b/one/x.pid", f, f)
	tests := []struct {
		args string
		want string // "": unchanged
	}{
		{"runc --root /r create --bundle /b/one --pid-file /b/one/init.pid one",
			"runc --root /r create --preserve-fds 1 --bundle /b/one --pid-file /b/one/init.pid one"},
		{"runc --root /r create --bundle /b/two two", ""},
		{"runc --root /r exec --process /tmp/p --detach --pid-file /b/one/x.pid one",
			"runc --root /r exec --preserve-fds 2 --process /tmp/p --detach --pid-file /b/one/x.pid one"},
		{"runc --root /r exec --process /tmp/p --detach --pid-file /b/one/y.pid one", ""},
		{"runc --root /r start one", ""},
		{"runc --root /r exec --pid-file", ""},
	}
	for _, tt := range tests {
		c := &exec.Cmd{Args: strings.Fields(tt.args)}
		m.inject(c)
		want := tt.want
		if want == "" {
			want = tt.args
		}
		if got := strings.Join(c.Args, " "); got != want {
			t.Errorf("%s:\n got %s\nwant %s", tt.args, got, want)
		}
		if injected := len(c.ExtraFiles) > 0; injected != (tt.want != "") {
			t.Errorf("%s: extra files %v", tt.args, c.ExtraFiles)
		}
	}
	withdraw()
	c := &exec.Cmd{Args: strings.Fields(tests[2].args)}
	if m.inject(c); len(c.ExtraFiles) != 0 || slices.Contains(c.Args, "--preserve-fds") {
		t.Error("a withdrawn configuration was injected")
	}
}

// TestPendingExecs: an exec's files are released once, on Start or
// Delete, and all of a container's on its Delete.
func TestPendingExecs(t *testing.T) {
	p := &pendingExecs{files: map[string]func(){}}
	released := map[string]int{}
	add := func(bundle, exec string) {
		key := execPidFile(bundle, exec)
		p.add(key, func() { released[key]++ })
	}
	add("/b/one", "a")
	add("/b/one", "b")
	add("/b/one2", "a")
	p.done(execPidFile("/b/one", "a"))
	p.done(execPidFile("/b/one", "a"))
	p.doneAll("/b/one")
	want := map[string]int{execPidFile("/b/one", "a"): 1, execPidFile("/b/one", "b"): 1}
	if len(released) != len(want) || released[execPidFile("/b/one", "a")] != 1 || released[execPidFile("/b/one", "b")] != 1 {
		t.Errorf("released %v, want %v", released, want)
	}
	if len(p.files) != 1 {
		t.Errorf("pending %d, want the other container's one", len(p.files))
	}
}
