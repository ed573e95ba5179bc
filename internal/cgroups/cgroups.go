// Package cgroups knows where a container's cgroup lives on the host, for
// cgroup v1 (one hierarchy per controller), v2 (one unified hierarchy) and
// the hybrid layout this project's CI machines have (v1 controllers, an
// empty v2 mount). runc creates and removes containers' cgroups; this
// package finds them, and makes the cgroups of the shim's own short-lived
// helpers (Group).
package cgroups

import (
	"os"
	"path/filepath"
	"strings"

	cg "github.com/containerd/cgroups/v3"
)

// Root is where cgroup file systems are mounted.
const Root = "/sys/fs/cgroup"

// Dirs returns the host directories of the cgroup at path (a spec's
// linux.cgroupsPath such as "/default/web", not a systemd slice) that exist
// now: under every v1 controller hierarchy, or in the unified hierarchy.
func Dirs(root, path string) []string {
	path = strings.TrimPrefix(filepath.Clean("/"+path), "/")
	var candidates []string
	if mode := cg.Mode(); mode == cg.Unified && root == Root {
		candidates = []string{filepath.Join(root, path)}
	} else {
		ents, _ := os.ReadDir(root)
		for _, ent := range ents {
			candidates = append(candidates, filepath.Join(root, ent.Name(), path))
		}
		candidates = append(candidates, filepath.Join(root, path))
	}
	var out []string
	for _, c := range candidates {
		if fi, err := os.Stat(c); err == nil && fi.IsDir() {
			out = append(out, c)
		}
	}
	return out
}
