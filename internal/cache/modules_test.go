package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func sum(b string) string {
	s := sha256.Sum256([]byte(b))
	return hex.EncodeToString(s[:])
}

// serve is a Fetcher writing data, counting its calls.
func serve(data string, calls *atomic.Int32) Fetcher {
	return func(ctx context.Context, w io.Writer) error {
		calls.Add(1)
		_, err := io.WriteString(w, data)
		return err
	}
}

func readPin(t *testing.T, p *Pin) string {
	t.Helper()
	b, err := os.ReadFile(p.Path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestModuleStore: a module is fetched once, stored, pinned for each
// container and served from the store after; the pin outlives its
// eviction.
func TestModuleStore(t *testing.T) {
	c := open(t, t.TempDir(), 0, "e")
	const data = "\x00asm\x01\x00\x00\x00 module"
	var calls atomic.Int32
	p1, err := c.Module(context.Background(), sum(data), 1<<20, serve(data, &calls), nil)
	if err != nil {
		t.Fatal(err)
	}
	if p1.Hit || readPin(t, p1) != data {
		t.Errorf("first Module: hit %v, content %q", p1.Hit, readPin(t, p1))
	}
	p2, err := c.Module(context.Background(), sum(data), 1<<20, serve(data, &calls), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !p2.Hit || readPin(t, p2) != data || p1.Path == p2.Path {
		t.Errorf("second Module: hit %v, path %s (first %s)", p2.Hit, p2.Path, p1.Path)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("fetched %d times, want once", n)
	}
	os.Remove(filepath.Join(c.Dir(), "modules", sum(data))) // evicted
	if readPin(t, p1) != data {
		t.Error("pin lost its content with the stored module")
	}
	for _, p := range []*Pin{p1, p2} {
		if err := p.Release(); err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(p.Path); !os.IsNotExist(err) {
			t.Errorf("pin %s still there after Release", p.Path)
		}
	}
}

// TestModuleStoreRefuses: content of another digest, or larger than the
// limit, or a fetch that fails, stores nothing; a stored module altered
// on disk is dropped and fetched again.
func TestModuleStoreRefuses(t *testing.T) {
	c := open(t, t.TempDir(), 0, "e")
	const data = "\x00asm\x01\x00\x00\x00"
	var calls atomic.Int32
	tests := []struct {
		name  string
		fetch Fetcher
		max   int64
		want  string
		isErr error
	}{
		{"other content", serve("\x00asm\x01\x00\x00\x00 tampered", &calls), 1 << 20, "has sha256:", ErrDigestMismatch},
		{"too large", serve(data, &calls), 4, "larger than 4 bytes", ErrDigestMismatch},
		{"fetch fails", func(context.Context, io.Writer) error { return errors.New("content store: not found") }, 1 << 20, "not found", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := c.Module(context.Background(), sum(data), tt.max, tt.fetch, nil)
			if err == nil {
				p.Release()
				t.Fatal("Module succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) || tt.isErr != nil && !errors.Is(err, tt.isErr) {
				t.Errorf("error %v, want %q", err, tt.want)
			}
			for _, d := range []string{"modules", "pins", "tmp"} {
				if des, _ := os.ReadDir(filepath.Join(c.Dir(), d)); len(des) != 0 {
					t.Errorf("%s/ holds %d files after a refused module", d, len(des))
				}
			}
		})
	}
	if _, err := c.Module(context.Background(), "not-hex", 1<<20, serve(data, &calls), nil); err == nil {
		t.Error("a digest that is not hex was taken")
	}

	p, err := c.Module(context.Background(), sum(data), 1<<20, serve(data, &calls), nil)
	if err != nil {
		t.Fatal(err)
	}
	p.Release()
	stored := filepath.Join(c.Dir(), "modules", sum(data))
	os.Chmod(stored, 0o644)
	if err := os.WriteFile(stored, []byte("\x00asm\x01\x00\x00\x01"), 0o444); err != nil {
		t.Fatal(err)
	}
	before := calls.Load()
	p, err = c.Module(context.Background(), sum(data), 1<<20, serve(data, &calls), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Release()
	if p.Hit || readPin(t, p) != data || calls.Load() != before+1 {
		t.Errorf("altered module: hit %v, content %q, fetched %d more", p.Hit, readPin(t, p), calls.Load()-before)
	}
}

// TestModuleStoreConcurrent: containers asking at once fetch once.
func TestModuleStoreConcurrent(t *testing.T) {
	c := open(t, t.TempDir(), 0, "e")
	const data = "\x00asm\x01\x00\x00\x00 shared"
	var calls atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := c.Module(context.Background(), sum(data), 1<<20, serve(data, &calls), nil)
			if err != nil {
				t.Error(err)
				return
			}
			if readPin(t, p) != data {
				t.Error("wrong content")
			}
			p.Release()
		}()
	}
	wg.Wait()
	if n := calls.Load(); n != 1 {
		t.Errorf("fetched %d times, want once", n)
	}
}

// TestModuleStoreEviction: stored modules count toward the size bound and
// go least recently used first.
func TestModuleStoreEviction(t *testing.T) {
	c := open(t, t.TempDir(), 100, "e")
	var calls atomic.Int32
	a, b := strings.Repeat("a", 60), strings.Repeat("b", 60)
	for _, d := range []string{a, b} {
		p, err := c.Module(context.Background(), sum(d), 1<<20, serve(d, &calls), nil)
		if err != nil {
			t.Fatal(err)
		}
		p.Release()
		if d == a { // used an hour ago
			old := time.Now().Add(-time.Hour)
			os.Chtimes(filepath.Join(c.Dir(), "modules", sum(a)), old, old)
		}
	}
	if _, err := os.Stat(filepath.Join(c.Dir(), "modules", sum(a))); !os.IsNotExist(err) {
		t.Error("the older module was kept past the bound")
	}
	if _, err := os.Stat(filepath.Join(c.Dir(), "modules", sum(b))); err != nil {
		t.Error("the newer module was evicted")
	}
}
