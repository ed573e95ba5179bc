package integration

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/proto"
)

// TestEvents: a Wasm task publishes create, start, exit and delete with the
// same pid, and its exit reports 128 + the signal requested.
func TestEvents(t *testing.T) {
	events := exec.Command(e.ctrBin, "--address", e.address, "events")
	var out lockedBuffer
	events.Stdout = &out
	if err := events.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { events.Process.Kill(); events.Wait() }()
	time.Sleep(200 * time.Millisecond) // let the subscription settle

	b := startBackground(t, nil, "/probe.wasm", "spin")
	b.waitOutput(t, "spinning")
	before := time.Now()
	b.terminate(t)

	type event struct {
		ContainerID string `json:"container_id"`
		ID          string `json:"id"`
		Pid         uint32 `json:"pid"`
		ExitStatus  uint32 `json:"exit_status"`
		ExitedAt    *struct {
			Seconds int64 `json:"seconds"`
		} `json:"exited_at"`
	}
	got := map[string]event{}
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < 4 && time.Now().Before(deadline) {
		got = map[string]event{}
		for _, line := range strings.Split(out.String(), "\n") {
			if !strings.Contains(line, b.id) {
				continue
			}
			// "2026-01-02 15:04:05.999 +0000 UTC default /tasks/exit {...}"
			f := strings.SplitN(line, " ", 7)
			if len(f) < 7 || !strings.HasPrefix(f[5], "/tasks/") {
				continue
			}
			var ev event
			if err := json.Unmarshal([]byte(f[6]), &ev); err != nil {
				t.Fatalf("event %q: %v", line, err)
			}
			got[f[5]] = ev
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, topic := range []string{"/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"} {
		if _, ok := got[topic]; !ok {
			t.Fatalf("no %s event for %s in\n%s", topic, b.id, out.String())
		}
	}
	pid := got["/tasks/create"].Pid
	if pid == 0 || got["/tasks/start"].Pid != pid || got["/tasks/exit"].Pid != pid || got["/tasks/delete"].Pid != pid {
		t.Errorf("pids differ across events: %+v", got)
	}
	if s := got["/tasks/exit"].ExitStatus; s != 143 {
		t.Errorf("/tasks/exit status %d, want 143", s)
	}
	if s := got["/tasks/delete"].ExitStatus; s != 143 {
		t.Errorf("/tasks/delete status %d, want 143", s)
	}
	if at := got["/tasks/exit"].ExitedAt; at == nil || time.Unix(at.Seconds, 0).Before(before.Add(-time.Second)) || time.Unix(at.Seconds, 0).After(time.Now()) {
		t.Errorf("/tasks/exit exited_at %+v is not the time of the kill (%v)", at, before)
	}
}

// TestInfo: `-info` answers with runc's features, also when the runtime
// options are the TOML body CRI sends for a non-runc runtime.
func TestInfo(t *testing.T) {
	body, err := typeurl.MarshalAnyToProto(&runtimeoptions.Options{ConfigBody: []byte("BinaryName = \"runc\"\n")})
	if err != nil {
		t.Fatal(err)
	}
	withOpts, err := proto.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	bad, _ := typeurl.MarshalAnyToProto(&runtimeoptions.Options{ConfigBody: []byte("NoSuchKey = 1\n")})
	badOpts, _ := proto.Marshal(bad)
	for _, tt := range []struct {
		name    string
		stdin   []byte
		wantErr string
	}{
		{name: "no options"},
		{name: "CRI options", stdin: withOpts},
		{name: "unknown option", stdin: badOpts, wantErr: "NoSuchKey"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(e.shim, "-info")
			cmd.Stdin = bytes.NewReader(tt.stdin)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(stderr.String(), tt.wantErr) {
					t.Fatalf("want an error naming %q; got %v, stderr %q", tt.wantErr, err, stderr.String())
				}
				return
			}
			if err != nil {
				t.Fatalf("-info: %v: %s", err, stderr.String())
			}
			var info types.RuntimeInfo
			if err := proto.Unmarshal(stdout.Bytes(), &info); err != nil {
				t.Fatalf("decode RuntimeInfo: %v", err)
			}
			if info.Name != "io.containerd.wasm.v1" {
				t.Errorf("name %q", info.Name)
			}
			if v := info.GetVersion(); v.GetVersion() != shimVersion(t) || info.Annotations["io.containerd.wasm.v1/wazero"] != moduleVersion(t, "github.com/tetratelabs/wazero") {
				t.Errorf("version %+v, annotations %v: want the shim's own and wazero's", v, info.Annotations)
			}
			if info.Features == nil || !strings.Contains(info.Features.GetTypeUrl(), "features") {
				t.Errorf("no runc features in %+v", &info)
			}
		})
	}
}

// TestDeleteAction: `delete`, which containerd runs after every task (and
// whose status it reports when the shim is gone), is idempotent and
// reports runc's shim's status: the shim that knew more is gone.
func TestDeleteAction(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "default")
	for _, tt := range []struct {
		name string
		want uint32
	}{
		{"del", 137},
	} {
		t.Run(tt.name, func(t *testing.T) {
			bundle := filepath.Join(dir, tt.name)
			os.MkdirAll(bundle, 0o755)
			os.WriteFile(filepath.Join(bundle, "options.json"), []byte(fmt.Sprintf(`{"root":%q}`, e.runcRoot)), 0o644)
			os.WriteFile(filepath.Join(bundle, "exit.json"), []byte(`{"Timestamp":"2026-01-02T03:04:05Z","Pid":4242,"Status":137}`), 0o644)
			for i := 0; i < 2; i++ { // containerd may run it more than once
				cmd := exec.Command(e.shim, "-namespace", "default", "-id", filepath.Base(bundle), "-address", e.address, "delete")
				cmd.Dir = bundle
				var stdout, stderr bytes.Buffer
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				if err := cmd.Run(); err != nil {
					t.Fatalf("delete #%d: %v: %s", i+1, err, stderr.String())
				}
				var resp taskAPI.DeleteResponse
				if err := proto.Unmarshal(stdout.Bytes(), &resp); err != nil {
					t.Fatalf("decode DeleteResponse: %v", err)
				}
				if resp.Pid != 4242 || resp.ExitStatus != tt.want {
					t.Errorf("delete #%d: pid %d status %d, want 4242, %d", i+1, resp.Pid, resp.ExitStatus, tt.want)
				}
			}
		})
	}
}

// TestVersion: --version and -v name the shim's own build beside the
// containerd packages and the wazero it links, and exit 0.
func TestVersion(t *testing.T) {
	for _, flag := range []string{"--version", "-v"} {
		out, err := exec.Command(e.shim, flag).Output()
		if err != nil {
			t.Fatalf("%s: %v", flag, err)
		}
		for _, want := range []string{
			"Version:",
			"containerd: " + moduleVersion(t, "github.com/containerd/containerd/v2"),
			"wazero:     " + moduleVersion(t, "github.com/tetratelabs/wazero"),
		} {
			if !strings.Contains(string(out), want) {
				t.Errorf("%s output lacks %q:\n%s", flag, want, out)
			}
		}
	}
	if v := shimVersion(t); v == "" || strings.Contains(v, "+unknown") {
		t.Errorf("the shim's version %q", v)
	}
}

// TestDynamicallyLinkedShim: a shim built with cgo (a plain `go build`
// where a C compiler is found) cannot run as the runner in a container;
// its Creates fail with the fix named, and nothing is left behind.
func TestDynamicallyLinkedShim(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "containerd-shim-wasm-v1")
	if err := goBuild(bin, "./cmd/containerd-shim-wasm-v1", "CGO_ENABLED=1"); err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	dynamic := slices.ContainsFunc(f.Progs, func(p *elf.Prog) bool { return p.Type == elf.PT_INTERP })
	f.Close()
	if !dynamic {
		t.Fatal("the cgo build is not dynamically linked")
	}
	for _, args := range [][]string{{"/probe.wasm", "echo"}, {"/bin/native"}} {
		id := newID(t)
		a := ctrRunArgs(id, nil, args)
		a[slices.Index(a, "--runtime")+1] = bin // containerd runs a shim named by its absolute path
		_, stderr, err := e.ctr(a...)
		if err == nil || !strings.Contains(stderr, "dynamically linked") || !strings.Contains(stderr, "CGO_ENABLED=0") {
			t.Errorf("%s with a dynamically linked shim: %v, %q; want the fix named", args[0], err, stderr)
		}
		e.ctr("containers", "delete", id)
		assertClean(t, id)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(shimPids(bin)) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if pids := shimPids(bin); len(pids) > 0 {
		t.Errorf("dynamically linked shims left running: %v", pids)
	}
}
