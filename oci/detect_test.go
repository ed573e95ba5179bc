package oci

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// makeBundle lays out a bundle with a rootfs holding files (path -> content;
// a content starting with "->" is a symlink) and returns its dir and spec.
func makeBundle(t *testing.T, files map[string]string, modes map[string]os.FileMode) (string, *specs.Spec) {
	t.Helper()
	dir := t.TempDir()
	root := filepath.Join(dir, "rootfs")
	for p, content := range files {
		host := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(host), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case strings.HasPrefix(content, "->"):
			err = os.Symlink(strings.TrimPrefix(content, "->"), host)
		case content == "<dir>":
			err = os.Mkdir(host, 0o755)
		case content == "<fifo>":
			err = syscall.Mkfifo(host, 0o644)
		default:
			mode := os.FileMode(0o644)
			if m, ok := modes[p]; ok {
				mode = m
			}
			err = os.WriteFile(host, []byte(content), mode)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return dir, &specs.Spec{
		Root:    &specs.Root{Path: "rootfs"},
		Process: &specs.Process{Cwd: "/", Env: []string{"PATH=/usr/bin:/bin"}},
		Mounts:  []specs.Mount{{Destination: "/dev", Type: "tmpfs", Source: "tmpfs"}},
	}
}

const (
	wasm = "\x00asm\x01\x00\x00\x00"
	elf  = "\x7fELF\x02\x01\x01"
)

func TestDetect(t *testing.T) {
	files := map[string]string{
		"/app.wasm":        wasm,
		"/bin/native":      elf,
		"/bin/script":      "#!/bin/sh\necho hi\n",
		"/bin/noexec":      elf,
		"/usr/bin/tool":    wasm, // a module on PATH runs whatever its mode
		"/bin/tool":        elf,  // shadowed by /usr/bin/tool, first on PATH
		"/text.txt":        "hello",
		"/dir":             "<dir>",
		"/fifo":            "<fifo>",
		"/abs-link.wasm":   "->/app.wasm",
		"/rel-link.wasm":   "->../../app.wasm",
		"/escape.wasm":     "->../../../../../../etc/passwd",
		"/loop.wasm":       "->/loop.wasm",
		"/work/local.wasm": wasm,
		"/lib/modules/mod": "->/app.wasm",
		"/linkdir":         "->/work",
	}
	modes := map[string]os.FileMode{"/bin/native": 0o755, "/bin/script": 0o755, "/bin/tool": 0o755}
	tests := []struct {
		arg0, cwd string
		env       []string
		wantPath  string
		wantKind  Kind
		wantFunc  string
		wantErr   string
	}{
		{arg0: "/app.wasm", wantPath: "/app.wasm", wantKind: Wasm, wantFunc: "_start"},
		{arg0: "/app.wasm#run", wantPath: "/app.wasm", wantKind: Wasm, wantFunc: "run"},
		{arg0: "/bin/native", wantPath: "/bin/native", wantKind: Native},
		{arg0: "/bin/script", wantPath: "/bin/script", wantKind: Native},
		{arg0: "tool", wantPath: "/usr/bin/tool", wantKind: Wasm, wantFunc: "_start"},
		{arg0: "native", wantPath: "/bin/native", wantKind: Native},
		{arg0: "/abs-link.wasm", wantPath: "/app.wasm", wantKind: Wasm, wantFunc: "_start"},
		{arg0: "/rel-link.wasm", wantPath: "/app.wasm", wantKind: Wasm, wantFunc: "_start"},
		{arg0: "/lib/modules/mod", wantPath: "/app.wasm", wantKind: Wasm, wantFunc: "_start"},
		{arg0: "local.wasm#f", cwd: "/work", env: []string{}, wantErr: "not found in PATH"},
		{arg0: "./local.wasm", cwd: "/work", wantPath: "/work/local.wasm", wantKind: Wasm, wantFunc: "_start"},
		{arg0: "../app.wasm", cwd: "/work", wantPath: "/app.wasm", wantKind: Wasm, wantFunc: "_start"},
		{arg0: "/linkdir/../app.wasm", wantPath: "/app.wasm", wantKind: Wasm, wantFunc: "_start"},
		{arg0: "/escape.wasm", wantErr: "no such file"},
		{arg0: "/loop.wasm", wantErr: "too many levels of symbolic links"},
		{arg0: "/missing.wasm", wantErr: "no such file"},
		{arg0: "missing", wantErr: "not found in PATH"},
		{arg0: "tool", env: []string{"HOME=/"}, wantErr: "not found in PATH"},
		{arg0: "/text.txt", wantErr: "neither a WebAssembly module nor a native executable"},
		{arg0: "/dir", wantErr: "directory, not a regular file"},
		{arg0: "/fifo", wantErr: "FIFO, not a regular file"},
		{arg0: "/bin/noexec", wantErr: "not executable"},
		{arg0: "/bin/native#main", wantErr: "only a Wasm module can name an entry function"},
		{arg0: "/app.wasm#", wantErr: "empty function name"},
		{arg0: "/dev/null", wantErr: "tmpfs mount"},
	}
	dir, base := makeBundle(t, files, modes)
	for _, tt := range tests {
		t.Run(tt.arg0, func(t *testing.T) {
			s := *base
			p := *base.Process
			s.Process = &p
			p.Args = []string{tt.arg0, "x"}
			if tt.cwd != "" {
				p.Cwd = tt.cwd
			}
			if tt.env != nil {
				p.Env = tt.env
			}
			ep, err := Detect(dir, &s)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("Detect = %+v, want error %q", ep, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), tt.arg0) {
					t.Errorf("error %q, want it to name %q and say %q", err, tt.arg0, tt.wantErr)
				}
				if !errors.Is(err, ErrBadEntrypoint) {
					t.Errorf("error %q does not wrap ErrBadEntrypoint", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Detect: %v", err)
			}
			if ep.Path != tt.wantPath || ep.Kind != tt.wantKind || ep.Func != tt.wantFunc {
				t.Errorf("got path %q kind %v func %q, want %q %v %q", ep.Path, ep.Kind, ep.Func, tt.wantPath, tt.wantKind, tt.wantFunc)
			}
			if want := filepath.Join(dir, "rootfs", tt.wantPath); ep.HostPath != want {
				t.Errorf("host path %q, want %q", ep.HostPath, want)
			}
		})
	}
}

// TestResolveBindMount: a path under a bind mount is read from the mount's
// source, and symlinks there still resolve inside the container.
func TestResolveBindMount(t *testing.T) {
	dir, s := makeBundle(t, map[string]string{"/app.wasm": wasm}, nil)
	vol := t.TempDir()
	if err := os.WriteFile(filepath.Join(vol, "mod.wasm"), []byte(wasm), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/app.wasm", filepath.Join(vol, "back.wasm")); err != nil {
		t.Fatal(err)
	}
	s.Mounts = append(s.Mounts, specs.Mount{Destination: "/data", Source: vol, Options: []string{"rbind", "ro"}})
	r := NewResolver(dir, s)
	tests := []struct{ in, wantPath, wantHost string }{
		{"/data/mod.wasm", "/data/mod.wasm", filepath.Join(vol, "mod.wasm")},
		{"/data/back.wasm", "/app.wasm", filepath.Join(dir, "rootfs", "app.wasm")},
		{"/data/../app.wasm", "/app.wasm", filepath.Join(dir, "rootfs", "app.wasm")},
	}
	for _, tt := range tests {
		p, h, err := r.Resolve(tt.in)
		if err != nil || p != tt.wantPath || h != tt.wantHost {
			t.Errorf("Resolve(%q) = %q, %q, %v; want %q, %q", tt.in, p, h, err, tt.wantPath, tt.wantHost)
		}
	}
}
