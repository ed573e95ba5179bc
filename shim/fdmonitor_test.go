package shim

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestFdMonitorInject: the descriptors waiting for a runner reach `runc
// create` of its bundle and `runc exec` with its exec's pid file, and
// nothing else.
func TestFdMonitorInject(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	waiting := map[[2]string][]*os.File{
		{"/b/one", ""}:  {f},
		{"/b/one", "x"}: {f, f},
	}
	m := &fdMonitor{lookup: func(bundle, execID string) []*os.File { return waiting[[2]string{bundle, execID}] }}
	for _, tt := range []struct {
		args string
		want string // "": unchanged
	}{
		{"runc --root /r create --bundle /b/one --pid-file /b/one/init.pid one",
			"runc --root /r create --preserve-fds 1 --bundle /b/one --pid-file /b/one/init.pid one"},
		{"runc --root /r create --bundle /b/two two", ""},
		{"runc --root /r exec --process /tmp/p --detach --pid-file /b/one/x.pid one",
			"runc --root /r exec --preserve-fds 2 --process /tmp/p --detach --pid-file /b/one/x.pid one"},
		{"runc --root /r exec --process /tmp/p --detach --pid-file /b/one/y.pid one", ""},
		{"runc --root /r exec --process /tmp/p --detach --pid-file /b/one/x one", ""},
		{"runc --root /r start one", ""},
		{"runc --root /r exec --pid-file", ""},
	} {
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
}
