package oci

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/pathwalk"
	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/wasmmod"
)

// Kind says how a container's entrypoint runs.
type Kind int

const (
	// Native is an ELF binary or a "#!" script: runc runs it as it is.
	Native Kind = iota + 1
	// Wasm is a WebAssembly module: the runner runs it in wazero.
	Wasm
)

func (k Kind) String() string {
	switch k {
	case Native:
		return "native"
	case Wasm:
		return "wasm"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// DefaultStartFunc is the function a WASI command exports as its entry.
const DefaultStartFunc = "_start"

var (
	wasmMagic = []byte{0x00, 'a', 's', 'm'}
	elfMagic  = []byte{0x7f, 'E', 'L', 'F'}
)

// ErrBadEntrypoint marks every error that Detect returns because of the
// entrypoint itself (as opposed to a failure to read the bundle).
var ErrBadEntrypoint = errors.New("bad entrypoint")

// ErrNotInRootfs marks a Detect error saying that the entrypoint is no file
// of the container's root: the module of a Wasm image may be in a layer of
// its own instead (see image.ModuleLayer).
var ErrNotInRootfs = errors.New("not in the container's root")

// Entrypoint is a container's process.args[0], resolved in its root.
type Entrypoint struct {
	// Arg0 is process.args[0] without the "#func" suffix.
	Arg0 string
	// Path is the resolved container path: absolute, with no symlinks.
	Path string
	// HostPath is where the shim can read the same file.
	HostPath string
	// Func is the exported function to call; DefaultStartFunc unless
	// process.args[0] ends with "#func".
	Func string
	Kind Kind
	Size int64
	// SHA256 is the module's SHA-256 in hex when whoever made the
	// Entrypoint has verified it already; empty otherwise.
	SHA256 string
	// Layer, for a module that is no file of the root but a layer of the
	// container's image, is the layer's digest; Path is then where the
	// module is mounted for the runner.
	Layer string
}

// Name is how messages name the module: its path, or its image layer.
func (e *Entrypoint) Name() string {
	if e.Layer != "" {
		return "image layer " + e.Layer
	}
	return e.Path
}

// SplitFunc splits "path#func" into path and func. Without a suffix, func is
// empty.
func SplitFunc(arg0 string) (string, string) {
	if i := strings.LastIndexByte(arg0, '#'); i >= 0 {
		return arg0[:i], arg0[i+1:]
	}
	return arg0, ""
}

// Detect resolves process.args[0] of the spec inside the container's root,
// the way runc would (a bare name is looked up on the PATH of process.env,
// a relative one from process.cwd), and tells a Wasm module from a native
// program by its first bytes. Every error names the entrypoint and the reason
// and wraps ErrBadEntrypoint.
func Detect(bundle string, s *specs.Spec) (*Entrypoint, error) {
	arg0, fn := SplitFunc(s.Process.Args[0])
	r := NewResolver(bundle, s)
	e := &Entrypoint{Arg0: arg0, Func: fn}
	bad := func(format string, a ...any) error {
		return fmt.Errorf("entrypoint %q: %s: %w", s.Process.Args[0], fmt.Sprintf(format, a...), ErrBadEntrypoint)
	}
	notFound := func(format string, a ...any) error {
		return &notInRootfs{bad(format, a...)}
	}
	if arg0 == "" {
		return nil, bad("empty path")
	}
	if strings.Contains(s.Process.Args[0], "#") && fn == "" {
		return nil, bad("empty function name after '#'")
	}

	var head []byte
	var fi fs.FileInfo
	var err error
	if strings.Contains(arg0, "/") {
		e.Path, e.HostPath, err = r.ResolveFrom(s.Process.Cwd, arg0)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, notFound("no such file in the container (%v)", err)
			}
			return nil, bad("%v", err)
		}
		fi, head, err = inspect(e.HostPath)
		if err != nil {
			return nil, bad("%v", err)
		}
		if !fi.Mode().IsRegular() {
			return nil, bad("%s is a %s, not a regular file", e.Path, describeMode(fi.Mode()))
		}
		if pathwalk.HasTrailingSlash(arg0) {
			// "file/" is ENOTDIR to the kernel, which runc's exec of it
			// would get.
			return nil, bad("%s is not a directory, but the path ends in a slash", e.Path)
		}
	} else {
		e.Path, e.HostPath, fi, head, err = lookPath(r, arg0, s.Process.Env)
		if err != nil {
			return nil, notFound("%v", err)
		}
	}
	e.Size = fi.Size()

	switch {
	case bytes.HasPrefix(head, wasmMagic):
		e.Kind = Wasm
		if e.Func == "" {
			e.Func = DefaultStartFunc
		}
		if e.Size > wasmmod.MaxSize {
			return nil, bad("module is %d bytes, more than the %d a module may have", e.Size, wasmmod.MaxSize)
		}
		if v, ok := wasmmod.IsComponent(head); ok {
			return nil, bad("%s is a WebAssembly component (component binary version %d): %v", e.Path, v, wasmmod.ErrComponent)
		}
	case bytes.HasPrefix(head, elfMagic), bytes.HasPrefix(head, []byte("#!")):
		e.Kind = Native
		if e.Func != "" {
			return nil, bad("%s is a native program: only a Wasm module can name an entry function", e.Path)
		}
		if fi.Mode()&0o111 == 0 {
			return nil, bad("%s is a native program but is not executable (mode %04o)", e.Path, fi.Mode().Perm())
		}
	default:
		return nil, bad("%s is neither a WebAssembly module nor a native executable (it starts with %q)", e.Path, head[:min(len(head), 4)])
	}
	return e, nil
}

// lookPath searches PATH from the process environment, as runc's exec does.
func lookPath(r *Resolver, name string, env []string) (string, string, fs.FileInfo, []byte, error) {
	pathEnv, _ := Env(env, "PATH")
	for _, dir := range filepath.SplitList(pathEnv) {
		if !path.IsAbs(dir) {
			continue // as Go's exec.LookPath, never run a relative PATH entry
		}
		p, h, err := r.Resolve(path.Join(dir, name))
		if err != nil {
			continue
		}
		fi, head, err := inspect(h)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if bytes.HasPrefix(head, wasmMagic) || fi.Mode()&0o111 != 0 {
			return p, h, fi, head, nil
		}
	}
	return "", "", nil, nil, fmt.Errorf("not found in PATH %q of process.env", pathEnv)
}

// inspect stats a host file and reads its first bytes without blocking on a
// FIFO or following a final symlink.
func inspect(host string) (fs.FileInfo, []byte, error) {
	fi, err := os.Lstat(host)
	if err != nil {
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		return fi, nil, nil
	}
	f, err := os.OpenFile(host, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	head := make([]byte, wasmmod.HeaderSize)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, nil, err
	}
	return fi, head[:n], nil
}

func describeMode(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m&fs.ModeNamedPipe != 0:
		return "FIFO"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeDevice != 0:
		return "device"
	case m&fs.ModeSymlink != 0:
		return "symlink"
	}
	return "special file"
}

// notInRootfs is a Detect error that is also ErrNotInRootfs, without
// adding it to the message.
type notInRootfs struct{ error }

func (e *notInRootfs) Unwrap() error        { return e.error }
func (e *notInRootfs) Is(target error) bool { return target == ErrNotInRootfs }
