package cgroups

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestGroupV2 runs Group's cgroup v2 path against a hierarchy of plain
// files (these machines are cgroup v1 hosts): the controllers enabled in
// the parents, the limits, a process added, an OOM kill read back.
func TestGroupV2(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{root, filepath.Join(root, "shim")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "cgroup.subtree_control"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	g, err := newGroup(true, root, "/shim/compile-1", 64<<20, 128)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "shim", "compile-1")
	read := func(p string) string {
		b, _ := os.ReadFile(p)
		return strings.TrimSpace(string(b))
	}
	for file, want := range map[string]string{
		filepath.Join(root, "cgroup.subtree_control"):         "+memory +pids",
		filepath.Join(root, "shim", "cgroup.subtree_control"): "+memory +pids",
		filepath.Join(dir, "memory.max"):                      "67108864",
		filepath.Join(dir, "pids.max"):                        "128",
	} {
		if got := read(file); got != want {
			t.Errorf("%s = %q, want %q", file, got, want)
		}
	}
	if g.Path() != "/shim/compile-1" {
		t.Errorf("Path %q", g.Path())
	}
	if err := g.Add(4242); err != nil {
		t.Fatal(err)
	}
	if got := read(filepath.Join(dir, "cgroup.procs")); got != "4242" {
		t.Errorf("cgroup.procs %q", got)
	}
	if g.OOMKilled() {
		t.Error("OOMKilled without memory.events")
	}
	os.WriteFile(filepath.Join(dir, "memory.events"), []byte("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n"), 0o644)
	if !g.OOMKilled() {
		t.Error("memory.events counts an OOM kill; OOMKilled says no")
	}
}
