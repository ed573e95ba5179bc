package shim

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/log"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/runner"
)

// TestReadReasons: what a runner says is logged up to maxReason, and its
// guest is out of memory only if a line begins with runner.OutOfMemory,
// however much came before it.
func TestReadReasons(t *testing.T) {
	oomLine := runner.OutOfMemory + "the guest failed after 1 memory.grow(s) refused at the container's memory limit (64 MiB)\n"
	long := strings.Repeat("x", 10000)
	for _, tt := range []struct {
		name, in string
		logged   string
		oom      bool
	}{
		{"nothing", "", "", false},
		{"a trap", "wasm trap: unreachable\n", "wasm trap: unreachable", false},
		{"out of memory", oomLine, strings.TrimSpace(oomLine), true},
		{"after a long line", long + "\n" + oomLine, long[:maxReason], true},
		{"within a line", "guest said " + oomLine, strings.TrimSpace("guest said " + oomLine), false},
		{"within a long line", long + oomLine, long[:maxReason], false},
		{"no newline at the end", strings.TrimSpace(oomLine), strings.TrimSpace(oomLine), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			logged, oom := readReasons(strings.NewReader(tt.in))
			if logged != tt.logged || oom != tt.oom {
				t.Errorf("got %.60q..., oom %v; want %.60q..., oom %v", logged, oom, tt.logged, tt.oom)
			}
		})
	}
}

// TestRunnerReport: the report is done once the runner's end of the pipe
// is closed, and says out of memory if the runner did; an exec's compiled
// code is passed as the third descriptor and released then.
func TestRunnerReport(t *testing.T) {
	rf, err := newRunnerFiles(&runner.Config{Module: "/m.wasm", Func: "_start"}, log.L)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	released := make(chan struct{})
	if err := rf.withCode(dir, func() { close(released) }); err != nil {
		t.Fatal(err)
	}
	if files := rf.files(); len(files) != 3 || files[2] != rf.code {
		t.Fatalf("files %v, want config, reason and code", files)
	}
	// The runner's copy of the write end, as runc hands it over.
	w, err := os.OpenFile(filepath.Join("/proc/self/fd", strconv.Itoa(int(rf.reasonW.Fd()))), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	rf.handedOver()
	if rf.report.outOfMemory(50 * time.Millisecond) {
		t.Fatal("out of memory before the runner said so")
	}
	select {
	case <-released:
		t.Fatal("code released while the runner runs")
	default:
	}
	io.WriteString(w, runner.OutOfMemory+"refused\n")
	w.Close()
	if !rf.report.outOfMemory(5 * time.Second) {
		t.Error("the runner's out of memory was not reported")
	}
	select {
	case <-released:
	case <-time.After(5 * time.Second):
		t.Error("code not released once the runner exited")
	}
	var none *runnerReport
	if none.outOfMemory(time.Millisecond) {
		t.Error("a native container's report says out of memory")
	}
}

// FuzzReadReasons: whatever a container's runner writes on its reason
// pipe, what is logged is bounded, and its guest is out of memory exactly
// when a line begins with runner.OutOfMemory.
func FuzzReadReasons(f *testing.F) {
	f.Add([]byte("wasm trap: unreachable\n"))
	f.Add([]byte(runner.OutOfMemory + "refused\n"))
	f.Add([]byte("x\n" + runner.OutOfMemory))
	f.Add(append(bytes.Repeat([]byte("y"), 5000), []byte("\n"+runner.OutOfMemory)...))
	f.Fuzz(func(t *testing.T, in []byte) {
		logged, oom := readReasons(bytes.NewReader(in))
		if len(logged) > maxReason {
			t.Errorf("logged %d bytes, more than %d", len(logged), maxReason)
		}
		want := false
		for line := range strings.Lines(string(in)) {
			if strings.HasPrefix(line, runner.OutOfMemory) {
				want = true
			}
		}
		if oom != want {
			t.Errorf("out of memory %v, want %v", oom, want)
		}
	})
}
