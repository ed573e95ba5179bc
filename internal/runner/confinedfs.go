package runner

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"path/filepath"
	"strings"

	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/sys"
	"golang.org/x/sys/unix"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/pathwalk"
	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/wasmmod"
)

// ConfinedFS wraps the file system the guest sees. It resolves every path
// itself, component by component and following symlinks inside the root
// only, and refuses with EACCES as soon as a component is on the Denylist:
// so neither a symlink nor a procfs "magic link" (/proc/self/fd/N,
// /proc/self/root) can get round it. The operation then runs on the
// resolved path, and OpenFile checks the opened file once more.
// Reaching above the root ("../") is the kernel's business as well: the
// runner runs after pivot_root, so "/" is the container's root.
type ConfinedFS struct {
	experimentalsys.FS
	deny *Denylist
	// hostDir is the host directory inner serves, if known (see DirFS):
	// it lets the runner map the module instead of reading it.
	hostDir string
}

// NewConfinedFS confines inner with deny.
func NewConfinedFS(inner experimentalsys.FS, deny *Denylist) *ConfinedFS {
	return &ConfinedFS{FS: inner, deny: deny}
}

// resolve returns p (relative to the root) with every symlink resolved (the
// last component's only if follow), or EACCES if any component resolves to
// a denied file. Components that do not exist are kept as they are (the
// operation creates or reports them), and every component after them is
// checked all the same: "missing/../proc" is refused.
func (c *ConfinedFS) resolve(p string, follow bool) (string, experimentalsys.Errno) {
	r, err := pathwalk.Walk(walker{c}, "/"+p, follow)
	if err != nil {
		if errors.Is(err, pathwalk.ErrLoop) {
			return "", experimentalsys.ELOOP
		}
		var errno experimentalsys.Errno
		if errors.As(err, &errno) {
			return "", errno
		}
		return "", experimentalsys.EIO
	}
	r = relative(r)
	if pathwalk.HasTrailingSlash(p) && r != "." {
		r += "/" // "file/" must still fail with ENOTDIR, as the kernel says
	}
	return r, 0
}

// walker is the guest's file system as pathwalk sees it: every component
// is checked against the Denylist. Its errors are Errnos.
type walker struct{ c *ConfinedFS }

func (w walker) Lstat(p string) (pathwalk.Kind, error) {
	st, errno := w.c.FS.Lstat(relative(p))
	switch {
	case errno == experimentalsys.ENOENT:
		return pathwalk.Missing, nil
	case errno != 0:
		return 0, errno
	case w.c.deny.denied(st):
		return 0, experimentalsys.EACCES
	case st.Mode&fs.ModeSymlink != 0:
		return pathwalk.Symlink, nil
	}
	return pathwalk.Other, nil
}

func (w walker) Readlink(p string) (string, error) {
	target, errno := w.c.FS.Readlink(relative(p))
	if errno != 0 {
		return "", errno
	}
	return target, nil
}

// relative turns an absolute path (pathwalk's, or a Config's) into one the
// inner FS takes: relative to its root, "." for the root itself.
func relative(p string) string {
	if p = strings.TrimLeft(p, "/"); p == "" {
		return "."
	}
	return p
}

// mapFile maps the regular file p read-only into memory, resolved and
// checked as OpenFile does. It needs hostDir. Mapping rather than reading
// a module saves copying it and faulting in as many fresh pages. The
// mapping is never unmapped: wazero may keep slices of a module's bytes.
func (c *ConfinedFS) mapFile(p string) ([]byte, error) {
	if c.hostDir == "" {
		return nil, experimentalsys.ENOSYS
	}
	r, errno := c.resolve(relative(p), true)
	if errno != 0 {
		return nil, errno
	}
	fd, err := unix.Open(filepath.Join(c.hostDir, r), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	if c.deny.denied(sys.Stat_t{Dev: st.Dev, Ino: st.Ino}) {
		return nil, experimentalsys.EACCES
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("not a regular file")
	}
	if st.Size > wasmmod.MaxSize {
		return nil, fmt.Errorf("module is %d bytes, more than the %d a module may have", st.Size, wasmmod.MaxSize)
	}
	if st.Size == 0 {
		return []byte{}, nil
	}
	return unix.Mmap(fd, 0, int(st.Size), unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_POPULATE)
}

// stdioPath maps the paths by which a program opens its own stdio
// (/dev/stdout, /dev/fd/1, ...) to the runner's descriptor behind it,
// which is the guest's: in a container those paths are symlinks into
// procfs, which the guest may not reach, and a program writing to
// "/dev/stdout" would get EACCES where a native one writes its output. It
// reports false for any other path, /dev/fd/3 and up included.
func stdioPath(p string) (string, bool) {
	switch path.Clean("/" + p) {
	case "/dev/stdin", "/dev/fd/0":
		return "proc/self/fd/0", true
	case "/dev/stdout", "/dev/fd/1":
		return "proc/self/fd/1", true
	case "/dev/stderr", "/dev/fd/2":
		return "proc/self/fd/2", true
	}
	return "", false
}

// OpenFile implements experimentalsys.FS.
func (c *ConfinedFS) OpenFile(p string, flag experimentalsys.Oflag, perm fs.FileMode) (experimentalsys.File, experimentalsys.Errno) {
	if fd, ok := stdioPath(p); ok {
		return c.FS.OpenFile(fd, flag, perm) // opened again, as Linux does
	}
	r, errno := c.resolve(p, flag&experimentalsys.O_NOFOLLOW == 0)
	if errno != 0 {
		return nil, errno
	}
	f, errno := c.FS.OpenFile(r, flag, perm)
	if errno != 0 {
		return nil, errno
	}
	st, errno := f.Stat()
	if errno != 0 || c.deny.denied(st) {
		f.Close()
		if errno == 0 {
			errno = experimentalsys.EACCES
		}
		return nil, errno
	}
	return f, 0
}

// Lstat implements experimentalsys.FS.
func (c *ConfinedFS) Lstat(p string) (sys.Stat_t, experimentalsys.Errno) {
	r, errno := c.resolve(p, false)
	if errno != 0 {
		return sys.Stat_t{}, errno
	}
	return c.FS.Lstat(r)
}

// Stat implements experimentalsys.FS.
func (c *ConfinedFS) Stat(p string) (sys.Stat_t, experimentalsys.Errno) {
	if fd, ok := stdioPath(p); ok {
		return c.FS.Stat(fd)
	}
	r, errno := c.resolve(p, true)
	if errno != 0 {
		return sys.Stat_t{}, errno
	}
	st, errno := c.FS.Stat(r)
	if errno == 0 && c.deny.denied(st) {
		return sys.Stat_t{}, experimentalsys.EACCES
	}
	return st, errno
}

// Mkdir implements experimentalsys.FS.
func (c *ConfinedFS) Mkdir(p string, perm fs.FileMode) experimentalsys.Errno {
	r, errno := c.resolve(p, false)
	if errno != 0 {
		return errno
	}
	return c.FS.Mkdir(r, perm)
}

// Chmod implements experimentalsys.FS.
func (c *ConfinedFS) Chmod(p string, perm fs.FileMode) experimentalsys.Errno {
	r, errno := c.resolve(p, true)
	if errno != 0 {
		return errno
	}
	return c.FS.Chmod(r, perm)
}

// Rename implements experimentalsys.FS.
func (c *ConfinedFS) Rename(from, to string) experimentalsys.Errno {
	rf, errno := c.resolve(from, false)
	if errno != 0 {
		return errno
	}
	rt, errno := c.resolve(to, false)
	if errno != 0 {
		return errno
	}
	return c.FS.Rename(rf, rt)
}

// Rmdir implements experimentalsys.FS.
func (c *ConfinedFS) Rmdir(p string) experimentalsys.Errno {
	r, errno := c.resolve(p, false)
	if errno != 0 {
		return errno
	}
	return c.FS.Rmdir(r)
}

// Unlink implements experimentalsys.FS.
func (c *ConfinedFS) Unlink(p string) experimentalsys.Errno {
	r, errno := c.resolve(p, false)
	if errno != 0 {
		return errno
	}
	return c.FS.Unlink(r)
}

// Link implements experimentalsys.FS.
func (c *ConfinedFS) Link(oldPath, newPath string) experimentalsys.Errno {
	ro, errno := c.resolve(oldPath, false)
	if errno != 0 {
		return errno
	}
	rn, errno := c.resolve(newPath, false)
	if errno != 0 {
		return errno
	}
	return c.FS.Link(ro, rn)
}

// Symlink implements experimentalsys.FS. The link's target is not checked:
// whatever later resolves through the link is.
func (c *ConfinedFS) Symlink(oldPath, linkName string) experimentalsys.Errno {
	r, errno := c.resolve(linkName, false)
	if errno != 0 {
		return errno
	}
	return c.FS.Symlink(oldPath, r)
}

// Readlink implements experimentalsys.FS.
func (c *ConfinedFS) Readlink(p string) (string, experimentalsys.Errno) {
	r, errno := c.resolve(p, false)
	if errno != 0 {
		return "", errno
	}
	return c.FS.Readlink(r)
}

// Utimens implements experimentalsys.FS.
func (c *ConfinedFS) Utimens(p string, atim, mtim int64) experimentalsys.Errno {
	r, errno := c.resolve(p, true)
	if errno != 0 {
		return errno
	}
	return c.FS.Utimens(r, atim, mtim)
}
