package shim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	versionapi "github.com/containerd/containerd/api/services/version/v1"
	"github.com/containerd/containerd/api/types"
	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
)

func marshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func anyOf(t *testing.T, v any) []byte {
	t.Helper()
	a, err := typeurl.MarshalAnyToProto(v)
	if err != nil {
		t.Fatal(err)
	}
	return marshal(t, a)
}

func TestParseInvocation(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		want invocation
		ok   bool
	}{
		{
			name: "start, as containerd 2.x runs it",
			args: []string{"-namespace", "k8s.io", "-address", "/run/containerd/containerd.sock", "-publish-binary", "/usr/bin/containerd", "-id", "abc", "-debug", "start"},
			want: invocation{id: "abc", namespace: "k8s.io", address: "/run/containerd/containerd.sock", debug: true, action: "start"},
			ok:   true,
		},
		{
			name: "delete with a bundle",
			args: []string{"-namespace", "default", "-address", "/a.sock", "-publish-binary", "/c", "-id", "x", "-bundle", "/b", "delete"},
			want: invocation{id: "x", namespace: "default", address: "/a.sock", action: "delete"},
			ok:   true,
		},
		{name: "the server", args: []string{"-namespace", "default", "-id", "x", "-address", "/a.sock"}, want: invocation{id: "x", namespace: "default", address: "/a.sock"}, ok: true},
		{name: "-info", args: []string{"-info"}, ok: true},
		{name: "an unknown flag", args: []string{"-nosuchflag", "start"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parseInvocation(tt.args)
			if ok != tt.ok || got != tt.want {
				t.Errorf("parseInvocation(%q) = %+v, %v; want %+v, %v", tt.args, got, ok, tt.want, tt.ok)
			}
		})
	}
}

// TestIsBootstrapParams: what containerd 2.3+ sends is told apart from the
// runtime options older containerd sends, whatever those hold.
func TestIsBootstrapParams(t *testing.T) {
	params := marshal(t, &bootapi.BootstrapParams{InstanceID: "abc", Namespace: "k8s.io", ContainerdGrpcAddress: "/c.sock"})
	for _, tt := range []struct {
		name  string
		input []byte
		want  bool
	}{
		{"BootstrapParams for this shim", params, true},
		{"BootstrapParams for another id", marshal(t, &bootapi.BootstrapParams{InstanceID: "other", Namespace: "k8s.io"}), false},
		{"BootstrapParams for another namespace", marshal(t, &bootapi.BootstrapParams{InstanceID: "abc", Namespace: "default"}), false},
		{"nothing (no runtime options)", nil, false},
		{"runc's options", anyOf(t, &runcoptions.Options{BinaryName: "runc", Root: "/run/x"}), false},
		{"CRI's TOML options", anyOf(t, &runtimeoptions.Options{ConfigBody: []byte("CacheRoot = \"/x\"\n")}), false},
		{"garbage", []byte{0xff, 0xff, 0xff}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := isBootstrapParams(tt.input, "abc", "k8s.io"); got != tt.want {
				t.Errorf("isBootstrapParams = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestLegacyParams(t *testing.T) {
	opts := &runcoptions.Options{Root: "/run/test-runc", ShimCgroup: "/shims"}
	inv := invocation{id: "abc", namespace: "k8s.io", address: "/c.sock", debug: true, action: "start"}
	p, err := legacyParams(inv, anyOf(t, opts), "/c.sock.ttrpc")
	if err != nil {
		t.Fatal(err)
	}
	if p.InstanceID != "abc" || p.Namespace != "k8s.io" || p.ContainerdGrpcAddress != "/c.sock" ||
		p.ContainerdTtrpcAddress != "/c.sock.ttrpc" || p.LogLevel != bootapi.LogLevel_LOG_LEVEL_DEBUG {
		t.Errorf("params %+v", p)
	}
	var got runcoptions.Options
	if found, err := p.FindExtension(&got); err != nil || !found || !proto.Equal(&got, opts) {
		t.Errorf("runtime options in the params: %v, %v, %+v", found, err, &got)
	}

	inv.debug = false
	p, err = legacyParams(inv, nil, "")
	if err != nil || len(p.Extensions) != 0 || p.LogLevel != bootapi.LogLevel_LOG_LEVEL_INFO {
		t.Errorf("without options nor -debug: %+v, %v", p, err)
	}
	if _, err := legacyParams(inv, []byte{0xff, 0xff}, ""); err == nil {
		t.Error("undecodable runtime options were taken")
	}
}

func TestTaskAPIFor(t *testing.T) {
	for v, want := range map[string]int{
		"v2.2.9": 3, "v2.0.14": 3, "2.4.2+unknown": 3, "v2.1.4-k3s1": 3, "v3.0.0": 3,
		"v1.7.35": 2, "1.7.0": 2, "": 2, "devel": 2,
		"v1.6.38": 0, "1.5.0": 0, "v0.2.0": 0,
	} {
		got, err := taskAPIFor(v)
		if want == 0 {
			if err == nil || !strings.Contains(err.Error(), "1.7 or newer") {
				t.Errorf("taskAPIFor(%q) = %d, %v; want an error naming the minimum version", v, got, err)
			}
			continue
		}
		if got != want || err != nil {
			t.Errorf("taskAPIFor(%q) = %d, %v; want %d", v, got, err, want)
		}
	}
}

// versionServer is containerd's version service, answering version.
type versionServer struct {
	versionapi.UnimplementedVersionServer
	version string
}

func (s versionServer) Version(context.Context, *emptypb.Empty) (*versionapi.VersionResponse, error) {
	return &versionapi.VersionResponse{Version: s.version}, nil
}

// serveVersion serves the version service on a socket and returns its path.
func serveVersion(t *testing.T, version string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "containerd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	versionapi.RegisterVersionServer(srv, versionServer{version: version})
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return sock
}

// fakeManager records the params of Start and answers as runc's manager.
type fakeManager struct {
	got *bootapi.BootstrapParams
	ns  string
}

func (m *fakeManager) Name() string { return RuntimeName }

func (m *fakeManager) Start(ctx context.Context, p *bootapi.BootstrapParams) (*bootapi.BootstrapResult, error) {
	m.got = p
	m.ns, _ = namespaces.Namespace(ctx)
	return &bootapi.BootstrapResult{Version: 3, Address: "unix:///run/containerd/s/0123", Protocol: "ttrpc"}, nil
}

func (m *fakeManager) Stop(context.Context, string) (shim.StopStatus, error) {
	return shim.StopStatus{}, nil
}

func (m *fakeManager) Info(context.Context, io.Reader) (*types.RuntimeInfo, error) { return nil, nil }

// TestLegacyStart: `start` under an older containerd answers in JSON, with
// the task API version that containerd speaks best (its version asked over
// its own socket), and 2 when it cannot be asked.
func TestLegacyStart(t *testing.T) {
	for _, tt := range []struct {
		name, version string
		noServer      bool
		want          int
	}{
		{name: "containerd 2.2", version: "v2.2.9", want: 3},
		{name: "containerd 2.0", version: "v2.0.14", want: 3},
		{name: "containerd 1.7", version: "v1.7.35", want: 2},
		{name: "no answer", noServer: true, want: 2},
		{name: "containerd 1.6", version: "v1.6.38", want: 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			addr := filepath.Join(t.TempDir(), "nothing.sock")
			if !tt.noServer {
				addr = serveVersion(t, tt.version)
			}
			t.Setenv("TTRPC_ADDRESS", addr+".ttrpc")
			t.Chdir(t.TempDir()) // the bundle
			m := &fakeManager{}
			var out bytes.Buffer
			inv := invocation{id: "abc", namespace: "k8s.io", address: addr, action: "start"}
			err := legacyStart(context.Background(), m, inv, anyOf(t, &runcoptions.Options{Root: "/r"}), &out)
			if tt.want == 0 {
				if err == nil || m.got != nil {
					t.Fatalf("an unsupported containerd was served (%v); the manager started: %v", err, m.got != nil)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var reply map[string]any
			if err := json.Unmarshal(out.Bytes(), &reply); err != nil {
				t.Fatalf("reply %q: %v", out.String(), err)
			}
			want := map[string]any{"version": float64(tt.want), "address": "unix:///run/containerd/s/0123", "protocol": "ttrpc"}
			if fmt.Sprint(reply) != fmt.Sprint(want) {
				t.Errorf("reply %v, want %v", reply, want)
			}
			if b, err := os.ReadFile("address"); err != nil || string(b) != "unix:///run/containerd/s/0123" {
				t.Errorf("the bundle's address file: %q, %v", b, err)
			}
			if m.ns != "k8s.io" || m.got.GetInstanceID() != "abc" || m.got.GetContainerdTtrpcAddress() != addr+".ttrpc" || len(m.got.GetExtensions()) != 1 {
				t.Errorf("manager started with namespace %q, params %+v", m.ns, m.got)
			}
		})
	}
	if err := legacyStart(context.Background(), &fakeManager{}, invocation{id: "abc", action: "start"}, nil, io.Discard); err == nil {
		t.Error("a start without a namespace was served")
	}
}
