package oci

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/wasmmod"
)

const (
	wasmBytes   = "\x00asm\x01\x00\x00\x00"
	elfBytes    = "\x7fELF\x02\x01\x01\x00rest of an ELF header"
	scriptBytes = "#!/bin/sh\necho hi\n"
	textBytes   = "hello, world\n"
)

// detectArgs sets args[0] and returns what Detect says of it.
func detectArgs(b *ociBundle, arg0 string) (*Entrypoint, error) {
	s := *b.spec
	p := *s.Process
	p.Args = []string{arg0, "arg1"}
	s.Process = &p
	return Detect(b.dir, &s)
}

// checkBadEntrypoint checks what every Detect error must be.
func checkBadEntrypoint(t *testing.T, arg0 string, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("Detect(%q) succeeded, want an error mentioning %q", arg0, want)
	}
	if !errors.Is(err, ErrBadEntrypoint) {
		t.Errorf("Detect(%q) error %v does not wrap ErrBadEntrypoint", arg0, err)
	}
	if !strings.Contains(err.Error(), arg0) {
		t.Errorf("Detect(%q) error %q does not name the entrypoint", arg0, err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("Detect(%q) error %q does not mention %q", arg0, err, want)
	}
}

func TestEntrypointKind(t *testing.T) {
	b := newOCIBundle(t)
	b.file("/m.wasm", wasmBytes, 0o644)
	b.file("/m-exec.wasm", wasmBytes, 0o755)
	b.file("/magic-only", "\x00asm", 0o600) // just the magic is enough to be taken for Wasm
	b.file("/elf", elfBytes, 0o755)
	b.file("/elf-user-x", elfBytes, 0o700)
	b.file("/elf-other-x", elfBytes, 0o601)
	b.file("/script", scriptBytes, 0o755)
	b.file("/shebang-only", "#!", 0o755)
	b.symlink("/link.wasm", "m.wasm")
	b.symlink("/bin/elf", "/elf")
	tests := []struct {
		arg0     string
		kind     Kind
		path     string
		fn, want string
	}{
		{"/m.wasm", Wasm, "/m.wasm", DefaultStartFunc, ""},
		{"/m-exec.wasm", Wasm, "/m-exec.wasm", DefaultStartFunc, ""},
		{"/magic-only", Wasm, "/magic-only", DefaultStartFunc, ""},
		{"/elf", Native, "/elf", "", ""},
		{"/elf-user-x", Native, "/elf-user-x", "", ""},
		{"/elf-other-x", Native, "/elf-other-x", "", ""},
		{"/script", Native, "/script", "", ""},
		{"/shebang-only", Native, "/shebang-only", "", ""},
		{"/link.wasm", Wasm, "/m.wasm", DefaultStartFunc, ""},
		{"/bin/elf", Native, "/elf", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.arg0, func(t *testing.T) {
			e, err := detectArgs(b, tt.arg0)
			if err != nil {
				t.Fatalf("Detect: %v", err)
			}
			if e.Kind != tt.kind || e.Path != tt.path || e.Func != tt.fn || e.Arg0 != tt.arg0 {
				t.Errorf("Detect(%q) = kind %v, path %q, func %q, arg0 %q; want %v, %q, %q, %q",
					tt.arg0, e.Kind, e.Path, e.Func, e.Arg0, tt.kind, tt.path, tt.fn, tt.arg0)
			}
			if e.HostPath != b.host(tt.path) {
				t.Errorf("HostPath = %q, want %q", e.HostPath, b.host(tt.path))
			}
			fi, err := os.Stat(e.HostPath)
			if err != nil {
				t.Fatal(err)
			}
			if e.Size != fi.Size() {
				t.Errorf("Size = %d, want %d", e.Size, fi.Size())
			}
		})
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{Native: "native", Wasm: "wasm", 0: "Kind(0)", 7: "Kind(7)"} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d).String() = %q, want %q", int(k), got, want)
		}
	}
}

func TestEntrypointErrors(t *testing.T) {
	b := newOCIBundle(t)
	b.file("/elf-0644", elfBytes, 0o644)
	b.file("/script-0644", scriptBytes, 0o644)
	b.file("/text", textBytes, 0o755)
	b.file("/empty", "", 0o755)
	b.file("/short", "\x00a", 0o755)
	b.file("/elf", elfBytes, 0o755)
	b.file("/m.wasm", wasmBytes, 0o644)
	b.file("/component.wasm", "\x00asm\x0d\x00\x01\x00rest of a component", 0o644)
	b.dirAt("/dir")
	if err := syscall.Mkfifo(b.host("/fifo"), 0o755); err != nil {
		t.Fatal(err)
	}
	b.symlink("/fifo-link", "fifo")
	b.symlink("/loop", "loop")
	b.symlink("/dangling", "/nowhere")
	b.symlink("/escape", "../../../../"+filepath.Base(b.dir)+"/outside")
	writeHostFile(t, filepath.Join(b.dir, "outside"), wasmBytes, 0o755)
	b.file("/dev/m.wasm", wasmBytes, 0o644) // hidden by the tmpfs on /dev
	b.spec.Mounts = []specs.Mount{{Destination: "/dev", Type: "tmpfs", Source: "tmpfs"}}

	tests := []struct {
		arg0, want string
	}{
		{"/elf-0644", "not executable"},
		{"/script-0644", "not executable"},
		{"/text", "neither a WebAssembly module nor a native executable"},
		{"/empty", "neither a WebAssembly module nor a native executable"},
		{"/short", "neither a WebAssembly module nor a native executable"},
		{"/component.wasm", "WASI preview 2 components are not supported"},
		{"/dir", "directory"},
		{"/fifo", "FIFO"},
		{"/fifo-link", "FIFO"},
		{"/missing", "no such file"},
		{"/dangling", "no such file"},
		{"/escape", "no such file"},
		{"/dev/m.wasm", "no such file"},
		{"/loop", "too many levels of symbolic links"},
		{"/elf#main", "native program"},
		{"/m.wasm#", "empty function name"},
		{"/elf#", "empty function name"},
		{"#main", "empty path"},
		{"", "empty path"},
		{"/m.wasm/x", "not a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.arg0, func(t *testing.T) {
			e, err := detectArgs(b, tt.arg0)
			if err == nil {
				t.Fatalf("Detect(%q) = %+v, want an error", tt.arg0, e)
			}
			checkBadEntrypoint(t, tt.arg0, err, tt.want)
		})
	}
}

// TestEntrypointTooLarge makes a sparse module of more than wasmmod.MaxSize
// bytes: Detect refuses it without reading it.
func TestEntrypointTooLarge(t *testing.T) {
	b := newOCIBundle(t)
	for name, size := range map[string]int64{"/big.wasm": wasmmod.MaxSize + 1, "/max.wasm": wasmmod.MaxSize} {
		b.file(name, wasmBytes, 0o644)
		if err := os.Truncate(b.host(name), size); err != nil {
			t.Fatal(err)
		}
	}
	_, err := detectArgs(b, "/big.wasm")
	checkBadEntrypoint(t, "/big.wasm", err, "more than")
	e, err := detectArgs(b, "/max.wasm")
	if err != nil {
		t.Fatalf("Detect of a module of wasmmod.MaxSize bytes: %v", err)
	}
	if e.Size != wasmmod.MaxSize {
		t.Errorf("Size = %d, want %d", e.Size, wasmmod.MaxSize)
	}
}

func TestEntrypointPATH(t *testing.T) {
	tests := []struct {
		name  string
		setup func(b *ociBundle)
		env   []string
		arg0  string
		path  string // "" for an error
		kind  Kind
		fn    string
	}{
		{
			name: "first match wins",
			setup: func(b *ociBundle) {
				b.file("/usr/bin/app", wasmBytes, 0o755)
				b.file("/bin/app", elfBytes, 0o755)
			},
			env:  []string{"PATH=/usr/local/bin:/usr/bin:/bin"},
			arg0: "app", path: "/usr/bin/app", kind: Wasm, fn: DefaultStartFunc,
		},
		{
			name: "order of PATH, not of the file system",
			setup: func(b *ociBundle) {
				b.file("/usr/bin/app", wasmBytes, 0o755)
				b.file("/bin/app", elfBytes, 0o755)
			},
			env:  []string{"PATH=/bin:/usr/bin"},
			arg0: "app", path: "/bin/app", kind: Native,
		},
		{
			name: "non-executable native file skipped",
			setup: func(b *ociBundle) {
				b.file("/usr/local/bin/app", elfBytes, 0o644)
				b.file("/usr/bin/app", scriptBytes, 0o755)
			},
			env:  []string{"PATH=/usr/local/bin:/usr/bin:/bin"},
			arg0: "app", path: "/usr/bin/app", kind: Native,
		},
		{
			name:  "wasm found regardless of mode bits",
			setup: func(b *ociBundle) { b.file("/usr/bin/app", wasmBytes, 0o600) },
			env:   []string{"PATH=/usr/local/bin:/usr/bin:/bin"},
			arg0:  "app", path: "/usr/bin/app", kind: Wasm, fn: DefaultStartFunc,
		},
		{
			name:  "wasm with mode 0",
			setup: func(b *ociBundle) { b.file("/bin/app", wasmBytes, 0) },
			env:   []string{"PATH=/bin"},
			arg0:  "app", path: "/bin/app", kind: Wasm, fn: DefaultStartFunc,
		},
		{
			name: "directories and FIFOs skipped",
			setup: func(b *ociBundle) {
				b.dirAt("/usr/local/bin/app")
				if err := os.MkdirAll(b.host("/usr/bin"), 0o755); err != nil {
					b.t.Fatal(err)
				}
				if err := syscall.Mkfifo(b.host("/usr/bin/app"), 0o777); err != nil {
					b.t.Fatal(err)
				}
				b.file("/bin/app", wasmBytes, 0o644)
			},
			env:  []string{"PATH=/usr/local/bin:/usr/bin:/bin"},
			arg0: "app", path: "/bin/app", kind: Wasm, fn: DefaultStartFunc,
		},
		{
			name: "relative PATH entries ignored",
			setup: func(b *ociBundle) {
				b.file("/bin/app", wasmBytes, 0o755)
				b.file("/work/bin/app", wasmBytes, 0o755)
			},
			env:  []string{"PATH=bin:./bin:.:work/bin"},
			arg0: "app",
		},
		{
			name: "relative entry skipped, absolute one used",
			setup: func(b *ociBundle) {
				b.file("/bin/app", elfBytes, 0o755)
				b.file("/usr/bin/app", wasmBytes, 0o755)
			},
			env:  []string{"PATH=bin:/usr/bin"},
			arg0: "app", path: "/usr/bin/app", kind: Wasm, fn: DefaultStartFunc,
		},
		{
			name:  "no PATH",
			setup: func(b *ociBundle) { b.file("/bin/app", wasmBytes, 0o755) },
			env:   []string{"HOME=/root"},
			arg0:  "app",
		},
		{
			name:  "empty PATH",
			setup: func(b *ociBundle) { b.file("/bin/app", wasmBytes, 0o755) },
			env:   []string{"PATH="},
			arg0:  "app",
		},
		{
			name:  "only a non-executable native file",
			setup: func(b *ociBundle) { b.file("/bin/app", elfBytes, 0o644) },
			env:   []string{"PATH=/bin"},
			arg0:  "app",
		},
		{
			name:  "last PATH in env wins",
			setup: func(b *ociBundle) { b.file("/opt/bin/app", wasmBytes, 0o644); b.file("/bin/app", elfBytes, 0o755) },
			env:   []string{"PATH=/bin", "PATH=/opt/bin"},
			arg0:  "app", path: "/opt/bin/app", kind: Wasm, fn: DefaultStartFunc,
		},
		{
			name: "symlink on PATH resolved in the rootfs",
			setup: func(b *ociBundle) {
				b.file("/opt/app/app.wasm", wasmBytes, 0o644)
				b.symlink("/usr/bin/app", "/opt/app/app.wasm")
			},
			env:  []string{"PATH=/usr/bin"},
			arg0: "app", path: "/opt/app/app.wasm", kind: Wasm, fn: DefaultStartFunc,
		},
		{
			name:  "PATH entry through a symlinked directory",
			setup: func(b *ociBundle) { b.file("/usr/bin/app", wasmBytes, 0o644); b.symlink("/bin", "usr/bin") },
			env:   []string{"PATH=/bin"},
			arg0:  "app", path: "/usr/bin/app", kind: Wasm, fn: DefaultStartFunc,
		},
		{
			name:  "func suffix on a bare name",
			setup: func(b *ociBundle) { b.file("/bin/app", wasmBytes, 0o644) },
			env:   []string{"PATH=/bin"},
			arg0:  "app#run", path: "/bin/app", kind: Wasm, fn: "run",
		},
		{
			name: "PATH entry under a tmpfs mount skipped",
			setup: func(b *ociBundle) {
				b.file("/dev/bin/app", elfBytes, 0o755)
				b.file("/bin/app", wasmBytes, 0o644)
				b.spec.Mounts = []specs.Mount{{Destination: "/dev", Type: "tmpfs", Source: "tmpfs"}}
			},
			env:  []string{"PATH=/dev/bin:/bin"},
			arg0: "app", path: "/bin/app", kind: Wasm, fn: DefaultStartFunc,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newOCIBundle(t)
			tt.setup(b)
			b.spec.Process.Env = tt.env
			e, err := detectArgs(b, tt.arg0)
			if tt.path == "" {
				if err == nil {
					t.Fatalf("Detect(%q) = %+v, want an error", tt.arg0, e)
				}
				checkBadEntrypoint(t, tt.arg0, err, "not found in PATH")
				return
			}
			if err != nil {
				t.Fatalf("Detect(%q): %v", tt.arg0, err)
			}
			if e.Path != tt.path || e.Kind != tt.kind || e.Func != tt.fn {
				t.Errorf("Detect(%q) = path %q, kind %v, func %q; want %q, %v, %q", tt.arg0, e.Path, e.Kind, e.Func, tt.path, tt.kind, tt.fn)
			}
			if e.HostPath != b.host(tt.path) {
				t.Errorf("HostPath = %q, want %q", e.HostPath, b.host(tt.path))
			}
		})
	}
}

func TestEntrypointCwd(t *testing.T) {
	b := newOCIBundle(t)
	b.file("/work/app.wasm", wasmBytes, 0o644)
	b.file("/work/sub/tool", elfBytes, 0o755)
	b.file("/app.wasm", wasmBytes, 0o644)
	b.file("/bin/app.wasm", wasmBytes, 0o644) // must not be found by a path with a slash
	b.symlink("/cwdlink", "work")
	tests := []struct {
		cwd, arg0, path string // path "" for an error
	}{
		{"/work", "./app.wasm", "/work/app.wasm"},
		{"/work", "sub/tool", "/work/sub/tool"},
		{"/work/sub", "../app.wasm", "/work/app.wasm"},
		{"/work/sub", "../../../../app.wasm", "/app.wasm"},
		{"/", "./app.wasm", "/app.wasm"},
		{"", "./app.wasm", "/app.wasm"},
		{"/cwdlink", "./app.wasm", "/work/app.wasm"},
		{"/work", "/app.wasm", "/app.wasm"}, // absolute: cwd does not matter
		{"/", "./bin/../work/app.wasm", "/work/app.wasm"},
		{"/work", "./missing.wasm", ""},
		{"/nowhere", "./app.wasm", ""},
	}
	for _, tt := range tests {
		t.Run(tt.cwd+" "+tt.arg0, func(t *testing.T) {
			b.spec.Process.Cwd = tt.cwd
			e, err := detectArgs(b, tt.arg0)
			if tt.path == "" {
				checkBadEntrypoint(t, tt.arg0, err, "no such file")
				return
			}
			if err != nil {
				t.Fatalf("Detect(%q) in %q: %v", tt.arg0, tt.cwd, err)
			}
			if e.Path != tt.path || e.Arg0 != tt.arg0 {
				t.Errorf("Detect(%q) in %q = path %q, arg0 %q; want %q, %q", tt.arg0, tt.cwd, e.Path, e.Arg0, tt.path, tt.arg0)
			}
		})
	}
}

func TestEntrypointFunc(t *testing.T) {
	b := newOCIBundle(t)
	b.file("/m.wasm", wasmBytes, 0o644)
	b.file("/dir#x/m.wasm", wasmBytes, 0o644)
	tests := []struct {
		arg0, path, fn string
	}{
		{"/m.wasm", "/m.wasm", "_start"},
		{"/m.wasm#main", "/m.wasm", "main"},
		{"/m.wasm#_initialize", "/m.wasm", "_initialize"},
		{"/m.wasm#with space", "/m.wasm", "with space"},
		{"/dir#x/m.wasm#f", "/dir#x/m.wasm", "f"}, // the last '#' splits
	}
	for _, tt := range tests {
		t.Run(tt.arg0, func(t *testing.T) {
			e, err := detectArgs(b, tt.arg0)
			if err != nil {
				t.Fatalf("Detect(%q): %v", tt.arg0, err)
			}
			if e.Path != tt.path || e.Func != tt.fn || e.Kind != Wasm {
				t.Errorf("Detect(%q) = path %q, func %q, kind %v; want %q, %q, wasm", tt.arg0, e.Path, e.Func, e.Kind, tt.path, tt.fn)
			}
			if wantArg0, _ := SplitFunc(tt.arg0); e.Arg0 != wantArg0 {
				t.Errorf("Arg0 = %q, want %q", e.Arg0, wantArg0)
			}
		})
	}
}

func TestEntrypointSplitFunc(t *testing.T) {
	tests := []struct {
		in, path, fn string
	}{
		{"/m.wasm", "/m.wasm", ""},
		{"/m.wasm#main", "/m.wasm", "main"},
		{"/m.wasm#", "/m.wasm", ""},
		{"#f", "", "f"},
		{"a#b#c", "a#b", "c"},
		{"", "", ""},
		{"app", "app", ""},
	}
	for _, tt := range tests {
		p, fn := SplitFunc(tt.in)
		if p != tt.path || fn != tt.fn {
			t.Errorf("SplitFunc(%q) = %q, %q; want %q, %q", tt.in, p, fn, tt.path, tt.fn)
		}
	}
}

// TestEntrypointFIFONoBlock checks that Detect returns for a FIFO that no
// one writes to, named directly, through a link and on PATH: opening it for
// reading would block.
func TestEntrypointFIFONoBlock(t *testing.T) {
	b := newOCIBundle(t)
	if err := os.MkdirAll(b.host("/bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/pipe", "/bin/pipe"} {
		if err := syscall.Mkfifo(b.host(p), 0o777); err != nil {
			t.Fatal(err)
		}
	}
	b.symlink("/pipe-link", "/pipe")
	b.spec.Process.Env = []string{"PATH=/bin"}
	for _, tt := range []struct{ arg0, want string }{
		{"/pipe", "FIFO"},
		{"/pipe-link", "FIFO"},
		{"pipe", "not found in PATH"},
	} {
		t.Run(tt.arg0, func(t *testing.T) {
			done := make(chan error, 1)
			go func() {
				_, err := detectArgs(b, tt.arg0)
				done <- err
			}()
			select {
			case err := <-done:
				checkBadEntrypoint(t, tt.arg0, err, tt.want)
			case <-time.After(5 * time.Second):
				// Unblock the goroutine so that the test binary can end.
				if f, err := os.OpenFile(b.host("/pipe"), os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
					f.Close()
				}
				if f, err := os.OpenFile(b.host("/bin/pipe"), os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
					f.Close()
				}
				t.Fatalf("Detect(%q) blocked on a FIFO", tt.arg0)
			}
		})
	}
}

// TestEntrypointDotDotAfterSymlink: a relative process.args[0] resolves from
// process.cwd as the kernel resolves it, following a symlink before the
// ".." after it (path.Join used to drop "link/.." unresolved, so that Detect
// found another file than the one runc runs), and runc creates a missing
// cwd before it starts the process.
func TestEntrypointDotDotAfterSymlink(t *testing.T) {
	b := newOCIBundle(t)
	b.file("/app.wasm", wasmBytes, 0o644)
	b.file("/work/app.wasm", elfBytes, 0o755)
	b.file("/opt/app.wasm", wasmBytes, 0o644)
	b.dirAt("/tmp")
	b.dirAt("/opt/sub")
	b.symlink("/work/l", "/tmp")
	b.symlink("/cwdlink", "opt/sub")
	b.symlink("/dangling", "/nowhere")
	tests := []struct {
		cwd, arg0 string
		path      string // "" for an error
		want      string // in the error
	}{
		{cwd: "/work", arg0: "l/../app.wasm", path: "/app.wasm"},
		{cwd: "/work", arg0: "./l/../work/app.wasm", path: "/work/app.wasm"},
		{cwd: "/work", arg0: "l/../../../app.wasm", path: "/app.wasm"},
		{cwd: "/cwdlink/..", arg0: "./app.wasm", path: "/opt/app.wasm"},
		{cwd: "/work/l/../opt", arg0: "./app.wasm", path: "/opt/app.wasm"},
		{cwd: "/work/", arg0: "./app.wasm", path: "/work/app.wasm"},
		{cwd: "//work//.", arg0: "./app.wasm", path: "/work/app.wasm"},
		// runc makes a missing cwd, and its missing parents.
		{cwd: "/missing", arg0: "../app.wasm", path: "/app.wasm"},
		{cwd: "/missing/deeper", arg0: "../../work/app.wasm", path: "/work/app.wasm"},
		{cwd: "/missing/deeper", arg0: "../../missing/deeper/../../app.wasm", path: "/app.wasm"},
		{cwd: "/work/l/new", arg0: "../../opt/app.wasm", path: "/opt/app.wasm"},
		{cwd: "/missing", arg0: "./app.wasm", want: "no such file"},
		{cwd: "/missing", arg0: "../other/../app.wasm", want: "no such file"}, // only cwd's directories are made
		{cwd: "/work/app.wasm", arg0: "./x", want: "not a directory"},
		{cwd: "/work/app.wasm/sub", arg0: "../../app.wasm", want: "not a directory"},
		{cwd: "/work/l", arg0: "../app.wasm", path: "/app.wasm"},
	}
	for _, tt := range tests {
		t.Run(tt.cwd+" "+tt.arg0, func(t *testing.T) {
			b.spec.Process.Cwd = tt.cwd
			e, err := detectArgs(b, tt.arg0)
			if tt.path == "" {
				checkBadEntrypoint(t, tt.arg0, err, tt.want)
				return
			}
			if err != nil {
				t.Fatalf("Detect(%q) in %q: %v", tt.arg0, tt.cwd, err)
			}
			if e.Path != tt.path || e.HostPath != b.host(tt.path) {
				t.Errorf("Detect(%q) in %q = %q (%q), want %q", tt.arg0, tt.cwd, e.Path, e.HostPath, tt.path)
			}
		})
	}
	// Nothing was made in the rootfs.
	for _, p := range []string{"/missing", "/work/l/new", "/tmp/new"} {
		if _, err := os.Lstat(b.host(p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Lstat(%s) = %v, want it not to exist", p, err)
		}
	}
}

// TestEntrypointTrailingSlash: a path that ends in a slash names a
// directory; the kernel (and so runc) refuses it for a file with ENOTDIR,
// where Detect used to find the file.
func TestEntrypointTrailingSlash(t *testing.T) {
	b := newOCIBundle(t)
	b.file("/app.wasm", wasmBytes, 0o644)
	b.file("/elf", elfBytes, 0o755)
	b.symlink("/link.wasm", "app.wasm")
	b.dirAt("/dir")
	tests := []struct {
		cwd, arg0, want string
	}{
		{"/", "/app.wasm/", "not a directory"},
		{"/", "/app.wasm//", "not a directory"},
		{"/", "/app.wasm/.", "not a directory"},
		{"/", "/elf/", "not a directory"},
		{"/", "/link.wasm/", "not a directory"},
		{"/", "/app.wasm/#main", "not a directory"},
		{"/", "./app.wasm/", "not a directory"},
		{"/dir", "../app.wasm/", "not a directory"},
		{"/", "/dir/", "directory, not a regular file"},
		{"/", "/app.wasm/..", "not a directory"}, // the kernel looks up ".." in a file
	}
	for _, tt := range tests {
		t.Run(tt.arg0, func(t *testing.T) {
			b.spec.Process.Cwd = tt.cwd
			e, err := detectArgs(b, tt.arg0)
			if err == nil {
				t.Fatalf("Detect(%q) = %+v, want an error", tt.arg0, e)
			}
			checkBadEntrypoint(t, tt.arg0, err, tt.want)
		})
	}
}

// TestEntrypointNotInRootfs: only an entrypoint that is no file of the
// root is ErrNotInRootfs (the shim then looks for a Wasm layer).
func TestEntrypointNotInRootfs(t *testing.T) {
	b := newOCIBundle(t)
	b.file("/text", textBytes, 0o755)
	b.dirAt("/dir")
	b.symlink("/dangling", "/nowhere")
	tests := []struct {
		arg0 string
		want bool
	}{
		{"/missing.wasm", true},
		{"/dangling", true},
		{"bare-name", true},
		{"/text", false},
		{"/dir", false},
		{"", false},
	}
	for _, tt := range tests {
		_, err := detectArgs(b, tt.arg0)
		if err == nil || errors.Is(err, ErrNotInRootfs) != tt.want || !errors.Is(err, ErrBadEntrypoint) {
			t.Errorf("Detect(%q) = %v; ErrNotInRootfs %v, want %v", tt.arg0, err, errors.Is(err, ErrNotInRootfs), tt.want)
		}
	}
}
