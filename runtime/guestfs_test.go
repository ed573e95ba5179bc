package runtime

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moby/sys/mountinfo"
	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/experimental/sysfs"
	"golang.org/x/sys/unix"
)

func TestNewDenylist(t *testing.T) {
	info := `22 1 0:21 / / rw - overlay overlay rw
23 22 0:5 / /proc rw,nosuid - proc proc rw
24 22 0:22 / /sys ro - sysfs sysfs ro
25 24 0:23 / /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory
26 22 0:24 / /dev rw - tmpfs tmpfs rw
27 23 0:25 / /proc/sys/fs/binfmt_misc rw - binfmt_misc binfmt_misc rw
`
	d := NewDenylist(parseMounts(t, info))
	for _, tt := range []struct {
		major, minor uint32
		denied       bool
	}{{0, 21, false}, {0, 5, true}, {0, 22, true}, {0, 23, true}, {0, 24, false}, {0, 25, true}} {
		if _, got := d.devs[unix.Mkdev(tt.major, tt.minor)]; got != tt.denied {
			t.Errorf("device %d:%d denied = %v, want %v", tt.major, tt.minor, got, tt.denied)
		}
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
	fs := NewConfinedFS(sysfs.DirFS("/"), deny)
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
	fs := NewConfinedFS(sysfs.DirFS(dir), deny)
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
	fs := NewConfinedFS(sysfs.DirFS(dir), deny)
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
