package runner

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
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
// compiled code is unusable, says so on stderr and compiles instead,
// without writing to the cache directory (read-only in a container).
func TestRunFromCache(t *testing.T) {
	bin := exitWith(7)
	tests := []struct {
		name   string
		damage func(t *testing.T, file string)
		want   string // Trace.Code
	}{
		{"intact", func(*testing.T, string) {}, CodeHit},
		{"truncated", func(t *testing.T, f string) { os.Truncate(f, 20) }, CodeCompiled},
		{"garbage", func(t *testing.T, f string) { os.WriteFile(f, []byte("not compiled code at all"), 0o644) }, CodeCompiled},
		{"empty", func(t *testing.T, f string) { os.Truncate(f, 0) }, CodeCompiled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, file := compileInto(t, bin)
			tt.damage(t, file)
			before := dirState(t, dir)
			status, _, stderr := runModule(t, bin, Config{Cache: dir, CacheResult: CodeHit, Trace: true}, nil, nil)
			if status != 7 {
				t.Errorf("status %d, want 7 (stderr %q)", status, stderr)
			}
			if code := traceCode(t, stderr); code != tt.want {
				t.Errorf("compiled code from %q, want %q (stderr %q)", code, tt.want, stderr)
			}
			if warned := strings.Contains(stderr, "unusable, compiling"); warned != (tt.want == CodeCompiled) {
				t.Errorf("stderr %q; want a warning: %v", stderr, tt.want == CodeCompiled)
			}
			if after := dirState(t, dir); !maps.Equal(before, after) {
				t.Errorf("the runner wrote to the cache directory: %v, then %v", before, after)
			}
		})
	}
}

// traceCode returns Trace.Code from the trace line in stderr.
func traceCode(t *testing.T, stderr string) string {
	t.Helper()
	for _, l := range strings.Split(stderr, "\n") {
		if rest, ok := strings.CutPrefix(l, TracePrefix); ok {
			var tr Trace
			if err := json.Unmarshal([]byte(rest), &tr); err != nil {
				t.Fatal(err)
			}
			return tr.Code
		}
	}
	t.Fatalf("no trace in %q", stderr)
	return ""
}

// dirState maps every file under dir to its size and SHA-256.
func dirState(t *testing.T, dir string) map[string]string {
	t.Helper()
	state := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		state[p] = fmt.Sprintf("%d %x", len(b), sha256.Sum256(b))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return state
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
