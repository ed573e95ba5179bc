package cgroups

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestDirs lays out a fake v1 tree (controllers as directories) and checks
// that only the existing cgroup directories are found. The unified (v2)
// branch is taken only for the real Root on a v2 host.
func TestDirs(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"memory/default/web", "pids/default/web", "cpu/default/other", "unified"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		path string
		want []string
	}{
		{"/default/web", []string{filepath.Join(root, "memory/default/web"), filepath.Join(root, "pids/default/web")}},
		{"default/web", []string{filepath.Join(root, "memory/default/web"), filepath.Join(root, "pids/default/web")}},
		{"/default/../default/other", []string{filepath.Join(root, "cpu/default/other")}},
		{"/default/none", nil},
	}
	for _, tt := range tests {
		got := Dirs(root, tt.path)
		slices.Sort(got)
		if !slices.Equal(got, tt.want) {
			t.Errorf("Dirs(%q) = %v, want %v", tt.path, got, tt.want)
		}
	}
}
