package runner

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moby/sys/mountinfo"
	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/experimental/sysfs"
	"golang.org/x/sys/unix"
)

func confinedDir(t *testing.T) (string, *ConfinedFS) {
	t.Helper()
	dir := t.TempDir()
	mk := func(p, data string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mk("secret", "SECRET")
	mk("secretdir/inner", "INNER")
	mk("etc/hostname", "inside")
	mk("public/readme", "README")
	links := map[string]string{
		"abs":            "/secret",
		"rel":            "secret",
		"dotrel":         "./public/../secret",
		"sub/up":         "../secret",
		"sub/climb":      "../../../../../../../secret",
		"chain":          "abs",
		"dirlink":        "/public",
		"sdirlink":       "secretdir",
		"hosts":          "/etc/hostname",
		"hostabs":        filepath.Join(dir, "public", "readme"), // a host path: not inside the root
		"loop":           "loop",
		"public/toabs":   "/secret",
		"public/sibling": "readme",
	}
	for name, target := range links {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	// A hard link shares the denied inode.
	if err := os.Link(filepath.Join(dir, "secret"), filepath.Join(dir, "public", "hardlink")); err != nil {
		t.Fatal(err)
	}
	deny := NewDenylist(nil)
	for _, p := range []string{"secret", "secretdir"} {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(dir, p), &st); err != nil {
			t.Fatal(err)
		}
		deny.DenyFile(st.Dev, st.Ino, p)
	}
	return dir, confined(t, dir, deny)
}

// confined serves dir confined by deny, for the test's length.
func confined(t *testing.T, dir string, deny *Denylist) *ConfinedFS {
	t.Helper()
	c, err := NewConfinedFS(dir, deny)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func readAll(t *testing.T, f experimentalsys.File) string {
	t.Helper()
	var out []byte
	buf := make([]byte, 64)
	for {
		n, errno := f.Read(buf)
		out = append(out, buf[:n]...)
		if errno != 0 {
			t.Fatalf("read: %v", errno)
		}
		if n == 0 {
			return string(out)
		}
	}
}

func TestConfinedFSDeniedFile(t *testing.T) {
	dir, cfs := confinedDir(t)

	denied := []string{"secret", "./secret", "public/../secret", "abs", "rel", "dotrel", "sub/up", "sub/climb",
		"chain", "public/toabs", "public/hardlink", "secretdir", "secretdir/inner", "sdirlink/inner", "dirlink/../secret",
		"/secret"}
	for _, p := range denied {
		t.Run("open "+p, func(t *testing.T) {
			f, errno := cfs.OpenFile(p, experimentalsys.O_RDONLY, 0)
			if f != nil {
				f.Close()
			}
			if errno != experimentalsys.EACCES {
				t.Errorf("OpenFile(%q) errno = %v, want EACCES", p, errno)
			}
			if _, errno := cfs.Stat(p); errno != experimentalsys.EACCES {
				t.Errorf("Stat(%q) errno = %v, want EACCES", p, errno)
			}
		})
	}

	// A file has no "..": refused as the kernel does, whatever lies after.
	for _, p := range []string{"public/readme/../../secret", "public/readme/..", "public/readme/x"} {
		if _, errno := cfs.OpenFile(p, experimentalsys.O_RDONLY, 0); errno != experimentalsys.ENOTDIR {
			t.Errorf("OpenFile(%q) errno = %v, want ENOTDIR", p, errno)
		}
		if _, errno := cfs.Stat(p); errno != experimentalsys.ENOTDIR {
			t.Errorf("Stat(%q) errno = %v, want ENOTDIR", p, errno)
		}
	}

	// Lstat does not follow the last link: a link to the denied file may be
	// looked at and read, the file itself may not.
	for _, p := range []string{"secret", "public/hardlink", "secretdir", "secretdir/inner", "sdirlink/inner"} {
		if _, errno := cfs.Lstat(p); errno != experimentalsys.EACCES {
			t.Errorf("Lstat(%q) errno = %v, want EACCES", p, errno)
		}
	}
	for link, target := range map[string]string{"abs": "/secret", "rel": "secret", "sub/up": "../secret", "public/toabs": "/secret", "sdirlink": "secretdir"} {
		st, errno := cfs.Lstat(link)
		if errno != 0 {
			t.Errorf("Lstat(%q) of the link itself: %v", link, errno)
		} else if st.Mode&fs.ModeSymlink == 0 {
			t.Errorf("Lstat(%q) mode = %v, want a symlink", link, st.Mode)
		}
		if got, errno := cfs.Readlink(link); errno != 0 || got != target {
			t.Errorf("Readlink(%q) = %q, %v; want %q", link, got, errno, target)
		}
	}

	// Writing operations on the denied file, directly or through links.
	ops := map[string]func() experimentalsys.Errno{
		"Unlink secret":          func() experimentalsys.Errno { return cfs.Unlink("secret") },
		"Unlink hardlink":        func() experimentalsys.Errno { return cfs.Unlink("public/hardlink") },
		"Rename from secret":     func() experimentalsys.Errno { return cfs.Rename("secret", "public/moved") },
		"Rename over secret":     func() experimentalsys.Errno { return cfs.Rename("public/readme", "secret") },
		"Rename into secretdir":  func() experimentalsys.Errno { return cfs.Rename("public/readme", "secretdir/readme") },
		"Chmod secret":           func() experimentalsys.Errno { return cfs.Chmod("secret", 0o777) },
		"Chmod through abs":      func() experimentalsys.Errno { return cfs.Chmod("abs", 0o777) },
		"Chmod through rel":      func() experimentalsys.Errno { return cfs.Chmod("sub/up", 0o777) },
		"Utimens secret":         func() experimentalsys.Errno { return cfs.Utimens("secret", 0, 0) },
		"Utimens through chain":  func() experimentalsys.Errno { return cfs.Utimens("chain", 0, 0) },
		"Link secret":            func() experimentalsys.Errno { return cfs.Link("secret", "public/hard2") },
		"Mkdir in secretdir":     func() experimentalsys.Errno { return cfs.Mkdir("secretdir/new", 0o755) },
		"Mkdir via sdirlink":     func() experimentalsys.Errno { return cfs.Mkdir("sdirlink/new", 0o755) },
		"Rmdir secretdir":        func() experimentalsys.Errno { return cfs.Rmdir("secretdir") },
		"Unlink in secretdir":    func() experimentalsys.Errno { return cfs.Unlink("secretdir/inner") },
		"Symlink into secretdir": func() experimentalsys.Errno { return cfs.Symlink("x", "secretdir/link") },
	}
	for name, op := range ops {
		if errno := op(); errno != experimentalsys.EACCES {
			t.Errorf("%s: errno = %v, want EACCES", name, errno)
		}
	}
	for name, op := range map[string]func() experimentalsys.Errno{
		"create secret": func() experimentalsys.Errno {
			return openClose(cfs, "secret", experimentalsys.O_WRONLY|experimentalsys.O_CREAT)
		},
		"truncate secret": func() experimentalsys.Errno {
			return openClose(cfs, "secret", experimentalsys.O_WRONLY|experimentalsys.O_TRUNC)
		},
		"write via abs": func() experimentalsys.Errno { return openClose(cfs, "abs", experimentalsys.O_RDWR) },
		"open dir":      func() experimentalsys.Errno { return openClose(cfs, "secretdir", experimentalsys.O_DIRECTORY) },
		"create in sdir": func() experimentalsys.Errno {
			return openClose(cfs, "secretdir/new", experimentalsys.O_CREAT|experimentalsys.O_WRONLY)
		},
		"create via sdirl": func() experimentalsys.Errno {
			return openClose(cfs, "sdirlink/new", experimentalsys.O_CREAT|experimentalsys.O_WRONLY)
		},
	} {
		if errno := op(); errno != experimentalsys.EACCES {
			t.Errorf("%s: errno = %v, want EACCES", name, errno)
		}
	}

	// Nothing of the above reached the files.
	st, err := os.Stat(filepath.Join(dir, "secret"))
	if err != nil {
		t.Fatalf("the denied file is gone: %v", err)
	}
	if st.Mode().Perm() != 0o644 || st.ModTime().Unix() == 0 {
		t.Errorf("the denied file changed: mode %v, mtime %v", st.Mode(), st.ModTime())
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "secret")); string(b) != "SECRET" {
		t.Errorf("the denied file holds %q", b)
	}
	for _, p := range []string{"public/moved", "public/hard2", "secretdir/new", "secretdir/readme", "secretdir/link"} {
		if _, err := os.Lstat(filepath.Join(dir, p)); err == nil {
			t.Errorf("%s was created", p)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "public", "readme")); string(b) != "README" {
		t.Errorf("public/readme holds %q after a refused rename", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "secretdir", "inner")); string(b) != "INNER" {
		t.Errorf("secretdir/inner holds %q", b)
	}
}

func openClose(cfs *ConfinedFS, p string, flag experimentalsys.Oflag) experimentalsys.Errno {
	f, errno := cfs.OpenFile(p, flag, 0o644)
	if f != nil {
		f.Close()
	}
	return errno
}

func TestConfinedFSAllowed(t *testing.T) {
	dir, cfs := confinedDir(t)

	// Links resolve inside the root, an absolute one from the root.
	for p, want := range map[string]string{
		"hosts":           "inside",
		"public/readme":   "README",
		"dirlink/readme":  "README",
		"public/sibling":  "README",
		"/public/readme":  "README",
		"public/../hosts": "inside",
	} {
		f, errno := cfs.OpenFile(p, experimentalsys.O_RDONLY, 0)
		if errno != 0 {
			t.Errorf("OpenFile(%q): %v", p, errno)
			continue
		}
		if got := readAll(t, f); got != want {
			t.Errorf("OpenFile(%q) read %q, want %q", p, got, want)
		}
		f.Close()
	}
	// A link to a host path is a path inside the root, which does not exist.
	if _, errno := cfs.OpenFile("hostabs", experimentalsys.O_RDONLY, 0); errno != experimentalsys.ENOENT {
		t.Errorf("OpenFile(hostabs) errno = %v, want ENOENT", errno)
	}
	if _, errno := cfs.OpenFile("loop", experimentalsys.O_RDONLY, 0); errno != experimentalsys.ELOOP {
		t.Errorf("OpenFile(loop) errno = %v, want ELOOP", errno)
	}
	if _, errno := cfs.OpenFile("missing/file", experimentalsys.O_RDONLY, 0); errno != experimentalsys.ENOENT {
		t.Errorf("OpenFile(missing/file) errno = %v, want ENOENT", errno)
	}
	// O_NOFOLLOW on a link to the denied file opens nothing.
	if f, errno := cfs.OpenFile("abs", experimentalsys.O_RDONLY|experimentalsys.O_NOFOLLOW, 0); errno == 0 {
		f.Close()
		t.Error("OpenFile(abs, O_NOFOLLOW) succeeded")
	}

	// Create, write, read back, through the confined FS.
	if errno := cfs.Mkdir("public/newdir", 0o755); errno != 0 {
		t.Fatalf("Mkdir: %v", errno)
	}
	if errno := cfs.Mkdir("public/newdir", 0o755); errno != experimentalsys.EEXIST {
		t.Errorf("second Mkdir errno = %v, want EEXIST", errno)
	}
	w, errno := cfs.OpenFile("public/newdir/file", experimentalsys.O_CREAT|experimentalsys.O_WRONLY|experimentalsys.O_TRUNC, 0o600)
	if errno != 0 {
		t.Fatalf("create: %v", errno)
	}
	if n, errno := w.Write([]byte("written")); errno != 0 || n != 7 {
		t.Fatalf("write = %d, %v", n, errno)
	}
	w.Close()
	r, errno := cfs.OpenFile("dirlink/newdir/file", experimentalsys.O_RDONLY, 0)
	if errno != 0 {
		t.Fatalf("reopen: %v", errno)
	}
	if got := readAll(t, r); got != "written" {
		t.Errorf("read back %q", got)
	}
	r.Close()
	if b, err := os.ReadFile(filepath.Join(dir, "public", "newdir", "file")); err != nil || string(b) != "written" {
		t.Errorf("host file = %q, %v", b, err)
	}
	// Creating through an absolute link whose target does not exist yet
	// creates it inside the root.
	if err := os.Symlink("/public/created-by-link", filepath.Join(dir, "dangling")); err != nil {
		t.Fatal(err)
	}
	if errno := openClose(cfs, "dangling", experimentalsys.O_CREAT|experimentalsys.O_WRONLY); errno != 0 {
		t.Errorf("create through a dangling link: %v", errno)
	}
	if _, err := os.Stat(filepath.Join(dir, "public", "created-by-link")); err != nil {
		t.Errorf("the link's target was not created inside the root: %v", err)
	}

	st, errno := cfs.Stat("dirlink")
	if errno != 0 || !st.Mode.IsDir() {
		t.Errorf("Stat(dirlink) = %v, %v; want a directory", st.Mode, errno)
	}
	if errno := cfs.Chmod("public/newdir/file", 0o640); errno != 0 {
		t.Errorf("Chmod: %v", errno)
	}
	if errno := cfs.Utimens("public/newdir/file", 1e9, 2e9); errno != 0 {
		t.Errorf("Utimens: %v", errno)
	}
	if fi, err := os.Stat(filepath.Join(dir, "public", "newdir", "file")); err != nil || fi.Mode().Perm() != 0o640 || fi.ModTime().Unix() != 2 {
		t.Errorf("after Chmod and Utimens: %v, %v", fi, err)
	}
	if errno := cfs.Symlink("file", "public/newdir/link"); errno != 0 {
		t.Errorf("Symlink: %v", errno)
	}
	if errno := cfs.Link("public/newdir/file", "public/newdir/hard"); errno != 0 {
		t.Errorf("Link: %v", errno)
	}
	if errno := cfs.Rename("public/newdir/hard", "public/newdir/renamed"); errno != 0 {
		t.Errorf("Rename: %v", errno)
	}
	// Unlinking a link to the denied file removes the link, not the file.
	if errno := cfs.Unlink("abs"); errno != 0 {
		t.Errorf("Unlink(abs): %v", errno)
	}
	if _, err := os.Lstat(filepath.Join(dir, "abs")); err == nil {
		t.Error("the link abs is still there")
	}
	if _, err := os.Stat(filepath.Join(dir, "secret")); err != nil {
		t.Errorf("unlinking a link removed its target: %v", err)
	}
	for _, p := range []string{"public/newdir/link", "public/newdir/renamed", "public/newdir/file"} {
		if errno := cfs.Unlink(p); errno != 0 {
			t.Errorf("Unlink(%q): %v", p, errno)
		}
	}
	if errno := cfs.Rmdir("public/newdir"); errno != 0 {
		t.Errorf("Rmdir: %v", errno)
	}
}

// TestConfinedFSHostKernelFS confines the real root with this process's own
// mount table, as the runner does in a container.
func TestConfinedFSHostKernelFS(t *testing.T) {
	mounts, err := mountinfo.GetMounts(nil)
	if err != nil {
		t.Skipf("no procfs: %v", err)
	}
	deny := NewDenylist(mounts)
	cfs := confined(t, "/", deny)

	dir := t.TempDir()
	rel := strings.TrimPrefix(dir, "/")
	up := strings.Repeat("../", strings.Count(dir, "/"))
	for name, target := range map[string]string{
		"mem":     "/proc/self/mem",
		"relmem":  up + "proc/self/mem",
		"proc":    "/proc",
		"fdlink":  "/proc/self/fd",
		"environ": "/proc/1/environ",
	} {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	regular := filepath.Join(dir, "regular")
	if err := os.WriteFile(regular, []byte("ok"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, sysErr := os.Stat("/sys/kernel")

	tests := []struct {
		name string
		op   func() experimentalsys.Errno
		sys  bool // needs /sys
	}{
		{"open proc/self/mem", func() experimentalsys.Errno { return openClose(cfs, "proc/self/mem", experimentalsys.O_RDONLY) }, false},
		{"open proc/self/mem for writing", func() experimentalsys.Errno { return openClose(cfs, "proc/self/mem", experimentalsys.O_RDWR) }, false},
		{"open proc/self/fd", func() experimentalsys.Errno {
			return openClose(cfs, "proc/self/fd", experimentalsys.O_RDONLY|experimentalsys.O_DIRECTORY)
		}, false},
		{"open /proc/self/status", func() experimentalsys.Errno { return openClose(cfs, "/proc/self/status", experimentalsys.O_RDONLY) }, false},
		{"open proc/self/root/etc", func() experimentalsys.Errno { return openClose(cfs, "proc/self/root/etc", experimentalsys.O_RDONLY) }, false},
		{"stat proc", func() experimentalsys.Errno { _, e := cfs.Stat("proc"); return e }, false},
		{"lstat proc", func() experimentalsys.Errno { _, e := cfs.Lstat("proc"); return e }, false},
		{"readlink proc/self/exe", func() experimentalsys.Errno { _, e := cfs.Readlink("proc/self/exe"); return e }, false},
		{"open link to proc/self/mem", func() experimentalsys.Errno { return openClose(cfs, rel+"/mem", experimentalsys.O_RDONLY) }, false},
		{"open relative link to proc/self/mem", func() experimentalsys.Errno { return openClose(cfs, rel+"/relmem", experimentalsys.O_RDONLY) }, false},
		{"open through link to /proc", func() experimentalsys.Errno { return openClose(cfs, rel+"/proc/self/mem", experimentalsys.O_RDONLY) }, false},
		{"stat through link to /proc/self/fd", func() experimentalsys.Errno { _, e := cfs.Stat(rel + "/fdlink/0"); return e }, false},
		{"stat link to /proc/1/environ", func() experimentalsys.Errno { _, e := cfs.Stat(rel + "/environ"); return e }, false},
		{"open sys/kernel", func() experimentalsys.Errno {
			return openClose(cfs, "sys/kernel", experimentalsys.O_RDONLY|experimentalsys.O_DIRECTORY)
		}, true},
		{"stat sys", func() experimentalsys.Errno { _, e := cfs.Stat("sys"); return e }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.sys && sysErr != nil {
				t.Skipf("/sys is not mounted: %v", sysErr)
			}
			if errno := tt.op(); errno != experimentalsys.EACCES {
				t.Errorf("errno = %v, want EACCES", errno)
			}
		})
	}

	t.Run("regular files", func(t *testing.T) {
		f, errno := cfs.OpenFile(rel+"/regular", experimentalsys.O_RDONLY, 0)
		if errno != 0 {
			t.Fatalf("OpenFile(%s/regular): %v", rel, errno)
		}
		if got := readAll(t, f); got != "ok" {
			t.Errorf("read %q", got)
		}
		f.Close()
		exe, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		if _, errno := cfs.Stat(strings.TrimPrefix(exe, "/")); errno != 0 {
			t.Errorf("Stat of the test binary: %v", errno)
		}
		if _, errno := cfs.Lstat(rel + "/mem"); errno != 0 {
			t.Errorf("Lstat of the link to /proc/self/mem: %v", errno)
		}
	})
}

// TestConfinedFSMissingDirDotDot walks through a directory that does not
// exist and back up with "..", so that the path that is left names a denied
// file. The kernel fails such a path with ENOENT; so must the confined FS,
// and it must never run the operation on the rest of the path unchecked.
func TestConfinedFSMissingDirDotDot(t *testing.T) {
	dir, cfs := confinedDir(t)
	if err := os.Symlink("nowhere/../secret", filepath.Join(dir, "via-missing")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("nowhere/../secretdir", filepath.Join(dir, "dir-via-missing")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("inner", filepath.Join(dir, "secretdir", "ilink")); err != nil {
		t.Fatal(err)
	}
	ops := []struct {
		name string
		op   func() experimentalsys.Errno
	}{
		{"Lstat", func() experimentalsys.Errno { _, e := cfs.Lstat("nowhere/../secret"); return e }},
		{"Readlink", func() experimentalsys.Errno { _, e := cfs.Readlink("nowhere/../secretdir/ilink"); return e }},
		{"Chmod", func() experimentalsys.Errno { return cfs.Chmod("nowhere/../secret", 0o777) }},
		{"Utimens", func() experimentalsys.Errno { return cfs.Utimens("via-missing", 0, 0) }},
		{"Open", func() experimentalsys.Errno { return openClose(cfs, "via-missing", experimentalsys.O_RDONLY) }},
		{"Mkdir", func() experimentalsys.Errno { return cfs.Mkdir("dir-via-missing/new", 0o755) }},
		{"Unlink", func() experimentalsys.Errno { return cfs.Unlink("dir-via-missing/inner") }},
		{"Rename", func() experimentalsys.Errno { return cfs.Rename("nowhere/../secret", "public/moved") }},
	}
	for _, tt := range ops {
		if errno := tt.op(); errno != experimentalsys.ENOENT && errno != experimentalsys.EACCES {
			t.Errorf("%s through a missing directory and '..': errno %v, want ENOENT or EACCES", tt.name, errno)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "secret")); err != nil {
		t.Errorf("the denied file is gone: %v", err)
	}
}

// TestConfinedFSHost confines the real root with this process's own mount
// table: procfs and sysfs are refused however they are reached.
func TestConfinedFSHost(t *testing.T) {
	mounts, err := mountinfo.GetMounts(nil)
	if err != nil {
		t.Skip("no /proc here")
	}
	deny := NewDenylist(mounts)
	dir := t.TempDir()
	links := map[string]string{"mem": "/proc/self/mem", "fd0": "/proc/self/fd/0", "fdrel": "../../../../../../../proc/self/fd", "root": "/proc/self/root"}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "ok.txt"), []byte("ok"), 0o644); err != nil {
		t.Fatal(err)
	}
	fs := confined(t, "/", deny)
	rel := strings.TrimPrefix(dir, "/")
	refused := []string{"proc/self/mem", "proc/self/fd/0", "proc/self/fd", "proc", "proc/self/root/etc/hostname",
		rel + "/mem", rel + "/fd0", rel + "/fdrel/1", rel + "/root/etc", "sys/kernel", "sys"}
	for _, p := range refused {
		if p == "sys/kernel" || p == "sys" {
			if _, err := os.Stat("/sys/kernel"); err != nil {
				continue
			}
		}
		if f, errno := fs.OpenFile(p, experimentalsys.O_RDONLY, 0); errno != experimentalsys.EACCES {
			if f != nil {
				f.Close()
			}
			t.Errorf("OpenFile(%q) errno %v, want EACCES", p, errno)
		}
		if _, errno := fs.Stat(p); errno != experimentalsys.EACCES {
			t.Errorf("Stat(%q) errno %v, want EACCES", p, errno)
		}
	}
	if errno := fs.Unlink("proc/self/mem"); errno != experimentalsys.EACCES {
		t.Errorf("Unlink(proc/self/mem) errno %v, want EACCES", errno)
	}
	// The link itself may be looked at; what it leads to may not.
	if _, errno := fs.Lstat(rel + "/mem"); errno != 0 {
		t.Errorf("Lstat of the link: %v", errno)
	}
	if target, errno := fs.Readlink(rel + "/mem"); errno != 0 || target != "/proc/self/mem" {
		t.Errorf("Readlink of the link = %q, %v", target, errno)
	}
	if errno := fs.Unlink(rel + "/mem"); errno != 0 {
		t.Errorf("Unlink of the link itself: %v", errno)
	}
	f, errno := fs.OpenFile(rel+"/ok.txt", experimentalsys.O_RDONLY, 0)
	if errno != 0 {
		t.Fatalf("OpenFile of an ordinary file: %v", errno)
	}
	f.Close()
}

// TestConfinedFSFiles denies single files by inode, and keeps symlink
// resolution inside the confined root.
func TestConfinedFSFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(p, s string) {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("secret", "runner config")
	write("etc/hostname", "inside")
	for name, target := range map[string]string{"abs": "/secret", "rel": "sub/../secret", "up": "../../../../etc/hostname"} {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	deny := NewDenylist(nil)
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(dir, "secret"), &st); err != nil {
		t.Fatal(err)
	}
	deny.DenyFile(st.Dev, st.Ino, "secret")
	fs := confined(t, dir, deny)
	for _, p := range []string{"secret", "abs", "rel", "./secret", "etc/../secret"} {
		if _, errno := fs.OpenFile(p, experimentalsys.O_RDONLY, 0); errno != experimentalsys.EACCES {
			t.Errorf("OpenFile(%q) errno %v, want EACCES", p, errno)
		}
	}
	for name, errno := range map[string]experimentalsys.Errno{
		"Chmod":   fs.Chmod("abs", 0o777),
		"Utimens": fs.Utimens("secret", 0, 0),
		"Rename":  fs.Rename("secret", "moved"),
		"Link":    fs.Link("secret", "hard"),
		"Unlink":  fs.Unlink("secret"),
	} {
		if errno != experimentalsys.EACCES {
			t.Errorf("%s of the denied file: errno %v, want EACCES", name, errno)
		}
	}
	// An absolute or climbing symlink resolves inside the confined root.
	f, errno := fs.OpenFile("up", experimentalsys.O_RDONLY, 0)
	if errno != 0 {
		t.Fatalf("OpenFile(up): %v", errno)
	}
	buf := make([]byte, 16)
	n, _ := f.Read(buf)
	f.Close()
	if string(buf[:n]) != "inside" {
		t.Errorf("up -> %q, want the confined root's etc/hostname", buf[:n])
	}
	// Ordinary work goes on.
	if errno := fs.Mkdir("newdir", 0o755); errno != 0 {
		t.Errorf("Mkdir: %v", errno)
	}
	w, errno := fs.OpenFile("newdir/file", experimentalsys.O_CREAT|experimentalsys.O_WRONLY, 0o644)
	if errno != 0 {
		t.Fatalf("create: %v", errno)
	}
	w.Write([]byte("x"))
	w.Close()
	if b, err := os.ReadFile(filepath.Join(dir, "newdir", "file")); err != nil || string(b) != "x" {
		t.Errorf("created file: %q, %v", b, err)
	}
}

// TestConfinedFSCreateModes: what a guest creates gets the mode a native
// process would under the process's umask (0666 and 0777 less it), not the
// 0600 and 0700 wazero asks for; an existing file's mode is left alone.
func TestConfinedFSCreateModes(t *testing.T) {
	for _, tt := range []struct {
		umask     int
		file, dir fs.FileMode
	}{
		{0o022, 0o644, 0o755}, // runc's default
		{0o002, 0o664, 0o775},
		{0o077, 0o600, 0o700},
		{0o000, 0o666, 0o777},
	} {
		t.Run(fmt.Sprintf("umask %04o", tt.umask), func(t *testing.T) {
			dir := t.TempDir()
			cfs := confined(t, dir, NewDenylist(nil))
			old := unix.Umask(tt.umask) // the process's, as runc sets it for the runner
			defer unix.Umask(old)
			if errno := cfs.Mkdir("d", 0o700); errno != 0 {
				t.Fatalf("Mkdir: %v", errno)
			}
			f, errno := cfs.OpenFile("d/f", experimentalsys.O_CREAT|experimentalsys.O_WRONLY, 0o600)
			if errno != 0 {
				t.Fatalf("create: %v", errno)
			}
			f.Close()
			if err := os.WriteFile(filepath.Join(dir, "old"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
			os.Chmod(filepath.Join(dir, "old"), 0o600)
			f, errno = cfs.OpenFile("old", experimentalsys.O_CREAT|experimentalsys.O_WRONLY|experimentalsys.O_TRUNC, 0o600)
			if errno != 0 {
				t.Fatalf("open existing: %v", errno)
			}
			f.Close()
			for p, want := range map[string]fs.FileMode{"d": tt.dir, "d/f": tt.file, "old": 0o600} {
				st, err := os.Stat(filepath.Join(dir, p))
				if err != nil {
					t.Fatal(err)
				}
				if got := st.Mode().Perm(); got != want {
					t.Errorf("%s: mode %04o, want %04o", p, got, want)
				}
			}
		})
	}
}

// TestConfinedFSTrailingSlash: a trailing slash keeps its meaning ("must be
// a directory"), as the WASI test suite checks.
func TestConfinedFSTrailingSlash(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "file"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("dir", filepath.Join(dir, "dirlink")); err != nil {
		t.Fatal(err)
	}
	deny := NewDenylist(nil)
	fs := confined(t, dir, deny)
	if _, errno := fs.OpenFile("file/", experimentalsys.O_RDONLY, 0); errno != experimentalsys.ENOTDIR {
		t.Errorf(`OpenFile("file/") errno %v, want ENOTDIR`, errno)
	}
	if errno := fs.Unlink("file/"); errno == 0 {
		t.Error(`Unlink("file/") succeeded`)
	}
	if errno := fs.Symlink("file", "newlink/"); errno == 0 {
		t.Error(`Symlink to "newlink/" succeeded`)
	}
	if st, errno := fs.Lstat("dirlink/"); errno != 0 || !st.Mode.IsDir() {
		t.Errorf(`Lstat("dirlink/") = %v, %v; want the directory it links to`, st.Mode, errno)
	}
	f, errno := fs.OpenFile("dir/", experimentalsys.O_RDONLY|experimentalsys.O_DIRECTORY, 0)
	if errno != 0 {
		t.Fatalf(`OpenFile("dir/"): %v`, errno)
	}
	f.Close()
}

// TestConfinedFSStdio: /dev/stdin, /dev/stdout, /dev/stderr and /dev/fd/0
// to 2 reach the runner's own stdio (the guest's), though they lead into
// procfs; /dev/fd/3 and up, and procfs itself, stay refused.
func TestConfinedFSStdio(t *testing.T) {
	mounts, err := mountinfo.GetMounts(nil)
	if err != nil {
		t.Skip("no /proc here")
	}
	cfs := confined(t, "/", NewDenylist(mounts))
	for _, tt := range []struct {
		path string
		fd   *os.File
	}{
		{"dev/stdin", os.Stdin}, {"dev/stdout", os.Stdout}, {"dev/stderr", os.Stderr},
		{"dev/fd/0", os.Stdin}, {"dev/fd/1", os.Stdout}, {"dev/fd/2", os.Stderr},
		{"dev/../dev/stdout", os.Stdout},
	} {
		var want unix.Stat_t
		if err := unix.Fstat(int(tt.fd.Fd()), &want); err != nil {
			t.Fatal(err)
		}
		st, errno := cfs.Stat(tt.path)
		if errno != 0 || st.Dev != uint64(want.Dev) || st.Ino != want.Ino {
			t.Errorf("Stat(%q) = dev %d ino %d, %v; want the runner's descriptor %d (dev %d ino %d)", tt.path, st.Dev, st.Ino, errno, tt.fd.Fd(), want.Dev, want.Ino)
		}
		flag := experimentalsys.O_RDONLY
		if tt.fd != os.Stdin {
			flag = experimentalsys.O_WRONLY
		}
		f, errno := cfs.OpenFile(tt.path, flag, 0)
		if errno != 0 {
			t.Errorf("OpenFile(%q): %v", tt.path, errno)
			continue
		}
		if st, errno := f.Stat(); errno != 0 || st.Ino != want.Ino {
			t.Errorf("OpenFile(%q) opened ino %d, %v; want %d", tt.path, st.Ino, errno, want.Ino)
		}
		f.Close()
	}
	for _, p := range []string{"dev/fd/3", "proc/self/fd/1", "dev/fd"} {
		if _, errno := cfs.OpenFile(p, experimentalsys.O_RDONLY, 0); errno != experimentalsys.EACCES {
			t.Errorf("OpenFile(%q) errno %v, want EACCES", p, errno)
		}
	}
}

// TestConfinedFSSwapAfterCheck: a directory swapped for a symlink to a host
// directory after an operation checked its path, or a file swapped for a
// symlink to a host file, fails the operation; it never reaches the host
// file. Both ways of pinning a directory are run.
func TestConfinedFSSwapAfterCheck(t *testing.T) {
	type op struct {
		name   string
		follow bool // the operation follows its last component
		do     func(c *ConfinedFS) experimentalsys.Errno
	}
	ops := []op{
		{"open", true, func(c *ConfinedFS) experimentalsys.Errno {
			f, errno := c.OpenFile("a/f", experimentalsys.O_RDWR, 0)
			if errno == 0 {
				f.Write([]byte("WRITTEN"))
				f.Close()
			}
			return errno
		}},
		{"create", false, func(c *ConfinedFS) experimentalsys.Errno {
			f, errno := c.OpenFile("a/new", experimentalsys.O_CREAT|experimentalsys.O_WRONLY, 0o644)
			if errno == 0 {
				f.Close()
			}
			return errno
		}},
		{"stat", true, func(c *ConfinedFS) experimentalsys.Errno { _, errno := c.Stat("a/f"); return errno }},
		{"lstat", false, func(c *ConfinedFS) experimentalsys.Errno { _, errno := c.Lstat("a/f"); return errno }},
		{"chmod", true, func(c *ConfinedFS) experimentalsys.Errno { return c.Chmod("a/f", 0o777) }},
		{"utimens", true, func(c *ConfinedFS) experimentalsys.Errno { return c.Utimens("a/f", 0, 0) }},
		{"mkdir", false, func(c *ConfinedFS) experimentalsys.Errno { return c.Mkdir("a/new", 0o755) }},
		{"unlink", false, func(c *ConfinedFS) experimentalsys.Errno { return c.Unlink("a/f") }},
		{"rmdir", false, func(c *ConfinedFS) experimentalsys.Errno { return c.Rmdir("a/d") }},
		{"rename from", false, func(c *ConfinedFS) experimentalsys.Errno { return c.Rename("a/f", "moved") }},
		{"rename to", false, func(c *ConfinedFS) experimentalsys.Errno { return c.Rename("g", "a/new") }},
		{"link", false, func(c *ConfinedFS) experimentalsys.Errno { return c.Link("a/f", "linked") }},
		{"symlink", false, func(c *ConfinedFS) experimentalsys.Errno { return c.Symlink("x", "a/new") }},
		{"readlink", false, func(c *ConfinedFS) experimentalsys.Errno { _, errno := c.Readlink("a/l"); return errno }},
		{"map", true, func(c *ConfinedFS) experimentalsys.Errno {
			if _, err := c.mapFile("/a/f"); err != nil {
				return experimentalsys.EIO
			}
			return 0
		}},
	}
	// host is what a swap points to: every file an operation could touch
	// through it, and their state, which must not change.
	host := t.TempDir()
	for _, p := range []string{"f", "d/keep"} {
		os.MkdirAll(filepath.Join(host, filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(host, p), []byte("HOST"), 0o600)
	}
	os.Symlink("x", filepath.Join(host, "l"))
	hostState := func() string {
		var b strings.Builder
		filepath.WalkDir(host, func(p string, d fs.DirEntry, err error) error {
			fi, _ := os.Lstat(p)
			data, _ := os.ReadFile(p)
			fmt.Fprintf(&b, "%s %v %d %q\n", p, fi.Mode(), fi.ModTime().UnixNano(), data)
			return nil
		})
		return b.String()
	}
	before := hostState()
	for _, walk := range []bool{false, true} {
		for _, swapFile := range []bool{false, true} {
			for _, o := range ops {
				if swapFile && !o.follow {
					continue // only a followed last component can be swapped for a symlink
				}
				name := fmt.Sprintf("%s/walk=%v/swap file=%v", o.name, walk, swapFile)
				t.Run(name, func(t *testing.T) {
					dir := t.TempDir()
					os.MkdirAll(filepath.Join(dir, "a", "d"), 0o755)
					os.WriteFile(filepath.Join(dir, "a", "f"), []byte("inside"), 0o644)
					os.WriteFile(filepath.Join(dir, "g"), []byte("g"), 0o644)
					os.Symlink("x", filepath.Join(dir, "a", "l"))
					c := confined(t, dir, NewDenylist(nil))
					c.noOpenat2 = walk
					c.checked = func() {
						if swapFile {
							os.Remove(filepath.Join(dir, "a", "f"))
							os.Symlink(filepath.Join(host, "f"), filepath.Join(dir, "a", "f"))
						} else {
							os.Rename(filepath.Join(dir, "a"), filepath.Join(dir, "a.dir"))
							os.Symlink(host, filepath.Join(dir, "a"))
						}
						c.checked = nil
					}
					errno := o.do(c)
					if errno == 0 {
						t.Errorf("succeeded through the swapped symlink")
					}
					if after := hostState(); after != before {
						t.Fatalf("host files changed:\n%s\nwere:\n%s", after, before)
					}
				})
			}
		}
	}
}

// BenchmarkConfinedFS: opening and stating a file three directories deep,
// through wazero's own DirFS (no confinement: the baseline) and through
// ConfinedFS (check, pin, operate).
func BenchmarkConfinedFS(b *testing.B) {
	dir := b.TempDir()
	os.MkdirAll(filepath.Join(dir, "usr", "share", "doc"), 0o755)
	os.WriteFile(filepath.Join(dir, "usr", "share", "doc", "f"), []byte("x"), 0o644)
	c, err := NewConfinedFS(dir, NewDenylist(nil))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	for _, fsys := range []struct {
		name string
		fs   experimentalsys.FS
	}{{"DirFS", sysfs.DirFS(dir)}, {"ConfinedFS", c}} {
		b.Run(fsys.name+"/open", func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				f, errno := fsys.fs.OpenFile("usr/share/doc/f", experimentalsys.O_RDONLY, 0)
				if errno != 0 {
					b.Fatal(errno)
				}
				f.Close()
			}
		})
		b.Run(fsys.name+"/stat", func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if _, errno := fsys.fs.Stat("usr/share/doc/f"); errno != 0 {
					b.Fatal(errno)
				}
			}
		})
	}
}
