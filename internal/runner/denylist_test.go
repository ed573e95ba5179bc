package runner

import (
	"strings"
	"testing"

	"github.com/moby/sys/mountinfo"
	"github.com/tetratelabs/wazero/sys"
	"golang.org/x/sys/unix"
)

const sampleMountinfo = `21 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
22 21 0:50 / /var/lib/docker rw - overlay overlay rw,lowerdir=/a,upperdir=/b,workdir=/c
36 25 0:5 / /proc rw,nosuid - proc proc rw
40 25 0:21 / /sys ro - sysfs sysfs ro
41 40 0:26 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate
42 40 0:27 / /sys/fs/cgroup/memory rw shared:10 master:3 - cgroup cgroup rw,memory
43 40 0:7 / /sys/kernel/security rw - securityfs securityfs rw
44 40 0:12 / /sys/kernel/debug rw - debugfs debugfs rw
45 44 0:13 / /sys/kernel/debug/tracing rw - tracefs tracefs rw
46 40 0:28 / /sys/fs/bpf rw - bpf bpf rw,mode=700
47 40 0:29 / /sys/kernel/config rw - configfs configfs rw
48 40 0:30 / /sys/fs/fuse/connections rw - fusectl fusectl rw
49 40 0:31 / /sys/fs/pstore rw - pstore pstore rw
50 40 0:32 / /sys/firmware/efi/efivars rw - efivarfs efivarfs rw
51 36 0:33 / /proc/sys/fs/binfmt_misc rw - binfmt_misc binfmt_misc rw
52 21 0:34 / /dev rw,nosuid - tmpfs tmpfs rw,mode=755
53 52 0:35 / /dev/pts rw - devpts devpts rw
54 52 0:36 / /dev/mqueue rw - mqueue mqueue rw
55 21 259:3 / /boot rw - vfat /dev/nvme0n1p3 rw
56 21 0:5 / /run/other-proc rw - proc proc rw
57 21 253:1048575 / /big rw - ext4 /dev/mapper/big rw
58 21 0:37 /sub /x\040y rw - tmpfs tmpfs rw
`

func TestDenylistFromMountinfo(t *testing.T) {
	d := NewDenylist(parseMounts(t, sampleMountinfo))
	tests := []struct {
		major, minor uint32
		fstype       string // "" if allowed
	}{
		{8, 1, ""},
		{0, 50, ""},
		{0, 5, "proc"},
		{0, 21, "sysfs"},
		{0, 26, "cgroup2"},
		{0, 27, "cgroup"},
		{0, 7, "securityfs"},
		{0, 12, "debugfs"},
		{0, 13, "tracefs"},
		{0, 28, "bpf"},
		{0, 29, "configfs"},
		{0, 30, "fusectl"},
		{0, 31, "pstore"},
		{0, 32, "efivarfs"},
		{0, 33, "binfmt_misc"},
		{0, 34, ""},
		{0, 35, ""},
		{0, 36, ""},
		{259, 3, ""},
		{253, 1048575, ""},
		{0, 37, ""},
		{0, 6, ""},  // not mounted at all
		{5, 0, ""},  // major and minor swapped
		{21, 0, ""}, // of /sys
	}
	for _, tt := range tests {
		dev := unix.Mkdev(tt.major, tt.minor)
		got := d.denied(sys.Stat_t{Dev: dev, Ino: 1})
		if got != (tt.fstype != "") {
			t.Errorf("device %d:%d denied = %v, want %v", tt.major, tt.minor, got, tt.fstype != "")
		}
		if tt.fstype != "" && d.devs[dev] != tt.fstype {
			t.Errorf("device %d:%d recorded as %q, want %q", tt.major, tt.minor, d.devs[dev], tt.fstype)
		}
	}
	if len(d.devs) != 13 {
		t.Errorf("%d devices denied, want 13: %v", len(d.devs), d.devs)
	}
	if len(d.files) != 0 {
		t.Errorf("files denied from mountinfo alone: %v", d.files)
	}
}

func TestDenylistEmpty(t *testing.T) {
	// No mounts, no denied devices.
	d := NewDenylist(nil)
	if d.denied(sys.Stat_t{Dev: unix.Mkdev(0, 5), Ino: 1}) {
		t.Error("an empty Denylist denies a file")
	}
}

// confinedDir lays out a temp dir and returns it with a ConfinedFS over it
// that denies the file "secret" and the directory "secretdir" by inode.
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

// parseMounts parses a mountinfo table as the runner does.
func parseMounts(t *testing.T, table string) []*mountinfo.Info {
	t.Helper()
	mounts, err := mountinfo.GetMountsFromReader(strings.NewReader(table), nil)
	if err != nil {
		t.Fatal(err)
	}
	return mounts
}
