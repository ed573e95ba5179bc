// Package pathwalk resolves a path component by component, following
// symlinks as the kernel does but inside a root of the caller's: an absolute
// symlink starts again at that root, and ".." never climbs above it.
//
// The shim uses it to find a container's entrypoint before the container
// exists (package oci), and the runner to confine a guest's paths (package
// runtime); each supplies its own idea of what a file is through FS.
package pathwalk

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// MaxSymlinks bounds symlink expansion, as the kernel's ELOOP limit does.
const MaxSymlinks = 40

// ErrLoop is returned when a path expands more than MaxSymlinks symlinks.
var ErrLoop = errors.New("too many levels of symbolic links")

// ErrNotDir is returned when a component that is neither a directory nor
// a symlink has more after it ("file/x", "file/.."), as the kernel's
// ENOTDIR.
var ErrNotDir = errors.New("not a directory")

// Kind is what FS.Lstat found at a path.
type Kind int

const (
	// Other is a directory, or anything an FS does not tell apart: the
	// walk goes on through it.
	Other Kind = iota
	// Symlink is followed (the last component only if asked to).
	Symlink
	// Missing does not exist; the walk goes on by name, so that every later
	// component is still looked at. An FS for which a missing component is
	// an error returns that error from Lstat instead.
	Missing
	// NotDir is neither a directory nor a symlink: only the last
	// component may be one.
	NotDir
)

// FS is what a walk needs of a file system. Paths are clean and absolute
// ("/" is the root).
type FS interface {
	Lstat(p string) (Kind, error)
	Readlink(p string) (string, error)
}

// Walk returns the absolute path p with every symlink in it resolved (the
// last component's only if follow, or if p ends in a slash), or the first
// error of fsys. The result never ends in a slash: see HasTrailingSlash.
func Walk(fsys FS, p string, follow bool) (string, error) {
	follow = follow || HasTrailingSlash(p)
	rest := Split(p)
	cur := "/"
	links := 0
	for len(rest) > 0 {
		comp := rest[0]
		rest = rest[1:]
		if comp == ".." {
			cur = path.Dir(cur)
			continue
		}
		next := path.Join(cur, comp)
		kind, err := fsys.Lstat(next)
		if err != nil {
			return "", err
		}
		if kind == NotDir && len(rest) > 0 {
			return "", fmt.Errorf("%s: %w", next, ErrNotDir)
		}
		if kind != Symlink || (len(rest) == 0 && !follow) {
			cur = next
			continue
		}
		if links++; links > MaxSymlinks {
			return "", ErrLoop
		}
		target, err := fsys.Readlink(next)
		if err != nil {
			return "", err
		}
		if path.IsAbs(target) {
			cur = "/"
		}
		rest = append(Split(target), rest...)
	}
	return cur, nil
}

// HasTrailingSlash reports whether p names a directory by its form ("d/" or
// "d/."): such a path follows a final symlink, and must keep its slash for
// the operation on it to fail with ENOTDIR on anything else.
func HasTrailingSlash(p string) bool {
	return strings.HasSuffix(p, "/") || strings.HasSuffix(p, "/.")
}

// Split returns the components of p, without empty ones and ".".
func Split(p string) []string {
	var out []string
	for _, c := range strings.Split(p, "/") {
		if c != "" && c != "." {
			out = append(out, c)
		}
	}
	return out
}
