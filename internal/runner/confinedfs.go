package runner

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"

	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/experimental/sysfs"
	"github.com/tetratelabs/wazero/sys"
	"golang.org/x/sys/unix"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/pathwalk"
	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/wasmmod"
)

// ConfinedFS is the file system the guest sees: a host directory (the
// container's root, after pivot_root "/") in which the guest may reach
// nothing on the Denylist.
//
// Every operation works in two steps. First the guest's path is resolved
// by name, component by component, following symlinks inside the root
// only and refusing with EACCES as soon as a component is denied: so
// neither a symlink nor a procfs "magic link" (/proc/self/fd/N,
// /proc/self/root) can get round the check. Then the operation runs on
// what was checked, pinned: the resolved path's directory is opened
// beneath the root with no symlink of any kind followed (openat2(2)
// RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, or an O_NOFOLLOW walk where the
// kernel lacks it), checked once more, and the operation acts on one name
// in that open directory, never following it. A guest (or a second guest
// of the container) that swaps a directory for a symlink between the two
// steps makes the operation fail with ELOOP or ENOENT; it cannot make it
// follow a symlink the check did not see. OpenFile checks the opened file
// once more as well.
type ConfinedFS struct {
	experimentalsys.UnimplementedFS
	deny *Denylist
	// root is an O_PATH descriptor of the host directory served: every
	// operation starts from it.
	root int
	// host is the host's file system: operations reach a pinned directory
	// by its descriptor's procfs name (see pinned.path), which keeps
	// wazero's own file types and error mapping.
	host experimentalsys.FS
	// noOpenat2 is set once openat2(2) is found missing (or filtered):
	// directories are then pinned by a walk.
	noOpenat2 bool
	// checked, if set, runs between a path's check and its pin: a test's
	// way to change the file system there.
	checked func()
}

// NewConfinedFS serves the host directory dir, confined by deny. It needs
// procfs mounted at /proc (the runner's own /proc/self/fd). Close releases
// its descriptor.
func NewConfinedFS(dir string, deny *Denylist) (*ConfinedFS, error) {
	root, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open the guest's root %s: %w", dir, err)
	}
	return &ConfinedFS{deny: deny, root: root, host: sysfs.DirFS("/")}, nil
}

// Close releases the root's descriptor. Files opened stay usable.
func (c *ConfinedFS) Close() error {
	return unix.Close(c.root)
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
		if errors.Is(err, pathwalk.ErrNotDir) {
			return "", experimentalsys.ENOTDIR
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
	var st unix.Stat_t
	err := unix.Fstatat(w.c.root, relative(p), &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == unix.ENOENT:
		return pathwalk.Missing, nil
	case err != nil:
		return 0, experimentalsys.UnwrapOSError(err)
	case w.c.deny.denied(statID(&st)):
		return 0, experimentalsys.EACCES
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		return pathwalk.Symlink, nil
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return pathwalk.NotDir, nil
	}
	return pathwalk.Other, nil
}

func (w walker) Readlink(p string) (string, error) {
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(w.c.root, relative(p), buf)
	if err != nil {
		return "", experimentalsys.UnwrapOSError(err)
	}
	return string(buf[:n]), nil
}

// statID is what the Denylist needs of a stat.
func statID(st *unix.Stat_t) sys.Stat_t {
	return sys.Stat_t{Dev: uint64(st.Dev), Ino: sys.Inode(st.Ino)}
}

// relative turns an absolute path (pathwalk's, or a Config's) into one the
// inner FS takes: relative to its root, "." for the root itself.
func relative(p string) string {
	if p = strings.TrimLeft(p, "/"); p == "" {
		return "."
	}
	return p
}

// pinned is where an operation on a checked path happens: a directory the
// runner holds open, and one name in it that is never followed, unless
// the guest's path ended in a slash (see path).
type pinned struct {
	dir   int
	name  string
	slash bool
}

// path names the pinned location for the host file system: the kernel
// reaches the open directory through the runner's own procfs entry (a
// magic link, which goes to the directory itself, whatever its path has
// become), then looks up name in it. A trailing slash is kept, for the
// kernel to keep its rules ("f/" is ENOTDIR, creating "new/" fails); the
// kernel then follows the name if it is a symlink, to a directory only,
// and what open and stat find is checked after.
func (p pinned) path() string {
	s := "proc/self/fd/" + strconv.Itoa(p.dir) + "/" + p.name
	if p.slash {
		s += "/"
	}
	return s
}

func (p pinned) close() { unix.Close(p.dir) }

// locate resolves and checks the guest's path p (see resolve), then pins
// it: it opens the resolved path's directory from the root without
// following any symlink, and checks it again.
func (c *ConfinedFS) locate(p string, follow bool) (pinned, experimentalsys.Errno) {
	r, errno := c.resolve(p, follow)
	if errno != 0 {
		return pinned{}, errno
	}
	if c.checked != nil {
		c.checked()
	}
	slash := strings.HasSuffix(r, "/")
	dir, name := path.Split(strings.TrimSuffix(r, "/"))
	if name == "" || r == "." {
		dir, name = "", "."
	}
	fd, errno := c.openDir(dir)
	if errno != 0 {
		return pinned{}, errno
	}
	at := pinned{fd, name, slash}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		at.close()
		return pinned{}, experimentalsys.UnwrapOSError(err)
	}
	if c.deny.denied(statID(&st)) {
		at.close()
		return pinned{}, experimentalsys.EACCES
	}
	return at, 0
}

// openDir opens the directory dir (a resolved path relative to the root,
// without "." or ".." components) as an O_PATH descriptor, following no
// symlink: a component that is one now was swapped in after the check.
func (c *ConfinedFS) openDir(dir string) (int, experimentalsys.Errno) {
	dir = strings.Trim(dir, "/")
	if dir == "" {
		dir = "."
	}
	const flags = unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC
	if !c.noOpenat2 {
		fd, err := unix.Openat2(c.root, dir, &unix.OpenHow{
			Flags:   flags,
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
		})
		if err != unix.ENOSYS && err != unix.EPERM {
			return fd, experimentalsys.UnwrapOSError(err)
		}
		c.noOpenat2 = true // an old kernel, or a seccomp filter
	}
	fd, err := unix.Dup(c.root)
	if err != nil {
		return -1, experimentalsys.UnwrapOSError(err)
	}
	for _, comp := range pathwalk.Split(dir) {
		next, err := unix.Openat(fd, comp, flags|unix.O_NOFOLLOW, 0)
		unix.Close(fd)
		if err != nil {
			return -1, experimentalsys.UnwrapOSError(err)
		}
		fd = next
	}
	return fd, 0
}

// mapFile maps the regular file p read-only into memory, resolved, pinned
// and checked as OpenFile does. Mapping rather than reading a module saves
// copying it and faulting in as many fresh pages. The mapping is never
// unmapped: wazero may keep slices of a module's bytes.
func (c *ConfinedFS) mapFile(p string) ([]byte, error) {
	at, errno := c.locate(relative(p), true)
	if errno != 0 {
		return nil, errno
	}
	defer at.close()
	fd, err := unix.Openat(at.dir, at.name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	if c.deny.denied(statID(&st)) {
		return nil, experimentalsys.EACCES
	}
	return mapModule(fd, &st)
}

// mapModule maps the module open on fd, whose status is st, privately and
// read-only.
func mapModule(fd int, st *unix.Stat_t) ([]byte, error) {
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

// pinnedFile is a file opened through a pinned directory, which it keeps
// open: wazero reopens a file by the path it was opened with (to rewind a
// directory, or change its append mode), and that path goes through the
// directory's descriptor.
type pinnedFile struct {
	experimentalsys.File
	dir pinned
}

// Close implements experimentalsys.File.
func (f *pinnedFile) Close() experimentalsys.Errno {
	errno := f.File.Close()
	f.dir.close()
	return errno
}

// Modes of what a guest creates: WASI preview 1 carries no mode, and
// wazero asks for 0600 (files) and 0700 (directories), which a native
// program would not get: these are what creat(2) and mkdir(2) are usually
// given, and the kernel takes the process's umask (the spec's
// process.user.umask, which runc sets, else runc's 0022) off them, as for
// a native process of the container.
const (
	createFileMode fs.FileMode = 0o666
	createDirMode  fs.FileMode = 0o777
)

// OpenFile implements experimentalsys.FS. A file it creates gets
// createFileMode less the umask, whatever perm says.
func (c *ConfinedFS) OpenFile(p string, flag experimentalsys.Oflag, perm fs.FileMode) (experimentalsys.File, experimentalsys.Errno) {
	if flag&experimentalsys.O_CREAT != 0 {
		perm = createFileMode
	}
	if fd, ok := stdioPath(p); ok {
		return c.host.OpenFile(fd, flag, perm) // opened again, as Linux does
	}
	at, errno := c.locate(p, flag&experimentalsys.O_NOFOLLOW == 0)
	if errno != 0 {
		return nil, errno
	}
	f, errno := c.host.OpenFile(at.path(), flag|experimentalsys.O_NOFOLLOW, perm)
	if errno != 0 {
		at.close()
		return nil, errno
	}
	st, errno := f.Stat()
	if errno == 0 && c.deny.denied(st) {
		errno = experimentalsys.EACCES
	}
	if errno != 0 {
		f.Close()
		at.close()
		return nil, errno
	}
	return &pinnedFile{f, at}, 0
}

// Lstat implements experimentalsys.FS.
func (c *ConfinedFS) Lstat(p string) (sys.Stat_t, experimentalsys.Errno) {
	return c.stat(p, false)
}

// Stat implements experimentalsys.FS.
func (c *ConfinedFS) Stat(p string) (sys.Stat_t, experimentalsys.Errno) {
	if fd, ok := stdioPath(p); ok {
		return c.host.Stat(fd)
	}
	return c.stat(p, true)
}

// stat stats the pinned name without following it: with follow, the walk
// has resolved it already, and a symlink there now was swapped in (ELOOP).
func (c *ConfinedFS) stat(p string, follow bool) (sys.Stat_t, experimentalsys.Errno) {
	at, errno := c.locate(p, follow)
	if errno != 0 {
		return sys.Stat_t{}, errno
	}
	defer at.close()
	st, errno := c.host.Lstat(at.path())
	switch {
	case errno != 0:
		return sys.Stat_t{}, errno
	case c.deny.denied(st):
		return sys.Stat_t{}, experimentalsys.EACCES
	case follow && st.Mode&fs.ModeSymlink != 0:
		return sys.Stat_t{}, experimentalsys.ELOOP
	}
	return st, 0
}

// Mkdir implements experimentalsys.FS. The directory gets createDirMode
// less the umask, whatever perm says.
func (c *ConfinedFS) Mkdir(p string, _ fs.FileMode) experimentalsys.Errno {
	return c.at(p, func(at pinned) experimentalsys.Errno { return c.host.Mkdir(at.path(), createDirMode) })
}

// Chmod implements experimentalsys.FS.
func (c *ConfinedFS) Chmod(p string, perm fs.FileMode) experimentalsys.Errno {
	return c.onFile(p, func(file string) experimentalsys.Errno { return c.host.Chmod(file, perm) })
}

// Utimens implements experimentalsys.FS.
func (c *ConfinedFS) Utimens(p string, atim, mtim int64) experimentalsys.Errno {
	return c.onFile(p, func(file string) experimentalsys.Errno { return c.host.Utimens(file, atim, mtim) })
}

// Rename implements experimentalsys.FS.
func (c *ConfinedFS) Rename(from, to string) experimentalsys.Errno {
	return c.at(from, func(af pinned) experimentalsys.Errno {
		return c.at(to, func(at pinned) experimentalsys.Errno { return c.host.Rename(af.path(), at.path()) })
	})
}

// Rmdir implements experimentalsys.FS.
func (c *ConfinedFS) Rmdir(p string) experimentalsys.Errno {
	return c.at(p, func(at pinned) experimentalsys.Errno { return c.host.Rmdir(at.path()) })
}

// Unlink implements experimentalsys.FS.
func (c *ConfinedFS) Unlink(p string) experimentalsys.Errno {
	return c.at(p, func(at pinned) experimentalsys.Errno { return c.host.Unlink(at.path()) })
}

// Link implements experimentalsys.FS. Neither name is followed, as
// link(2) does not follow the old one.
func (c *ConfinedFS) Link(oldPath, newPath string) experimentalsys.Errno {
	return c.at(oldPath, func(ao pinned) experimentalsys.Errno {
		return c.at(newPath, func(an pinned) experimentalsys.Errno { return c.host.Link(ao.path(), an.path()) })
	})
}

// Symlink implements experimentalsys.FS. The link's target is not checked:
// whatever later resolves through the link is.
func (c *ConfinedFS) Symlink(oldPath, linkName string) experimentalsys.Errno {
	return c.at(linkName, func(at pinned) experimentalsys.Errno { return c.host.Symlink(oldPath, at.path()) })
}

// Readlink implements experimentalsys.FS.
func (c *ConfinedFS) Readlink(p string) (target string, errno experimentalsys.Errno) {
	errno = c.at(p, func(at pinned) experimentalsys.Errno {
		target, errno = c.host.Readlink(at.path())
		return errno
	})
	return target, errno
}

// at runs op on p pinned, without following its last component.
func (c *ConfinedFS) at(p string, op func(pinned) experimentalsys.Errno) experimentalsys.Errno {
	at, errno := c.locate(p, false)
	if errno != 0 {
		return errno
	}
	defer at.close()
	return op(at)
}

// onFile runs op on the file p resolves to (following its last
// component), for the operations that follow a symlink whatever they are
// asked (chmod, utimes): the file is opened O_PATH without following the
// pinned name, checked, and op given its descriptor's procfs name, which
// goes to that file and no other.
func (c *ConfinedFS) onFile(p string, op func(file string) experimentalsys.Errno) experimentalsys.Errno {
	at, errno := c.locate(p, true)
	if errno != 0 {
		return errno
	}
	defer at.close()
	fd, err := unix.Openat(at.dir, at.name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return experimentalsys.UnwrapOSError(err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	switch err := unix.Fstat(fd, &st); {
	case err != nil:
		return experimentalsys.UnwrapOSError(err)
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		return experimentalsys.ELOOP // swapped in after the walk
	case c.deny.denied(statID(&st)):
		return experimentalsys.EACCES
	case at.slash && st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return experimentalsys.ENOTDIR
	}
	return op("proc/self/fd/" + strconv.Itoa(fd))
}
