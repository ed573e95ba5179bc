package runtime

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strconv"
	"strings"

	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/sys"
	"golang.org/x/sys/unix"
)

// deniedFSTypes are the kernel interface file systems a guest may never
// open: through them it could rewrite the runner's memory (/proc/self/mem),
// reach the runner's descriptors (/proc/self/fd), or change the host.
var deniedFSTypes = map[string]bool{
	"proc": true, "sysfs": true, "cgroup": true, "cgroup2": true,
	"securityfs": true, "debugfs": true, "tracefs": true, "bpf": true,
	"configfs": true, "fusectl": true, "pstore": true, "efivarfs": true,
	"binfmt_misc": true,
}

type fileID struct{ dev, ino uint64 }

// Denylist says which files the guest may not reach: every file on a denied
// file system (by device number), and a few single files (by device and
// inode), such as the runner's binary and configuration.
type Denylist struct {
	devs  map[uint64]string
	files map[fileID]string
}

// NewDenylist reads a mountinfo table (as /proc/self/mountinfo) and denies
// every mount of a kernel interface file system in it.
func NewDenylist(mountinfo io.Reader) (*Denylist, error) {
	d := &Denylist{devs: map[uint64]string{}, files: map[fileID]string{}}
	sc := bufio.NewScanner(mountinfo)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if len(fields) < 5 || sep < 0 || sep+1 >= len(fields) {
			return nil, fmt.Errorf("malformed mountinfo line %q", sc.Text())
		}
		if !deniedFSTypes[fields[sep+1]] {
			continue
		}
		major, minor, ok := strings.Cut(fields[2], ":")
		ma, err1 := strconv.ParseUint(major, 10, 32)
		mi, err2 := strconv.ParseUint(minor, 10, 32)
		if !ok || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("malformed device %q in mountinfo", fields[2])
		}
		d.devs[unix.Mkdev(uint32(ma), uint32(mi))] = fields[sep+1]
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return d, nil
}

// DenyFile adds one file, by its device and inode.
func (d *Denylist) DenyFile(dev, ino uint64, why string) {
	d.files[fileID{dev, ino}] = why
}

func (d *Denylist) denied(st sys.Stat_t) bool {
	if _, ok := d.devs[st.Dev]; ok {
		return true
	}
	_, ok := d.files[fileID{st.Dev, st.Ino}]
	return ok
}

// ConfinedFS wraps the file system the guest sees. Every operation first
// resolves its path (following symlinks as the operation itself would) and
// refuses with EACCES when the result is on the Denylist; OpenFile checks the
// opened file again, so a symlink swapped in between cannot get round it.
// Reaching above the root ("../") is the kernel's business: the runner runs
// after pivot_root, so "/" is the container's root.
type ConfinedFS struct {
	experimentalsys.FS
	deny *Denylist
}

// NewConfinedFS confines inner with deny.
func NewConfinedFS(inner experimentalsys.FS, deny *Denylist) *ConfinedFS {
	return &ConfinedFS{FS: inner, deny: deny}
}

// check refuses p if it (or, when p does not exist, its parent directory)
// resolves to a denied file.
func (c *ConfinedFS) check(p string, follow bool) experimentalsys.Errno {
	var st sys.Stat_t
	var errno experimentalsys.Errno
	if follow {
		st, errno = c.FS.Stat(p)
	} else {
		st, errno = c.FS.Lstat(p)
	}
	switch errno {
	case 0:
		if c.deny.denied(st) {
			return experimentalsys.EACCES
		}
		return 0
	case experimentalsys.ENOENT:
		return c.checkParent(p)
	}
	return 0 // let the operation itself report the error
}

func (c *ConfinedFS) checkParent(p string) experimentalsys.Errno {
	dir := path.Dir(p)
	if dir == p {
		return 0
	}
	st, errno := c.FS.Stat(dir)
	if errno == 0 && c.deny.denied(st) {
		return experimentalsys.EACCES
	}
	return 0
}

// OpenFile implements experimentalsys.FS.
func (c *ConfinedFS) OpenFile(p string, flag experimentalsys.Oflag, perm fs.FileMode) (experimentalsys.File, experimentalsys.Errno) {
	if errno := c.check(p, flag&experimentalsys.O_NOFOLLOW == 0); errno != 0 {
		return nil, errno
	}
	f, errno := c.FS.OpenFile(p, flag, perm)
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
	st, errno := c.FS.Lstat(p)
	if errno == 0 && c.deny.denied(st) {
		return sys.Stat_t{}, experimentalsys.EACCES
	}
	return st, errno
}

// Stat implements experimentalsys.FS.
func (c *ConfinedFS) Stat(p string) (sys.Stat_t, experimentalsys.Errno) {
	st, errno := c.FS.Stat(p)
	if errno == 0 && c.deny.denied(st) {
		return sys.Stat_t{}, experimentalsys.EACCES
	}
	return st, errno
}

// Mkdir implements experimentalsys.FS.
func (c *ConfinedFS) Mkdir(p string, perm fs.FileMode) experimentalsys.Errno {
	if errno := c.checkParent(p); errno != 0 {
		return errno
	}
	return c.FS.Mkdir(p, perm)
}

// Chmod implements experimentalsys.FS.
func (c *ConfinedFS) Chmod(p string, perm fs.FileMode) experimentalsys.Errno {
	if errno := c.check(p, true); errno != 0 {
		return errno
	}
	return c.FS.Chmod(p, perm)
}

// Rename implements experimentalsys.FS.
func (c *ConfinedFS) Rename(from, to string) experimentalsys.Errno {
	if errno := c.check(from, false); errno != 0 {
		return errno
	}
	if errno := c.check(to, false); errno != 0 {
		return errno
	}
	return c.FS.Rename(from, to)
}

// Rmdir implements experimentalsys.FS.
func (c *ConfinedFS) Rmdir(p string) experimentalsys.Errno {
	if errno := c.check(p, false); errno != 0 {
		return errno
	}
	return c.FS.Rmdir(p)
}

// Unlink implements experimentalsys.FS.
func (c *ConfinedFS) Unlink(p string) experimentalsys.Errno {
	if errno := c.check(p, false); errno != 0 {
		return errno
	}
	return c.FS.Unlink(p)
}

// Link implements experimentalsys.FS.
func (c *ConfinedFS) Link(oldPath, newPath string) experimentalsys.Errno {
	if errno := c.check(oldPath, false); errno != 0 {
		return errno
	}
	if errno := c.checkParent(newPath); errno != 0 {
		return errno
	}
	return c.FS.Link(oldPath, newPath)
}

// Symlink implements experimentalsys.FS. The link's target is not checked:
// whatever later resolves through the link is.
func (c *ConfinedFS) Symlink(oldPath, linkName string) experimentalsys.Errno {
	if errno := c.checkParent(linkName); errno != 0 {
		return errno
	}
	return c.FS.Symlink(oldPath, linkName)
}

// Readlink implements experimentalsys.FS.
func (c *ConfinedFS) Readlink(p string) (string, experimentalsys.Errno) {
	if errno := c.check(p, false); errno != 0 {
		return "", errno
	}
	return c.FS.Readlink(p)
}

// Utimens implements experimentalsys.FS.
func (c *ConfinedFS) Utimens(p string, atim, mtim int64) experimentalsys.Errno {
	if errno := c.check(p, true); errno != 0 {
		return errno
	}
	return c.FS.Utimens(p, atim, mtim)
}
