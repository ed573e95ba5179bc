package runner

import (
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
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
	c := DirFS(dir, deny).(*ConfinedFS)
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
	if _, err := NewConfinedFS(c.FS, deny).mapFile("/mod.wasm"); err != experimentalsys.ENOSYS {
		t.Errorf("mapFile without a host directory: %v", err)
	}
}
