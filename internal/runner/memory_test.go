package runner

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestMmapMemory(t *testing.T) {
	const page = 65536
	m := mmapAllocator{}.Allocate(page, 64*page)
	if _, ok := m.(*mmapMemory); !ok {
		t.Fatalf("Allocate = %T, want an mmap reservation", m)
	}
	defer m.Free()
	buf := m.Reallocate(page)
	if len(buf) != page {
		t.Fatalf("len %d", len(buf))
	}
	buf[0], buf[page-1] = 1, 2
	grown := m.Reallocate(10*page + 100)
	if len(grown) != 10*page+100 || unsafe.SliceData(grown) != unsafe.SliceData(buf) {
		t.Fatal("growing moved the memory")
	}
	if grown[0] != 1 || grown[page-1] != 2 || grown[10*page+99] != 0 {
		t.Fatal("growing lost or dirtied contents")
	}
	grown[10*page+99] = 3 // committed, so writable
	if again := m.Reallocate(10 * page); len(again) != 10*page {
		t.Fatal("Reallocate to a smaller size")
	}
	if m.Reallocate(64*page+1) != nil {
		t.Error("grew past the maximum")
	}
	if m.Reallocate(64*page) == nil {
		t.Error("could not grow to the maximum")
	}
}

// TestMmapMemoryLazy: a large commit is populated up to populateMax only;
// the rest costs the process nothing until it is touched, and can be.
func TestMmapMemoryLazy(t *testing.T) {
	const size = 1 << 30
	m := mmapAllocator{}.Allocate(size, size)
	defer m.Free()
	before := procRSS(t)
	buf := m.Reallocate(size)
	if len(buf) != size {
		t.Fatalf("len %d", len(buf))
	}
	if grew := procRSS(t) - before; grew > 256<<20 {
		t.Errorf("committing 1 GiB grew the RSS by %d MiB; want at most populateMax (%d MiB) and some", grew>>20, populateMax>>20)
	}
	buf[size-1] = 1 // committed: writable
	if buf[size-1] != 1 {
		t.Error("the end of the memory did not take a write")
	}
}

// procRSS is this process's resident set size.
func procRSS(t *testing.T) int64 {
	t.Helper()
	data, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Fatal(err)
	}
	var pages, rss int64
	if _, err := fmt.Sscan(string(data), &pages, &rss); err != nil {
		t.Fatal(err)
	}
	return rss * int64(os.Getpagesize())
}

func TestHeapMemory(t *testing.T) {
	m := &heapMemory{max: 1000}
	b := m.Reallocate(10)
	b[9] = 7
	if b = m.Reallocate(500); len(b) != 500 || b[9] != 7 {
		t.Fatalf("grow: len %d, contents %v", len(b), b[9])
	}
	if m.Reallocate(1001) != nil {
		t.Error("grew past the maximum")
	}
}

func TestMapFile(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "mod.wasm"), []byte("\x00asm module bytes"), 0o644)
	os.WriteFile(filepath.Join(dir, "secret"), []byte("denied"), 0o644)
	os.WriteFile(filepath.Join(dir, "empty"), nil, 0o644)
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	os.Symlink("../../../../../../../etc/hostname", filepath.Join(dir, "escape"))
	os.Symlink("/mod.wasm", filepath.Join(dir, "link"))
	deny := NewDenylist(nil)
	var st unix.Stat_t
	unix.Stat(filepath.Join(dir, "secret"), &st)
	deny.DenyFile(st.Dev, st.Ino, "secret")
	c := confined(t, dir, deny)
	tests := []struct {
		path, want string
		wantErr    bool
	}{
		{"/mod.wasm", "\x00asm module bytes", false},
		{"/link", "\x00asm module bytes", false}, // absolute symlinks stay inside the root
		{"/empty", "", false},
		{"/secret", "", true},
		{"/sub", "", true},
		{"/missing", "", true},
		{"/escape", "", true}, // resolves inside the root, where /etc/hostname does not exist
	}
	for _, tt := range tests {
		got, err := c.mapFile(tt.path)
		if (err != nil) != tt.wantErr || string(got) != tt.want {
			t.Errorf("mapFile(%s) = %q, %v; want %q, error %v", tt.path, got, err, tt.want, tt.wantErr)
		}
	}
}
