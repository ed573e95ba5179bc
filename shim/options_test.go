package shim

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
)

func marshalOptions(t *testing.T, v any) typeurl.Any {
	t.Helper()
	a, err := typeurl.MarshalAnyToProto(v)
	if err != nil {
		t.Fatalf("marshal %T: %v", v, err)
	}
	return a
}

// writeOptionsFile writes a runtime options file into dir.
func writeOptionsFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRuncOptionsDecode(t *testing.T) {
	dir := t.TempDir()
	good := writeOptionsFile(t, dir, "good.toml", "BinaryName = \"/opt/runc\"\nSystemdCgroup = true\nRoot = \"/run/from-file\"\n")
	broken := writeOptionsFile(t, dir, "broken.toml", "Root = \"/r\n")
	empty := writeOptionsFile(t, dir, "empty.toml", "")

	tests := []struct {
		name string
		in   func(t *testing.T) typeurl.Any
		want *runcoptions.Options
	}{
		{"nil", func(*testing.T) typeurl.Any { return nil }, &runcoptions.Options{}},
		{"nil *anypb.Any", func(*testing.T) typeurl.Any { return (*anypb.Any)(nil) }, &runcoptions.Options{}},
		{"empty Any", func(*testing.T) typeurl.Any { return &anypb.Any{} }, &runcoptions.Options{}},
		{"runc options pass through", func(t *testing.T) typeurl.Any {
			return marshalOptions(t, &runcoptions.Options{BinaryName: "crun", Root: "/run/crun", SystemdCgroup: true, IoUid: 1000, ShimCgroup: "/shim"})
		}, &runcoptions.Options{BinaryName: "crun", Root: "/run/crun", SystemdCgroup: true, IoUid: 1000, ShimCgroup: "/shim"}},
		{"empty runc options", func(t *testing.T) typeurl.Any { return marshalOptions(t, &runcoptions.Options{}) }, &runcoptions.Options{}},
		{"CRI config body", func(t *testing.T) typeurl.Any {
			return marshalOptions(t, &runtimeoptions.Options{
				TypeUrl:    "io.containerd.wasm.v1.options",
				ConfigBody: []byte("BinaryName = \"/usr/sbin/runc\"\nSystemdCgroup = true\nRoot = \"/run/x\""),
			})
		}, &runcoptions.Options{BinaryName: "/usr/sbin/runc", SystemdCgroup: true, Root: "/run/x"}},
		{"CRI config body, some keys", func(t *testing.T) typeurl.Any {
			return marshalOptions(t, &runtimeoptions.Options{ConfigBody: []byte("SystemdCgroup = false\n# a comment\n")})
		}, &runcoptions.Options{}},
		{"ctr config path", func(t *testing.T) typeurl.Any {
			return marshalOptions(t, &runtimeoptions.Options{ConfigPath: good})
		}, &runcoptions.Options{BinaryName: "/opt/runc", SystemdCgroup: true, Root: "/run/from-file"}},
		{"empty config file", func(t *testing.T) typeurl.Any {
			return marshalOptions(t, &runtimeoptions.Options{ConfigPath: empty})
		}, &runcoptions.Options{}},
		{"config body wins over path", func(t *testing.T) typeurl.Any {
			return marshalOptions(t, &runtimeoptions.Options{ConfigPath: broken, ConfigBody: []byte("Root = \"/from-body\"")})
		}, &runcoptions.Options{Root: "/from-body"}},
		{"neither body nor path", func(t *testing.T) typeurl.Any {
			return marshalOptions(t, &runtimeoptions.Options{})
		}, &runcoptions.Options{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := runcOptions(tt.in(t))
			if err != nil {
				t.Fatalf("runcOptions: %v", err)
			}
			if got == nil {
				t.Fatal("runcOptions returned nil options")
			}
			if !proto.Equal(got, tt.want) {
				t.Errorf("runcOptions = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRuncOptionsErrors(t *testing.T) {
	dir := t.TempDir()
	unknownFile := writeOptionsFile(t, dir, "unknown.toml", "Root = \"/r\"\nNoNewKeyring = true\n")
	brokenFile := writeOptionsFile(t, dir, "broken.toml", "Root = \"/r\n")
	missingFile := filepath.Join(dir, "missing.toml")
	runcURL := marshalOptions(t, &runcoptions.Options{}).GetTypeUrl()

	body := func(s string) func(t *testing.T) typeurl.Any {
		return func(t *testing.T) typeurl.Any {
			return marshalOptions(t, &runtimeoptions.Options{ConfigBody: []byte(s)})
		}
	}
	file := func(p string) func(t *testing.T) typeurl.Any {
		return func(t *testing.T) typeurl.Any { return marshalOptions(t, &runtimeoptions.Options{ConfigPath: p}) }
	}
	tests := []struct {
		name        string
		in          func(t *testing.T) typeurl.Any
		invalidArg  bool
		wantInError []string
	}{
		{"unknown key", body("BinaryName = \"runc\"\nShimCgroup = \"/x\"\n"), true, []string{"ShimCgroup", "unknown keys"}},
		{"two unknown keys", body("Foo = 1\nBar = 2\n"), true, []string{"Foo", "Bar"}},
		{"unknown table", body("[options]\nBinaryName = \"runc\"\n"), true, []string{"options"}},
		{"unknown key in file", file(unknownFile), true, []string{"NoNewKeyring", unknownFile}},
		{"invalid TOML", body("Root = \n"), true, []string{"runtime options"}},
		{"unterminated string", body("Root = \"/r\n"), true, []string{"runtime options"}},
		{"invalid TOML in file", file(brokenFile), true, []string{brokenFile}},
		{"wrong type", body("SystemdCgroup = \"yes\"\n"), true, []string{"runtime options"}},
		{"missing file", file(missingFile), false, []string{missingFile}},
		{"unsupported type", func(t *testing.T) typeurl.Any { return marshalOptions(t, &emptypb.Empty{}) }, true, []string{"unsupported runtime options type"}},
		{"unknown type URL", func(*testing.T) typeurl.Any {
			return &anypb.Any{TypeUrl: "example.com/not.a.Type", Value: []byte{1, 2, 3}}
		}, true, []string{"example.com/not.a.Type"}},
		{"garbage runc options", func(*testing.T) typeurl.Any {
			return &anypb.Any{TypeUrl: runcURL, Value: []byte{0xff, 0xff, 0xff}}
		}, true, []string{runcURL}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := runcOptions(tt.in(t))
			if err == nil {
				t.Fatalf("runcOptions = %v, want an error", got)
			}
			if got != nil {
				t.Errorf("runcOptions returned options %v with its error", got)
			}
			if tt.invalidArg && !errdefs.IsInvalidArgument(err) {
				t.Errorf("error %q is not an invalid argument", err)
			}
			for _, s := range tt.wantInError {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
}

func TestShimOptions(t *testing.T) {
	body := func(s string) typeurl.Any {
		return marshalOptions(t, &runtimeoptions.Options{ConfigBody: []byte(s)})
	}
	tests := []struct {
		name    string
		in      typeurl.Any
		want    Options
		wantErr string
	}{
		{"defaults", nil, Options{}, ""},
		{"runc's options type", marshalOptions(t, &runcoptions.Options{Root: "/r"}), Options{}, ""},
		{"all keys", body("Root = \"/r\"\nCacheRoot = \"/var/cache/wasm\"\nCacheMaxBytes = 1048576\nCompileCgroup = \"/system.slice/wasm\"\nCompileMemoryLimit = 536870912\nCompileTotalMemoryLimit = 2147483648\nCompileConcurrency = 3\nTrace = true\n"),
			Options{Root: "/r", CacheRoot: "/var/cache/wasm", CacheMaxBytes: 1 << 20, CompileCgroup: "/system.slice/wasm", CompileMemoryLimit: 512 << 20, CompileTotalMemoryLimit: 2 << 30, CompileConcurrency: 3, Trace: true}, ""},
		{"relative cache root", body("CacheRoot = \"cache\"\n"), Options{}, "not an absolute path"},
		{"negative cache bound", body("CacheMaxBytes = -1\n"), Options{}, "may not be negative"},
		{"negative memory limit", body("CompileMemoryLimit = -5\n"), Options{}, "may not be negative"},
		{"negative total memory limit", body("CompileTotalMemoryLimit = -1\n"), Options{}, "may not be negative"},
		{"negative concurrency", body("CompileConcurrency = -2\n"), Options{}, "may not be negative"},
		{"size as a string", body("CacheMaxBytes = \"1GiB\"\n"), Options{}, "runtime options"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := parseOptions(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errdefs.IsInvalidArgument(err) {
					t.Fatalf("err %v, want an invalid argument mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *got != tt.want {
				t.Errorf("got %+v, want %+v", *got, tt.want)
			}
		})
	}
}
