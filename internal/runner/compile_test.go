package runner

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// compileInto compiles bin into a fresh wazero cache directory, as the
// compile helper does, and returns the directory and the one file in it.
func compileInto(t *testing.T, bin []byte) (string, string) {
	t.Helper()
	dir := t.TempDir()
	if err := Compile(context.Background(), bin, dir); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "wazero-*", "*"))
	if len(files) != 1 {
		t.Fatalf("compile wrote %v, want one file", files)
	}
	return dir, files[0]
}

// TestRunFromCache: the runner loads what the helper compiled and, if the
// compiled code is unusable, says so on stderr and compiles instead.
func TestRunFromCache(t *testing.T) {
	bin := exitWith(7)
	tests := []struct {
		name     string
		damage   func(t *testing.T, file string)
		wantWarn bool
	}{
		{"intact", func(*testing.T, string) {}, false},
		{"truncated", func(t *testing.T, f string) { os.Truncate(f, 20) }, true},
		{"garbage", func(t *testing.T, f string) { os.WriteFile(f, []byte("not compiled code at all"), 0o644) }, true},
		{"empty", func(t *testing.T, f string) { os.Truncate(f, 0) }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, file := compileInto(t, bin)
			tt.damage(t, file)
			// Read-only, as in a container: a miss must not need a write.
			os.Chmod(file, 0o444)
			status, _, stderr := runModule(t, bin, Config{Cache: dir}, nil, nil)
			if status != 7 {
				t.Errorf("status %d, want 7 (stderr %q)", status, stderr)
			}
			if warned := strings.Contains(stderr, "unusable, compiling"); warned != tt.wantWarn {
				t.Errorf("stderr %q; want a warning: %v", stderr, tt.wantWarn)
			}
		})
	}
}

func TestEngineID(t *testing.T) {
	id, err := EngineID()
	if err != nil {
		t.Fatal(err)
	}
	// Test binaries carry no module versions: the binary stands in.
	for _, want := range []string{"wazero ", "compiler", "linux/", "cpu "} {
		if !strings.Contains(id, want) {
			t.Errorf("EngineID %q lacks %q", id, want)
		}
	}
}
