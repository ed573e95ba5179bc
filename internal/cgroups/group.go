package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	cg "github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Group is a cgroup of the shim's own making, for a short-lived helper
// process: created with a memory and a pids limit, removed once the helper
// has exited. It is a v2 cgroup on a unified host and a v1 cgroup (under
// every v1 controller) otherwise.
type Group struct {
	path string
	v1   cgroup1.Cgroup
	v2   *cgroup2.Manager
}

// NewGroup creates the cgroup at path (such as
// "/containerd-shim-wasm/compile-1234") with the given limits.
func NewGroup(path string, memory, pids int64) (*Group, error) {
	return newGroup(cg.Mode() == cg.Unified, Root, path, memory, pids)
}

// newGroup is NewGroup in a v2 hierarchy mounted at root if unified,
// else in the v1 hierarchies.
func newGroup(unified bool, root, path string, memory, pids int64) (*Group, error) {
	g := &Group{path: path}
	var err error
	if unified {
		g.v2, err = cgroup2.NewManager(root, path, &cgroup2.Resources{
			Memory: &cgroup2.Memory{Max: &memory},
			Pids:   &cgroup2.Pids{Max: pids},
		})
	} else {
		g.v1, err = cgroup1.New(cgroup1.StaticPath(path), &specs.LinuxResources{
			Memory: &specs.LinuxMemory{Limit: &memory},
			Pids:   &specs.LinuxPids{Limit: &pids},
		}, cgroup1.WithHiearchy(helperSubsystems))
	}
	if err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w", path, err)
	}
	return g, nil
}

// helperSubsystems are the v1 controllers a helper's cgroup joins: those
// that account and limit it.
func helperSubsystems() ([]cgroup1.Subsystem, error) {
	all, err := cgroup1.Default()
	if err != nil {
		return nil, err
	}
	var out []cgroup1.Subsystem
	for _, s := range all {
		switch s.Name() {
		case cgroup1.Memory, cgroup1.Pids, cgroup1.Cpu, cgroup1.Cpuacct:
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no memory, pids or cpu cgroup v1 controller mounted")
	}
	return out, nil
}

// Path is the group's cgroup path.
func (g *Group) Path() string { return g.path }

// Add moves a process into the group.
func (g *Group) Add(pid int) error {
	var err error
	if g.v2 != nil {
		err = g.v2.AddProc(uint64(pid))
	} else {
		err = g.v1.Add(cgroup1.Process{Pid: pid})
	}
	if err != nil {
		return fmt.Errorf("add process %d to cgroup %s: %w", pid, g.path, err)
	}
	return nil
}

// OOMKilled says whether the kernel killed a process of the group for
// want of memory.
func (g *Group) OOMKilled() bool {
	if g.v2 != nil {
		m, err := g.v2.Stat()
		return err == nil && m.GetMemoryEvents().GetOomKill() > 0
	}
	m, err := g.v1.Stat(cgroup1.IgnoreNotExist)
	return err == nil && m.GetMemoryOomControl().GetOomKill() > 0
}

// Delete removes the group; its processes must have exited.
func (g *Group) Delete() error {
	var err error
	if g.v2 != nil {
		err = g.v2.Delete()
	} else {
		err = g.v1.Delete()
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove cgroup %s: %w", g.path, err)
	}
	return nil
}

// RemoveOrphans removes the empty cgroups named PREFIX-PID under parent
// (in every hierarchy below root) whose process PID has exited: helpers'
// groups left behind by a shim that was killed while its helper ran.
// A group that still holds a process is not removable, and is kept.
func RemoveOrphans(root, parent, prefix string) {
	for _, dir := range Dirs(root, parent) {
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, ent := range ents {
			pid, ok := strings.CutPrefix(ent.Name(), prefix+"-")
			n, err := strconv.Atoi(pid)
			if !ok || err != nil || !ent.IsDir() || processExists(n) {
				continue
			}
			os.Remove(filepath.Join(dir, ent.Name())) // rmdir: fails unless empty
		}
	}
}

// processExists says whether process pid exists (as any process, even
// one of another pid namespace's numbering: this errs on keeping).
func processExists(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

// LimitMemory sets the memory limit of the cgroup at path, creating it if
// need be: the parent of helpers' groups, whose limit then bounds them
// all together. It joins (on v1) the memory controller only.
func LimitMemory(path string, memory int64) error {
	return limitMemory(cg.Mode() == cg.Unified, Root, path, memory)
}

func limitMemory(unified bool, root, path string, memory int64) error {
	var err error
	if unified {
		_, err = cgroup2.NewManager(root, path, &cgroup2.Resources{Memory: &cgroup2.Memory{Max: &memory}})
	} else {
		_, err = cgroup1.New(cgroup1.StaticPath(path), &specs.LinuxResources{
			Memory: &specs.LinuxMemory{Limit: &memory},
		}, cgroup1.WithHiearchy(memorySubsystem))
	}
	if err != nil {
		return fmt.Errorf("limit the memory of cgroup %s to %d bytes: %w", path, memory, err)
	}
	return nil
}

// memorySubsystem is the v1 memory controller alone.
func memorySubsystem() ([]cgroup1.Subsystem, error) {
	all, err := cgroup1.Default()
	if err != nil {
		return nil, err
	}
	for _, s := range all {
		if s.Name() == cgroup1.Memory {
			return []cgroup1.Subsystem{s}, nil
		}
	}
	return nil, errors.New("no memory cgroup v1 controller mounted")
}

// PeakMemory is the most memory the group has used, in bytes (v1
// memory.max_usage_in_bytes, v2 memory.peak); 0 if unknown.
func (g *Group) PeakMemory() int64 {
	if g.v2 != nil {
		for _, d := range Dirs(Root, g.path) {
			if data, err := os.ReadFile(filepath.Join(d, "memory.peak")); err == nil {
				n, _ := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
				return n
			}
		}
		return 0
	}
	m, err := g.v1.Stat(cgroup1.IgnoreNotExist)
	if err != nil {
		return 0
	}
	return int64(m.GetMemory().GetUsage().GetMax())
}
