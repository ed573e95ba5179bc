package pathwalk

import (
	"errors"
	"io/fs"
	"testing"
)

// mapFS is a file system of symlinks (value: target), directories
// (value: "") and other files (value: notDir).
type mapFS map[string]string

func (m mapFS) Lstat(p string) (Kind, error) {
	if p == "/" {
		return Other, nil
	}
	t, ok := m[p]
	switch {
	case !ok:
		return Missing, nil
	case t == notDir:
		return NotDir, nil
	case t != "":
		return Symlink, nil
	}
	return Other, nil
}

const notDir = "\x00"

func (m mapFS) Readlink(p string) (string, error) { return m[p], nil }

type strictFS struct{ mapFS }

func (s strictFS) Lstat(p string) (Kind, error) {
	k, _ := s.mapFS.Lstat(p)
	if k == Missing {
		return k, fs.ErrNotExist
	}
	return k, nil
}

func TestWalk(t *testing.T) {
	m := mapFS{
		"/a": "", "/a/f": "", "/abs": "/a", "/rel": "a/f", "/up": "../../../a",
		"/loop": "/loop", "/dot": "./a/../a/f", "/a/back": "..",
		"/a/file": notDir, "/tofile": "a/file",
	}
	tests := []struct {
		in      string
		follow  bool
		want    string
		wantErr error
	}{
		{"/a/f", true, "/a/f", nil},
		{"a//./f", true, "/a/f", nil},
		{"/abs/f", true, "/a/f", nil},
		{"/rel", true, "/a/f", nil},
		{"/rel", false, "/rel", nil},
		{"/rel/", false, "/a/f", nil},
		{"/up/f", true, "/a/f", nil},
		{"/../../a/f", true, "/a/f", nil},
		{"/dot", true, "/a/f", nil},
		{"/a/back/a", true, "/a", nil},
		{"/missing/../a/f", true, "/a/f", nil},
		{"/missing/x", true, "/missing/x", nil},
		{"/loop", true, "", ErrLoop},
		{"/loop", false, "/loop", nil},
		{"/a/file", true, "/a/file", nil},
		{"/a/file/..", true, "", ErrNotDir}, // the kernel looks up ".." in a file
		{"/a/file/x", true, "", ErrNotDir},
		{"/tofile/x", true, "", ErrNotDir},
		{"/tofile", true, "/a/file", nil},
	}
	for _, tt := range tests {
		got, err := Walk(m, tt.in, tt.follow)
		if got != tt.want || !errors.Is(err, tt.wantErr) {
			t.Errorf("Walk(%q, %v) = %q, %v; want %q, %v", tt.in, tt.follow, got, err, tt.want, tt.wantErr)
		}
	}
	if _, err := Walk(strictFS{m}, "/missing/../a", true); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("strict walk through a missing directory: %v, want ErrNotExist", err)
	}
}
