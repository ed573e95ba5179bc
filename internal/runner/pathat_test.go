package runner

import (
	"os"
	"path/filepath"
	"testing"
)

// openAtAndExit is a module whose _start opens directory dir from the
// root (fd 3), then path relative to that descriptor (with path_open, or
// path_filestat_get if stat), and exits with the second call's WASI errno.
func openAtAndExit(dir, path string, stat bool) []byte {
	data := make([]byte, 128)
	copy(data[64:], dir)
	data = append(data, path...)
	impStat := wasmImport{"wasi_snapshot_preview1", "path_filestat_get", []byte{wI32, wI32, wI32, wI32, wI32}, []byte{wI32}}
	second := ins(
		i32c(0), opI32Load, i32c(1), i32c(128), i32c(int32(len(path))), i32c(0), // dir fd, follow, path, oflags
		i64c(2), i64c(0), i32c(0), i32c(4), // rights, inherited, fdflags, new fd at 4
		call(1),
	)
	if stat {
		second = ins(i32c(0), opI32Load, i32c(1), i32c(128), i32c(int32(len(path))), i32c(256), call(2))
	}
	return wasmMod{
		imports: []wasmImport{impProcExit, impPathOpen, impStat},
		funcs: []wasmFunc{{export: "_start", body: ins(
			i32c(3), i32c(1), i32c(64), i32c(int32(len(dir))), i32c(2), // root, follow, dir, O_DIRECTORY
			i64c(2), i64c(0), i32c(0), i32c(0), // dir fd at 0
			call(1), opDrop,
			second, call(0),
		)}},
		memory: true,
		data:   data,
	}.bytes()
}

// TestRunPathAt: a path relative to a directory descriptor may go above
// it (".."), as on Linux: ".." is resolved from where the directory is
// (its symlinks resolved), stops at the root, and what it reaches is
// confined as any other path. An absolute path is refused (EPERM), as WASI
// requires.
func TestRunPathAt(t *testing.T) {
	const (
		errnoSuccess = 0
		errnoAcces   = 2
		errnoNoent   = 44
		errnoPerm    = 63
	)
	setup := func(dir string) {
		for _, d := range []string{"d/e", "x/y"} {
			if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for name, data := range map[string]string{"a.txt": "a", "x/b.txt": "b", "secret": "s"} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Symlink("x/y", filepath.Join(dir, "l")); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name, dir, path string
		stat            bool
		want            int
	}{
		{"below the directory, as before", "d", "e", false, errnoSuccess},
		{"parent", "d", "../a.txt", false, errnoSuccess},
		{"parent's parent", "d/e", "../../a.txt", false, errnoSuccess},
		{"above the root stops at the root", "d", "../../../../a.txt", false, errnoSuccess},
		{"the root itself", "d", "..", false, errnoSuccess},
		{"missing", "d", "../nope", false, errnoNoent},
		{"absolute", "d/e", "/a.txt", false, errnoPerm},
		{"absolute from the root descriptor", ".", "/a.txt", false, errnoPerm},
		{"absolute, climbing", "d", "/../a.txt", false, errnoPerm},
		{"from the root descriptor", ".", "../a.txt", false, errnoSuccess},
		{"from a symlinked directory: where it points", "l", "../b.txt", false, errnoSuccess},
		{"from a symlinked directory: not where its name is", "l", "../a.txt", false, errnoNoent},
		{"stat of the parent", "d/e", "..", true, errnoSuccess},
		{"stat above", "d", "../x/b.txt", true, errnoSuccess},
		{"denied file above", "d", "../secret", false, errnoAcces},
		{"denied file, absolute", "d", "/secret", true, errnoPerm},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, stderr := runDenyingSecret(t, openAtAndExit(tt.dir, tt.path, tt.stat), setup)
			if status != tt.want {
				t.Errorf("at %q: %q: errno %d, want %d (stderr %q)", tt.dir, tt.path, status, tt.want, stderr)
			}
		})
	}
}

func TestFromRoot(t *testing.T) {
	resolve := func(p string) string {
		if p == "l" {
			return "x/y"
		}
		return p
	}
	tests := []struct {
		dir, name string
		physical  bool
		want      string
	}{
		{"d", "../a", true, "a"},
		{"d/e", "../../../a", true, "a"},
		{".", "..", true, "."},
		{"d", "/x/", true, "x/"},
		{"l", "../b", true, "x/b"},
		{"l", "../b", false, "b"},
		{"d", "e/", false, "d/e/"},
	}
	for _, tt := range tests {
		if got := fromRoot(tt.dir, tt.name, resolve, tt.physical); got != tt.want {
			t.Errorf("fromRoot(%q, %q, physical %v) = %q, want %q", tt.dir, tt.name, tt.physical, got, tt.want)
		}
	}
}

func TestFreeSpan(t *testing.T) {
	tests := []struct {
		name   string
		busy   []span
		size   uint32
		mem    uint32
		want   uint32
		wantOK bool
	}{
		{"nothing busy", nil, 10, 100, 0, true},
		{"after the path", []span{{0, 8}}, 10, 100, 8, true},
		{"between", []span{{0, 8}, {30, 4}}, 10, 100, 8, true},
		{"gap too small", []span{{0, 8}, {12, 4}}, 10, 100, 16, true},
		{"no room", []span{{0, 95}}, 10, 100, 0, false},
		{"huge pointer", []span{{0xffffffff, 0xffffffff}}, 10, 100, 0, true},
	}
	for _, tt := range tests {
		got, ok := freeSpan(tt.busy, tt.size, tt.mem)
		if ok != tt.wantOK || ok && got != tt.want {
			t.Errorf("%s: freeSpan = %d, %v; want %d, %v", tt.name, got, ok, tt.want, tt.wantOK)
		}
	}
}
