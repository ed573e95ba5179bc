package runner

import (
	"github.com/moby/sys/mountinfo"
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

// NewDenylist denies every mount of a kernel interface file system among
// mounts (the runner's mount table, /proc/self/mountinfo).
func NewDenylist(mounts []*mountinfo.Info) *Denylist {
	d := &Denylist{devs: map[uint64]string{}, files: map[fileID]string{}}
	for _, m := range mounts {
		if deniedFSTypes[m.FSType] {
			d.devs[unix.Mkdev(uint32(m.Major), uint32(m.Minor))] = m.FSType
		}
	}
	return d
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
