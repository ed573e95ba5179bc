package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// Pin is a host file of the cache (compiled code, or a stored module) kept
// for one container until Release.
type Pin struct {
	// Path is the pinned file: a hard link under pins/.
	Path string
	// Hit says whether the file was in the cache (false: made now).
	Hit bool
}

// Release removes the pin. Call it once the container has the file
// (mounted), or has failed.
func (p *Pin) Release() error {
	if err := os.Remove(p.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("release cache pin: %w", err)
	}
	return nil
}

// ErrDigestMismatch marks a module whose bytes are not those of its digest.
var ErrDigestMismatch = errors.New("content does not match its digest")

// Fetcher writes a module's bytes to w.
type Fetcher func(ctx context.Context, w io.Writer) error

// Module returns a pin of the module of the given SHA-256 (in hex) from
// the module store, where modules that are in no container's rootfs are
// kept (see the package's layout). A module not stored yet is written by
// fetch (holding the module's lock, so that the node fetches it once) and
// stored only if it is no larger than maxSize and its SHA-256 is module; a
// stored module is verified against its digest before it is pinned, and
// dropped if it fails. Errors about the content wrap ErrDigestMismatch;
// fetch's are returned as they are. Stored modules count toward the
// cache's size bound, and are evicted as entries are; an eviction that
// fails is reported to warn.
func (c *Cache) Module(ctx context.Context, module string, maxSize int64, fetch Fetcher, warn func(error)) (*Pin, error) {
	if !validHex(module) {
		return nil, fmt.Errorf("module digest %q is not a SHA-256 in hex", module)
	}
	stored := filepath.Join(c.dir, "modules", module)
	if p, err := c.pinModule(stored, module); err == nil {
		return p, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	unlock, err := c.lock(ctx, "module-"+module)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if p, err := c.pinModule(stored, module); err == nil {
		return p, nil // stored by whoever held the lock
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	f, err := os.CreateTemp(filepath.Join(c.dir, "tmp"), "module-"+module+".")
	if err != nil {
		return nil, fmt.Errorf("module store: %w", err)
	}
	defer os.Remove(f.Name())
	h := sha256.New()
	lw := &limitedWriter{w: io.MultiWriter(f, h), left: maxSize}
	err = fetch(ctx, lw)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("module store: %w", cerr)
	}
	switch {
	case lw.over:
		return nil, fmt.Errorf("module %s is larger than %d bytes: %w", module, maxSize, ErrDigestMismatch)
	case err != nil:
		return nil, err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != module {
		return nil, fmt.Errorf("module fetched as sha256:%s has sha256:%s: %w", module, got, ErrDigestMismatch)
	}
	if err := os.Chmod(f.Name(), 0o444); err != nil {
		return nil, fmt.Errorf("module store: %w", err)
	}
	if err := os.Rename(f.Name(), stored); err != nil {
		return nil, fmt.Errorf("module store: %w", err)
	}
	pin, err := c.pinFile(stored)
	if err != nil {
		return nil, fmt.Errorf("module store: module just stored: %w", err)
	}
	if err := c.Evict(); err != nil && warn != nil {
		warn(err)
	}
	return &Pin{Path: pin}, nil
}

// pinModule pins a stored module and verifies the pin. It returns an error
// wrapping fs.ErrNotExist if the module is not stored (or was dropped now,
// failing verification).
func (c *Cache) pinModule(stored, module string) (*Pin, error) {
	pin, err := c.pinFile(stored)
	if err != nil {
		return nil, err
	}
	if err := verifyModule(pin, module); err != nil {
		os.Remove(pin)
		os.Remove(stored)
		return nil, fmt.Errorf("stored module dropped: %w: %w", err, fs.ErrNotExist)
	}
	now := time.Now()
	os.Chtimes(stored, now, now) // least recently used first
	return &Pin{Path: pin, Hit: true}, nil
}

// verifyModule checks that a file's SHA-256 is module.
func verifyModule(path, module string) error {
	got, _, err := fileSHA256(path)
	if err != nil {
		return err
	}
	if got != module {
		return fmt.Errorf("module sha256:%s has sha256:%s", module, got)
	}
	return nil
}

// limitedWriter writes at most left bytes to w, and fails past that.
type limitedWriter struct {
	w    io.Writer
	left int64
	over bool
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > l.left {
		l.over = true
		return 0, errors.New("module larger than its limit")
	}
	n, err := l.w.Write(p)
	l.left -= int64(n)
	return n, err
}
