package runner

import (
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestFindMemoryCgroup(t *testing.T) {
	const (
		// What runc mounts in a container on a cgroup v1 host: the
		// container's own cgroup at /sys/fs/cgroup/<controller>.
		v1Container = `1 0 8:1 / / rw - overlay overlay rw
30 1 0:60 / /sys/fs/cgroup ro - tmpfs tmpfs rw
31 30 0:32 /default/c1 /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory
32 30 0:29 /default/c1 /sys/fs/cgroup/cpu,cpuacct ro - cgroup cgroup rw,cpu,cpuacct
33 30 0:38 / /sys/fs/cgroup/unified ro - cgroup2 cgroup2 rw
`
		v1Cgroup = "4:memory:/default/c1\n2:cpu,cpuacct:/default/c1\n0::/\n"
		// A v1 host's own view: the hierarchy's root mounted.
		v1Host = `35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`
		// cgroup v2 with a cgroup namespace (what runc sets up on a
		// unified host): the container's cgroup is the mount's root.
		v2NS       = "40 1 0:40 / /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
		v2NSCgroup = "0::/\n"
		// cgroup v2 without a namespace: the host's hierarchy.
		v2Host       = "40 1 0:40 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
		v2HostCgroup = "0::/kubepods/pod1/c1\n"
	)
	tests := []struct {
		name, cgroup, mountinfo string
		want                    *memoryCgroup
	}{
		{"v1 in a container", v1Cgroup, v1Container, v1Memory("/sys/fs/cgroup/memory")},
		{"v1 host view", v1Cgroup, v1Host, v1Memory("/sys/fs/cgroup/memory/default/c1")},
		{"v2 with a cgroup namespace", v2NSCgroup, v2NS, v2Memory("/sys/fs/cgroup")},
		{"v2 host view", v2HostCgroup, v2Host, v2Memory("/sys/fs/cgroup/kubepods/pod1/c1")},
		{"v1 cgroup of another mount", "4:memory:/other\n", v1Container, nil},
		{"no cgroup mounts", v1Cgroup, "1 0 8:1 / / rw - overlay overlay rw\n", nil},
		{"escaped mount point", "0::/a\n", `40 1 0:40 / /mnt/cg\040x rw - cgroup2 cgroup2 rw` + "\n", v2Memory("/mnt/cg x/a")},
		{"root prefix is not a path prefix", "4:memory:/default/c10\n", v1Container, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := findMemoryCgroup(strings.NewReader(tt.cgroup), parseMounts(t, tt.mountinfo))
			if err != nil {
				t.Fatal(err)
			}
			if (got == nil) != (tt.want == nil) || (got != nil && *got != *tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// fakeCgroup writes a memory cgroup's files in a temporary directory.
type fakeCgroup struct {
	t   *testing.T
	dir string
	cg  *memoryCgroup
}

func newFakeCgroup(t *testing.T, v2 bool) *fakeCgroup {
	dir := t.TempDir()
	f := &fakeCgroup{t: t, dir: dir, cg: v1Memory(dir)}
	if v2 {
		f.cg = v2Memory(dir)
	}
	return f
}

// set writes the limit and what is used: the usage is used plus 3 MiB of
// file pages (which the budget does not count), as the kernel would show
// it.
func (f *fakeCgroup) set(limit string, used uint64) {
	const file = 3 << 20
	os.WriteFile(f.cg.limitFile, []byte(limit+"\n"), 0o644)
	os.WriteFile(f.cg.usageFile, []byte(strconv.FormatUint(used+file, 10)+"\n"), 0o644)
	stat := "cache 100\nrss 1\n" + f.cg.fileKeys[0] + " " + strconv.Itoa(file-4096) + "\nshmem 0\n" + f.cg.fileKeys[1] + " 4096\n"
	if err := os.WriteFile(f.cg.statFile, []byte(stat), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func u(n uint64) string { return strconv.FormatUint(n, 10) }

// TestMemoryBudget: the fake cgroup's memory in use is set as the
// kernel's would be, committed pages included.
func TestMemoryBudget(t *testing.T) {
	defer debug.SetMemoryLimit(math.MaxInt64)
	const mib = 1 << 20
	for _, v2 := range []bool{false, true} {
		name := map[bool]string{false: "v1", true: "v2"}[v2]
		t.Run(name, func(t *testing.T) {
			f := newFakeCgroup(t, v2)
			f.set(u(64*mib), 20*mib)
			b := &memoryBudget{cg: f.cg, margin: 8 * mib}
			b.refresh()
			if !b.allow(30*mib, 30*mib) {
				t.Fatal("20 + 30 + 8 MiB refused under 64 MiB")
			}
			if msg, oom := b.outOfMemory(); oom {
				t.Errorf("out of memory with no grow refused: %q", msg)
			}
			var tr Trace
			if b.traced(&tr); tr.GrownTo != 50*mib || tr.Refused != 0 {
				t.Errorf("traced grown to %d MiB, %d refused; want 50 MiB, 0", tr.GrownTo/mib, tr.Refused)
			}
			// What the runner took loading the module is read as the
			// guest starts, however recent the last reading.
			f.set(u(64*mib), 50*mib)
			if !b.allow(mib, mib) {
				t.Fatal("a grow within the last reading refused")
			}
			b.started()
			if b.allow(7*mib, 7*mib) {
				t.Fatal("50 + 7 + 8 MiB allowed under 64 MiB once the guest started")
			}
			b.refused = 0
			b.release(mib) // the grow allowed above
			b.readAt = time.Time{}
			f.set(u(64*mib), 50*mib)
			if b.allow(7*mib, 7*mib) {
				t.Fatal("50 + 7 + 8 MiB allowed under 64 MiB")
			}
			want := OutOfMemory + "the guest failed after 1 memory.grow(s) refused at the container's memory limit (64 MiB)"
			if msg, oom := b.outOfMemory(); !oom || msg != want {
				t.Errorf("after a refused grow: %q, %v; want %q", msg, oom, want)
			}
			if !b.allow(6*mib, 6*mib) {
				t.Fatal("50 + 6 + 8 MiB refused")
			}
			// A raised limit is read as soon as a grow does not fit.
			f.set(u(128*mib), 56*mib)
			if !b.allow(32*mib, 32*mib) {
				t.Fatal("a raised limit was not seen")
			}
			// A lowered limit is seen once the reading is old.
			f.set(u(100*mib), 88*mib)
			b.readAt = time.Now().Add(-time.Second)
			if b.allow(8*mib, 8*mib) {
				t.Fatal("a lowered limit was not seen")
			}
			b.release(40 * mib)
			if b.committed != 28*mib {
				t.Errorf("committed %d MiB after release, want 28", b.committed/mib)
			}
			// No limit.
			unlimitedValue := "9223372036854771712"
			if v2 {
				unlimitedValue = "max"
			}
			f.set(unlimitedValue, 500*mib)
			b.readAt = time.Time{}
			if !b.allow(1<<40, 1<<40) {
				t.Error("refused without a limit")
			}
		})
	}
	// Garbage in the files: the kernel enforces the limit; the budget
	// does not block the guest.
	f := newFakeCgroup(t, false)
	f.set("garbage", 0)
	b := &memoryBudget{cg: f.cg, margin: 8 * mib}
	if !b.allow(mib, mib) {
		t.Error("an unreadable limit refused a grow")
	}
	var none *memoryBudget
	if !none.allow(1<<40, 1<<40) {
		t.Error("a nil budget refused")
	}
	if _, oom := none.outOfMemory(); oom {
		t.Error("out of memory without a budget")
	}
}

func TestMmapMemoryBudget(t *testing.T) {
	defer debug.SetMemoryLimit(math.MaxInt64)
	const page = 65536
	f := newFakeCgroup(t, false)
	f.set(u(100*page), 10*page)
	b := &memoryBudget{cg: f.cg, margin: 10 * page}
	b.refresh()
	m := mmapAllocator{b, false}.Allocate(page, 1000*page)
	defer m.Free()
	if m.Reallocate(90*page) == nil { // the first allocation is never refused
		t.Fatal("first allocation refused")
	}
	f.set(u(100*page), 100*page)
	if m.Reallocate(91*page) != nil {
		t.Fatal("grew past the budget")
	}
	f.set(u(200*page), 100*page)
	if m.Reallocate(150*page) == nil {
		t.Fatal("refused after the limit was raised")
	}
	if b.committed != 150*page {
		t.Errorf("committed %d pages, want 150", b.committed/page)
	}
	m.Free()
	if b.committed != 0 {
		t.Errorf("committed %d after Free", b.committed)
	}
}

// TestCheckLoad: loading a module's compiled code is checked against the
// limit before it is mapped, with a message naming the sizes.
func TestCheckLoad(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name          string
		limit         string
		used          uint64
		module, code  uint64
		wantErr       bool
		wantInMessage []string
	}{
		{"fits", "104857600", 40 * mib, 10 * mib, 36 * mib, false, nil},
		{"no limit", "max", 900 * mib, 10 * mib, 36 * mib, false, nil},
		{"beside a server", "100663296", 75 * mib, 10 * mib, 36 * mib, true,
			[]string{"at least 46 MiB", "36 MiB of compiled code", "memory limit (96 MiB)", "the 75 MiB the container uses", "margin of 8 MiB"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeCgroup(t, true)
			f.set(tt.limit, tt.used)
			b := &memoryBudget{cg: f.cg, margin: 8 * mib}
			err := b.checkLoad(tt.module, tt.code)
			if (err != nil) != tt.wantErr {
				t.Fatalf("checkLoad: %v, want error %v", err, tt.wantErr)
			}
			for _, s := range tt.wantInMessage {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("message %q lacks %q", err, s)
				}
			}
		})
	}
	if err := (*memoryBudget)(nil).checkLoad(1<<40, 1<<40); err != nil {
		t.Errorf("no budget: %v", err)
	}
}
