package oci

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/pathwalk"
)

// Resolver maps paths inside a container, before it starts, to host paths:
// the root file system with the spec's bind mounts laid over it. Symlinks are
// followed inside the container's view only, so no link can lead out of it.
type Resolver struct {
	root   string
	mounts []mountPoint // later entries shadow earlier ones
}

type mountPoint struct {
	dest   string // clean container path
	source string // host path; empty for a file system that is empty at create time (tmpfs, proc, ...)
	fstype string
}

// NewResolver returns a Resolver for the container described by the bundle
// at dir and its spec.
func NewResolver(bundle string, s *specs.Spec) *Resolver {
	r := &Resolver{root: RootPath(bundle, s)}
	for _, m := range s.Mounts {
		mp := mountPoint{dest: path.Clean("/" + m.Destination), fstype: m.Type}
		if isBind(m) {
			// runc mounts what a symlinked source leads to on the host: the
			// mount point is that directory, not a link in the container.
			mp.source = m.Source
			if real, err := filepath.EvalSymlinks(m.Source); err == nil {
				mp.source = real
			}
			mp.fstype = "bind"
		}
		r.mounts = append(r.mounts, mp)
	}
	return r
}

func isBind(m specs.Mount) bool {
	if m.Type == "bind" {
		return true
	}
	return slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind")
}

// hostPath returns the host path of a clean container path, with no symlink
// resolution. ok is false when the path lies under a mount whose content does
// not exist before the container starts.
func (r *Resolver) hostPath(p string) (host string, fstype string, ok bool) {
	host, fstype, _, ok = r.lookup(p)
	return host, fstype, ok
}

// lookup is hostPath that also returns the index of the mount p is under
// (-1 for the rootfs).
func (r *Resolver) lookup(p string) (host string, fstype string, mount int, ok bool) {
	best := -1
	for i, m := range r.mounts {
		if p == m.dest || m.dest == "/" || strings.HasPrefix(p, m.dest+"/") {
			if best < 0 || len(m.dest) >= len(r.mounts[best].dest) {
				best = i
			}
		}
	}
	if best < 0 {
		return filepath.Join(r.root, p), "", -1, true
	}
	m := r.mounts[best]
	if m.source == "" {
		return "", m.fstype, best, false
	}
	rel := strings.TrimPrefix(strings.TrimPrefix(p, m.dest), "/")
	return filepath.Join(m.source, rel), "", best, true
}

// bindBelow reports whether a bind mount listed after mount index after lies
// strictly below the container directory dir: then dir exists once the
// container starts, even on a file system that is empty before.
func (r *Resolver) bindBelow(dir string, after int) bool {
	for _, m := range r.mounts[after+1:] {
		if m.source != "" && strings.HasPrefix(m.dest, dir+"/") {
			return true
		}
	}
	return false
}

// Resolve follows every symlink in the container path p (absolute, or
// relative to "/") inside the container's view. It returns the resolved
// container path and the host path of the same file.
func (r *Resolver) Resolve(p string) (resolved, host string, err error) {
	return r.resolve(containerView{r}, p)
}

// ResolveFrom is Resolve for a path p relative to the working directory
// cwd (p absolute ignores it) of the container's process: the kernel follows
// a symlink before the ".." after it, so that p is never cleaned lexically.
// runc creates cwd, and any directory missing on the way to it, before the
// process starts: those directories count as there.
func (r *Resolver) ResolveFrom(cwd, p string) (resolved, host string, err error) {
	if path.IsAbs(p) {
		return r.Resolve(p)
	}
	dir := "/" + strings.Trim(cwd, "/")
	if dir != "/" {
		dir += "/"
	}
	created := map[string]bool{}
	// An error of this walk comes again in the next one, on the same path.
	_, _ = pathwalk.Walk(cwdView{containerView{r}, created, true}, dir, true)
	return r.resolve(cwdView{containerView{r}, created, false}, dir+p)
}

func (r *Resolver) resolve(view pathwalk.FS, p string) (resolved, host string, err error) {
	resolved, err = pathwalk.Walk(view, p, true)
	if errors.Is(err, pathwalk.ErrLoop) {
		return "", "", fmt.Errorf("%s: %w", p, err)
	}
	if err != nil {
		return "", "", err
	}
	host, _, _ = r.hostPath(resolved)
	return resolved, host, nil
}

// containerView is the container's file system as pathwalk sees it: a
// missing component is an error, and so is one on a mount that is empty
// before the container starts, unless a later bind mount lies below it.
type containerView struct{ r *Resolver }

func (v containerView) Lstat(p string) (pathwalk.Kind, error) {
	r := v.r
	h, fstype, mount, ok := r.lookup(p)
	if !ok {
		if r.bindBelow(p, mount) {
			return pathwalk.Other, nil // a directory on the way to a deeper bind mount
		}
		return 0, fmt.Errorf("%s is on a %s mount, which is empty before the container starts: %w", p, fstype, fs.ErrNotExist)
	}
	fi, err := os.Lstat(h)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return 0, fmt.Errorf("%s: %w", p, fs.ErrNotExist)
		}
		return 0, fmt.Errorf("%s: %w", p, err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return pathwalk.Symlink, nil
	}
	if !fi.IsDir() {
		return pathwalk.NotDir, nil
	}
	return pathwalk.Other, nil
}

func (v containerView) Readlink(p string) (string, error) {
	h, _, _ := v.r.hostPath(p)
	target, err := os.Readlink(h)
	if err != nil {
		return "", fmt.Errorf("%s: %w", p, err)
	}
	return target, nil
}

// cwdView is the container's file system once runc has created the process's
// working directory: created holds the directories it made. While create is
// set, a walk makes the directories it misses, as os.MkdirAll does.
type cwdView struct {
	containerView
	created map[string]bool
	create  bool
}

func (v cwdView) Lstat(p string) (pathwalk.Kind, error) {
	kind, err := v.containerView.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) && (v.create || v.created[p]) {
		v.created[p] = true
		return pathwalk.Other, nil
	}
	return kind, err
}
