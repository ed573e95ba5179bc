package oci

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/pathwalk"
)

// ociBundle is a test bundle: a directory holding rootfs/ and a spec whose
// root is "rootfs".
type ociBundle struct {
	t    *testing.T
	dir  string
	spec *specs.Spec
}

func newOCIBundle(t *testing.T) *ociBundle {
	t.Helper()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	return &ociBundle{t: t, dir: dir, spec: &specs.Spec{
		Root:    &specs.Root{Path: "rootfs"},
		Process: &specs.Process{Args: []string{"/app"}, Cwd: "/", Env: []string{"PATH=/usr/local/bin:/usr/bin:/bin"}},
	}}
}

func (b *ociBundle) rootfs() string { return filepath.Join(b.dir, "rootfs") }

// host returns the host path of p inside the rootfs.
func (b *ociBundle) host(p string) string { return filepath.Join(b.rootfs(), p) }

// writeHostFile writes a file at the host path p (parents created), with mode.
func writeHostFile(t *testing.T, p string, data string, mode fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	// WriteFile's mode is subject to the umask and only applies to new files.
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

// file writes a file at the container path p.
func (b *ociBundle) file(p, data string, mode fs.FileMode) {
	b.t.Helper()
	writeHostFile(b.t, b.host(p), data, mode)
}

func (b *ociBundle) dirAt(p string) {
	b.t.Helper()
	if err := os.MkdirAll(b.host(p), 0o755); err != nil {
		b.t.Fatal(err)
	}
}

// symlink creates a symlink at the container path p with target.
func (b *ociBundle) symlink(p, target string) {
	b.t.Helper()
	if err := os.MkdirAll(filepath.Dir(b.host(p)), 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.Symlink(target, b.host(p)); err != nil {
		b.t.Fatal(err)
	}
}

func TestRootPath(t *testing.T) {
	tests := []struct {
		bundle, root, want string
	}{
		{"/run/b", "rootfs", "/run/b/rootfs"},
		{"/run/b", "/abs/root", "/abs/root"},
		{"/run/b", "sub/../rootfs", "/run/b/rootfs"},
	}
	for _, tt := range tests {
		got := RootPath(tt.bundle, &specs.Spec{Root: &specs.Root{Path: tt.root}})
		if got != tt.want {
			t.Errorf("RootPath(%q, %q) = %q, want %q", tt.bundle, tt.root, got, tt.want)
		}
	}
}

// TestResolveSymlinksStayInRoot builds links whose targets would lead out of
// the rootfs on the host, and a file outside the rootfs that such a link
// would reach, and checks that every link resolves inside the rootfs.
func TestResolveSymlinksStayInRoot(t *testing.T) {
	b := newOCIBundle(t)
	// What a link that escaped the rootfs would reach: <bundle>/etc/passwd
	// from rootfs/bin, and the host's /etc/passwd.
	writeHostFile(t, filepath.Join(b.dir, "etc", "passwd"), "HOST SIDE", 0o644)
	b.file("/etc/passwd", "root:x:0:0", 0o644)
	b.file("/opt/mod.wasm", "\x00asm\x01\x00\x00\x00", 0o644)
	b.symlink("/bin/abs", "/../../../../etc/passwd")
	b.symlink("/bin/rel", "../../../../etc/passwd")
	b.symlink("/bin/dotdot", "../../../../../../../../../../etc/passwd")
	b.symlink("/bin/plain", "/etc/passwd")
	b.symlink("/bin/chain1", "chain2")
	b.symlink("/bin/chain2", "/usr/../bin/chain3")
	b.symlink("/bin/chain3", "../opt/mod.wasm")
	b.symlink("/lib", "usr/lib") // a relative link to a directory, used as a path component
	b.file("/usr/lib/libc.so", "lib", 0o644)
	b.symlink("/usr/lib64", "/usr/lib")
	// Links whose target exists only outside the rootfs.
	b.symlink("/bin/outside", "/../../etc/passwd-host-only")
	writeHostFile(t, filepath.Join(b.dir, "etc", "passwd-host-only"), "HOST ONLY", 0o644)
	b.symlink("/bin/hostabs", filepath.Join(b.dir, "etc", "passwd"))

	r := NewResolver(b.dir, b.spec)
	tests := []struct {
		in, want string // container paths; want "" for ErrNotExist
	}{
		{"/bin/abs", "/etc/passwd"},
		{"/bin/rel", "/etc/passwd"},
		{"/bin/dotdot", "/etc/passwd"},
		{"/bin/plain", "/etc/passwd"},
		{"bin/plain", "/etc/passwd"}, // relative to "/"
		{"/bin/chain1", "/opt/mod.wasm"},
		{"/../../../etc/passwd", "/etc/passwd"},
		{"/etc/../../../etc/./passwd", "/etc/passwd"},
		{"/lib/libc.so", "/usr/lib/libc.so"},
		{"/usr/lib64/libc.so", "/usr/lib/libc.so"},
		{"/usr/lib64/../lib64/libc.so", "/usr/lib/libc.so"},
		{"/", "/"},
		{"/bin/outside", ""},
		// An absolute link to the host path of a file is a container path,
		// which the rootfs does not have.
		{"/bin/hostabs", ""},
		{"/nonexistent/../etc/passwd", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			resolved, host, err := r.Resolve(tt.in)
			if tt.want == "" {
				if !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("Resolve(%q) = %q, %q, %v; want ErrNotExist", tt.in, resolved, host, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Resolve(%q): %v", tt.in, err)
			}
			if resolved != tt.want {
				t.Errorf("resolved = %q, want %q", resolved, tt.want)
			}
			if wantHost := filepath.Join(b.rootfs(), tt.want); host != wantHost {
				t.Errorf("host = %q, want %q", host, wantHost)
			}
			if !strings.HasPrefix(host, b.rootfs()) {
				t.Errorf("host path %q is outside the rootfs %q", host, b.rootfs())
			}
			if tt.want == "/etc/passwd" {
				data, err := os.ReadFile(host)
				if err != nil {
					t.Fatal(err)
				}
				if string(data) != "root:x:0:0" {
					t.Errorf("read %q through the resolved path, want the rootfs file", data)
				}
			}
		})
	}
}

func TestResolveLoops(t *testing.T) {
	b := newOCIBundle(t)
	b.symlink("/a", "b")
	b.symlink("/b", "/a")
	b.symlink("/self", "self")
	b.symlink("/dir/up", "../dir/up")
	b.symlink("/deep", "/deep/x")
	// 40 chained links resolve; 41 do not.
	for i := 0; i < pathwalk.MaxSymlinks+1; i++ {
		b.symlink("/chain/"+strconv.Itoa(i), strconv.Itoa(i+1))
	}
	b.file("/chain/"+strconv.Itoa(pathwalk.MaxSymlinks+1), "end", 0o644)

	r := NewResolver(b.dir, b.spec)
	for _, p := range []string{"/a", "/b", "/self", "/dir/up", "/a/x", "/deep", "/chain/0"} {
		t.Run(p, func(t *testing.T) {
			resolved, _, err := r.Resolve(p)
			if err == nil {
				t.Fatalf("Resolve(%q) = %q, want an error", p, resolved)
			}
			if errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Resolve(%q) error %v should not be ErrNotExist", p, err)
			}
			if !strings.Contains(err.Error(), "too many levels of symbolic links") {
				t.Errorf("Resolve(%q) error = %v, want it to mention too many levels of symbolic links", p, err)
			}
		})
	}
	t.Run("40 links", func(t *testing.T) {
		resolved, _, err := r.Resolve("/chain/1")
		if err != nil {
			t.Fatalf("Resolve: %v", err)
		}
		if want := "/chain/" + strconv.Itoa(pathwalk.MaxSymlinks+1); resolved != want {
			t.Errorf("resolved = %q, want %q", resolved, want)
		}
	})
}

func TestResolveMounts(t *testing.T) {
	b := newOCIBundle(t)
	data := t.TempDir()   // bound at /data
	nested := t.TempDir() // bound at /data/nested
	cfg := t.TempDir()    // bound at /etc/app with options only
	writeHostFile(t, filepath.Join(data, "mod.wasm"), "data module", 0o644)
	writeHostFile(t, filepath.Join(data, "nested", "x"), "shadowed by the nested mount", 0o644)
	writeHostFile(t, filepath.Join(nested, "x"), "nested", 0o644)
	writeHostFile(t, filepath.Join(cfg, "app.conf"), "conf", 0o644)
	writeHostFile(t, filepath.Join(data, "..", "escape"), "outside the bind source", 0o644)
	if err := os.Symlink("/opt/real", filepath.Join(data, "abs-link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../../../escape", filepath.Join(data, "rel-link")); err != nil {
		t.Fatal(err)
	}
	single := filepath.Join(t.TempDir(), "single-file")
	writeHostFile(t, single, "single", 0o644)

	b.file("/data/only-in-rootfs", "hidden by the bind mount", 0o644)
	b.file("/data2/x", "a sibling of the mount point, not under it", 0o644)
	b.file("/database", "a file whose name starts with the mount point's", 0o644)
	b.file("/dev/x", "hidden by the tmpfs", 0o644)
	b.file("/proc/1/mem", "hidden by proc", 0o644)
	b.file("/opt/real", "real", 0o644)
	b.file("/escape", "rootfs escape", 0o644)
	b.file("/etc/hosts", "rootfs hosts, hidden by the file bind", 0o644)
	b.symlink("/link-to-data", "/data/mod.wasm")
	b.symlink("/link-to-dev", "dev/x")
	b.spec.Mounts = []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc"},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "mode=755"}},
		{Destination: "/data", Type: "bind", Source: data, Options: []string{"rbind", "ro"}},
		{Destination: "/data/nested/", Type: "none", Source: nested, Options: []string{"rbind"}},
		{Destination: "etc/app", Source: cfg, Options: []string{"bind", "ro"}},
		{Destination: "/etc/hosts", Type: "bind", Source: single},
		{Destination: "/run", Type: "tmpfs", Source: "tmpfs"},
		// A later mount at the same place shadows the earlier one.
		{Destination: "/run", Type: "bind", Source: data, Options: []string{"rbind"}},
	}
	r := NewResolver(b.dir, b.spec)

	tests := []struct {
		in, want, wantHost string // wantHost "" for ErrNotExist
	}{
		{"/data/mod.wasm", "/data/mod.wasm", filepath.Join(data, "mod.wasm")},
		{"/data", "/data", data},
		{"/link-to-data", "/data/mod.wasm", filepath.Join(data, "mod.wasm")},
		{"/data/nested/x", "/data/nested/x", filepath.Join(nested, "x")},
		{"/etc/app/app.conf", "/etc/app/app.conf", filepath.Join(cfg, "app.conf")},
		{"/etc/hosts", "/etc/hosts", single},
		{"/run/mod.wasm", "/run/mod.wasm", filepath.Join(data, "mod.wasm")},
		// Links inside a bind mount resolve in the container's view.
		{"/data/abs-link", "/opt/real", b.host("/opt/real")},
		{"/data/rel-link", "/escape", b.host("/escape")},
		{"/data/only-in-rootfs", "", ""},
		{"/data2/x", "/data2/x", b.host("/data2/x")},
		{"/database", "/database", b.host("/database")},
		{"/dev/x", "", ""},
		{"/link-to-dev", "", ""},
		{"/proc/1/mem", "", ""},
		{"/dev", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			resolved, host, err := r.Resolve(tt.in)
			if tt.wantHost == "" {
				if !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("Resolve(%q) = %q, %q, %v; want ErrNotExist", tt.in, resolved, host, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Resolve(%q): %v", tt.in, err)
			}
			if resolved != tt.want || host != tt.wantHost {
				t.Errorf("Resolve(%q) = %q, %q; want %q, %q", tt.in, resolved, host, tt.want, tt.wantHost)
			}
		})
	}

	t.Run("tmpfs error names the mount", func(t *testing.T) {
		_, _, err := r.Resolve("/dev/x")
		if err == nil || !strings.Contains(err.Error(), "tmpfs") || !strings.Contains(err.Error(), "/dev") {
			t.Errorf("error = %v, want it to name the tmpfs mount at /dev", err)
		}
	})
}

func TestSpecEnv(t *testing.T) {
	env := []string{"PATH=/bin", "A=1", "EMPTY=", "NOEQUALS", "PATH=/usr/bin:/bin", "X=a=b"}
	tests := []struct {
		key, want string
		ok        bool
	}{
		{"PATH", "/usr/bin:/bin", true}, // the last entry wins
		{"A", "1", true},
		{"EMPTY", "", true},
		{"X", "a=b", true},
		{"NOEQUALS", "", false},
		{"MISSING", "", false},
		{"PAT", "", false},
	}
	for _, tt := range tests {
		got, ok := Env(env, tt.key)
		if got != tt.want || ok != tt.ok {
			t.Errorf("Env(%q) = %q, %v; want %q, %v", tt.key, got, ok, tt.want, tt.ok)
		}
	}
	for _, tt := range []struct {
		kv, key string
		ok      bool
	}{{"A=1", "A", true}, {"A=", "A", true}, {"=x", "", true}, {"A", "A", false}} {
		if k, ok := EnvKey(tt.kv); k != tt.key || ok != tt.ok {
			t.Errorf("EnvKey(%q) = %q, %v; want %q, %v", tt.kv, k, ok, tt.key, tt.ok)
		}
	}
}

func TestReadWriteSpec(t *testing.T) {
	dir := t.TempDir()
	s := &specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: "rootfs"},
		Process: &specs.Process{Args: []string{"/m.wasm", "a"}, Env: []string{"A=1"}, Cwd: "/w"},
	}
	if err := WriteSpec(dir, s); err != nil {
		t.Fatal(err)
	}
	got, err := ReadSpec(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.Root.Path != "rootfs" || strings.Join(got.Process.Args, " ") != "/m.wasm a" || got.Process.Cwd != "/w" {
		t.Errorf("ReadSpec = %+v, want what was written", got)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("bundle holds %d entries after WriteSpec, want only %s", len(entries), SpecFile)
	}

	for name, body := range map[string]string{
		"no args":  `{"root":{"path":"rootfs"},"process":{"args":[],"cwd":"/"}}`,
		"no root":  `{"process":{"args":["/a"],"cwd":"/"}}`,
		"invalid":  `{"process":`,
		"no proc":  `{"root":{"path":"rootfs"}}`,
		"no path":  `{"root":{"path":""},"process":{"args":["/a"],"cwd":"/"}}`,
		"no file?": "",
	} {
		t.Run(name, func(t *testing.T) {
			d := t.TempDir()
			if name != "no file?" {
				if err := os.WriteFile(filepath.Join(d, SpecFile), []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if s, err := ReadSpec(d); err == nil {
				t.Errorf("ReadSpec = %+v, want an error", s)
			}
		})
	}
}

// TestResolveBindSourceSymlink binds a host path that is a symlink: runc
// mounts what the link points to on the host, so the mount point is a
// directory in the container, not a link to resolve in the container's view.
func TestResolveBindSourceSymlink(t *testing.T) {
	b := newOCIBundle(t)
	host := t.TempDir()
	writeHostFile(t, filepath.Join(host, "real", "m.wasm"), wasmBytes, 0o644)
	if err := os.Symlink(filepath.Join(host, "real"), filepath.Join(host, "link")); err != nil {
		t.Fatal(err)
	}
	b.spec.Mounts = []specs.Mount{{Destination: "/data", Type: "bind", Source: filepath.Join(host, "link"), Options: []string{"rbind"}}}
	resolved, h, err := NewResolver(b.dir, b.spec).Resolve("/data/m.wasm")
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	if resolved != "/data/m.wasm" {
		t.Errorf("resolved = %q, want /data/m.wasm", resolved)
	}
	if real, err := filepath.EvalSymlinks(h); err != nil || real != filepath.Join(host, "real", "m.wasm") {
		t.Errorf("host = %q (%q, %v), want the module under the bind source", h, real, err)
	}
}

// TestResolveBindUnderTmpfs binds a directory below a tmpfs mount point, as
// `--tmpfs /tmp --mount type=bind,dst=/tmp/app` does: the tmpfs is empty,
// but the path to the bind mount exists once the container starts.
func TestResolveBindUnderTmpfs(t *testing.T) {
	b := newOCIBundle(t)
	vol := t.TempDir()
	writeHostFile(t, filepath.Join(vol, "m.wasm"), wasmBytes, 0o644)
	b.spec.Mounts = []specs.Mount{
		{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs"},
		{Destination: "/tmp/app", Type: "bind", Source: vol, Options: []string{"rbind"}},
	}
	resolved, h, err := NewResolver(b.dir, b.spec).Resolve("/tmp/app/m.wasm")
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	if resolved != "/tmp/app/m.wasm" || h != filepath.Join(vol, "m.wasm") {
		t.Errorf("Resolve = %q, %q; want /tmp/app/m.wasm, %q", resolved, h, filepath.Join(vol, "m.wasm"))
	}
	if _, _, err := NewResolver(b.dir, b.spec).Resolve("/tmp/other"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Resolve(/tmp/other) error = %v, want ErrNotExist", err)
	}
}
