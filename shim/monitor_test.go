package shim

import (
	"io"
	"os"
	"os/exec"
	"slices"
	"testing"

	runc "github.com/containerd/go-runc"
)

type recordingMonitor struct {
	runc.ProcessMonitor
	started []*exec.Cmd
}

func (r *recordingMonitor) Start(c *exec.Cmd) (chan runc.Exit, error) {
	r.started = append(r.started, c)
	return nil, nil
}

func (r *recordingMonitor) StartLocked(c *exec.Cmd) (chan runc.Exit, error) {
	return r.Start(c)
}

func TestConfigMonitor(t *testing.T) {
	f, err := sealedFile("test-config", []byte(`{"module":"/m.wasm"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rec := &recordingMonitor{}
	m := newConfigMonitor(rec)
	done := m.register("/b/wasm", f)

	tests := []struct {
		name      string
		args      []string
		wantArgs  []string
		wantFiles int
	}{
		{"create of the registered bundle",
			[]string{"runc", "--root", "/r", "create", "--bundle", "/b/wasm", "--pid-file", "/b/wasm/init.pid", "id"},
			[]string{"runc", "--root", "/r", "create", "--preserve-fds", "1", "--bundle", "/b/wasm", "--pid-file", "/b/wasm/init.pid", "id"}, 1},
		{"create of another bundle",
			[]string{"runc", "create", "--bundle", "/b/native", "id"},
			[]string{"runc", "create", "--bundle", "/b/native", "id"}, 0},
		{"start of the registered bundle's container",
			[]string{"runc", "--root", "/r", "start", "id"},
			[]string{"runc", "--root", "/r", "start", "id"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &exec.Cmd{Args: slices.Clone(tt.args)}
			if _, err := m.StartLocked(c); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(c.Args, tt.wantArgs) || len(c.ExtraFiles) != tt.wantFiles {
				t.Errorf("args %q with %d extra files; want %q with %d", c.Args, len(c.ExtraFiles), tt.wantArgs, tt.wantFiles)
			}
		})
	}
	done()
	c := &exec.Cmd{Args: []string{"runc", "create", "--bundle", "/b/wasm", "id"}}
	m.Start(c)
	if len(c.ExtraFiles) != 0 {
		t.Error("a withdrawn configuration was still handed over")
	}
	if len(rec.started) != 4 {
		t.Errorf("%d commands reached the inner monitor, want 4", len(rec.started))
	}

	// The configuration cannot be changed once sealed, and reads from its start.
	if _, err := f.WriteAt([]byte("x"), 0); err == nil {
		t.Error("wrote to a sealed configuration")
	}
	b, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<20))
	if err != nil || string(b) != `{"module":"/m.wasm"}` {
		t.Errorf("read back %q, %v", b, err)
	}
	if _, err := os.Stat("/dev/shm/test-config"); err == nil {
		t.Error("the configuration is a named file")
	}
}
