package cgroups

import (
	"os"
	"path/filepath"
	"strconv"
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

// TestRemoveOrphans: helper groups of exited processes are removed if
// empty; those of live processes, non-empty ones and others stay.
func TestRemoveOrphans(t *testing.T) {
	root := t.TempDir()
	dead := 999999999 // above pid_max
	live := os.Getpid()
	dirs := map[string]bool{ // path under root: removed?
		"memory/shim/compile-" + strconv.Itoa(dead): true,
		"pids/shim/compile-" + strconv.Itoa(dead):   true,
		"memory/shim/compile-" + strconv.Itoa(live): false,
		"memory/shim/compile-x":                     false,
		"memory/shim/other-" + strconv.Itoa(dead):   false,
		"cpu/shim/compile-" + strconv.Itoa(dead):    false, // holds a file, as a populated group would a process
	}
	for d := range dirs {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(root, "cpu/shim/compile-"+strconv.Itoa(dead), "cgroup.procs"), []byte("1\n"), 0o644)
	RemoveOrphans(root, "/shim", "compile")
	for d, removed := range dirs {
		if _, err := os.Stat(filepath.Join(root, d)); (err != nil) != removed {
			t.Errorf("%s: removed %v, want %v", d, err != nil, removed)
		}
	}
}

// TestLimitMemoryV2: the helpers' parent gets memory.max, and only the
// memory controller is enabled for it; setting it again changes it.
func TestLimitMemoryV2(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "cgroup.subtree_control"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, limit := range []int64{1 << 30, 512 << 20} {
		if err := limitMemory(true, root, "/shim", limit); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(filepath.Join(root, "shim", "memory.max"))
		if strings.TrimSpace(string(got)) != strconv.FormatInt(limit, 10) {
			t.Errorf("memory.max %q, want %d", got, limit)
		}
	}
	if got, _ := os.ReadFile(filepath.Join(root, "cgroup.subtree_control")); strings.TrimSpace(string(got)) != "+memory" {
		t.Errorf("root's subtree_control %q, want +memory", got)
	}
}
