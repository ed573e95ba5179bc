package integration

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shim"
)

// TestBadInput: each bad entrypoint fails with an error naming it and the
// reason, while the shim serving the same group keeps its other container
// running, and nothing is left behind.
func TestBadInput(t *testing.T) {
	group := []string{"--annotation", "io.containerd.runc.v2.group=bad-input"}
	keeper := startBackground(t, group, "/probe.wasm", "sleep")
	keeper.waitOutput(t, "sleeping")
	shims := shimPids(e.shim)
	if len(shims) != 1 {
		t.Fatalf("shim processes %v, want one", shims)
	}

	tests := []struct {
		name  string
		flags []string // ctr run's, beside the group
		args  []string
		want  []string // substrings of ctr's error
	}{
		{"missing file", nil, []string{"/nope.wasm"}, []string{"/nope.wasm", "no such file"}},
		{"missing on PATH", nil, []string{"nope"}, []string{"nope", "not found in PATH"}},
		{"text file", nil, []string{"/text.txt"}, []string{"/text.txt", "neither a WebAssembly module nor a native executable"}},
		{"FIFO", nil, []string{"/fifo"}, []string{"/fifo", "FIFO"}},
		{"directory", nil, []string{"/data"}, []string{"/data", "directory"}},
		{"corrupt module", nil, []string{"/corrupt.wasm"}, []string{"/corrupt.wasm", "invalid module"}},
		{"truncated module", nil, []string{"/empty.wasm"}, []string{"/empty.wasm", "invalid module"}},
		{"module without _start", nil, []string{"/nostart.wasm"}, []string{"/nostart.wasm", `no exported function "_start"`}},
		{"no such export", nil, []string{"/funcs.wasm#nothere"}, []string{"/funcs.wasm", `no exported function "nothere"`}},
		{"export with parameters", nil, []string{"/funcs.wasm#withparam"}, []string{"/funcs.wasm", `"withparam" has type (i32) -> ()`}},
		{"export with a result", nil, []string{"/funcs.wasm#withresult"}, []string{"/funcs.wasm", `"withresult" has type () -> (i32)`, "returns nothing"}},
		{"function on a native program", nil, []string{"/bin/native#main"}, []string{"/bin/native", "native program"}},
		{"bad WASM_LISTEN", []string{"--env", "WASM_LISTEN=:99999"}, []string{"/probe.wasm"}, []string{"WASM_LISTEN", "99999"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := newID(t)
			_, stderr, err := e.ctr(ctrRunArgs(id, append(tt.flags, group...), tt.args)...)
			if err == nil {
				t.Fatalf("ctr run succeeded; want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("error %q does not say %q", stderr, w)
				}
			}
			// ctr leaves the container record when the task fails to be created.
			e.ctr("containers", "delete", id)
			if got := shimPids(e.shim); len(got) != 1 || got[0] != shims[0] {
				t.Errorf("shim processes %v, want still %v", got, shims)
			}
			select {
			case <-keeper.done:
				t.Fatalf("the other container of the shim ended: %+v", keeper.res)
			default:
			}
		})
	}

	// The shim still serves new containers.
	ok := startBackground(t, group, "/probe.wasm", "echo", "still serving")
	if r := ok.wait(t, time.Minute); r.code != 0 || r.stdout != "[still serving]\n" {
		t.Errorf("a good container after the bad ones: %+v", r)
	}
	keeper.terminate(t)
	// The group's shim removed its socket when it exited.
	addr, err := shim.CreateSocketAddress(namespaces.WithNamespace(context.Background(), "default"), "/run/containerd/s", e.address, "bad-input", false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(strings.TrimPrefix(addr, "unix://")); err == nil {
		t.Errorf("the group shim's socket %s is left behind", addr)
	}
}
