package cache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestCompileSlots has four shims compile four modules at once with two
// slots: no more than two compiles run at once, and all succeed.
func TestCompileSlots(t *testing.T) {
	root := t.TempDir()
	var running, peak, calls atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := 0; i < 4; i++ {
		m := module(fmt.Sprintf("slot-%d", i), 1000)
		slow := func(ctx context.Context, dir string) error {
			n := running.Add(1)
			defer running.Add(-1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			time.Sleep(100 * time.Millisecond)
			return m.compiler(&calls)(ctx, dir)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- getVerified(Options{Root: root, Engine: "engine-1", MaxCompiles: 2}, m, slow)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if peak.Load() != 2 || calls.Load() != 4 {
		t.Errorf("%d compiles, at most %d at once; want 4, 2 at once", calls.Load(), peak.Load())
	}
}

// TestCompileSlotWaitEndsWithContext: a Get waiting for a slot that
// another shim holds gives up when its context ends, having compiled
// nothing and left nothing behind.
func TestCompileSlotWaitEndsWithContext(t *testing.T) {
	root := t.TempDir()
	opts := Options{Root: root, Engine: "engine-1", MaxCompiles: 1}
	holder, c := openWith(t, opts), openWith(t, opts)
	release, err := holder.slots.acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	m := module("waiting", 100)
	var calls atomic.Int32
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = c.Get(ctx, m.digest, m.compiler(&calls), nil)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "compile slot (all 1 busy)") {
		t.Errorf("Get with the only slot busy: %v, want the context's deadline while waiting for a slot", err)
	}
	if calls.Load() != 0 {
		t.Errorf("%d compiles without a slot", calls.Load())
	}
	for _, d := range []string{"tmp", "failed", "entries"} {
		if left, _ := os.ReadDir(filepath.Join(c.Dir(), d)); len(left) != 0 {
			t.Errorf("%s left: %v", d, left)
		}
	}
	release()
	if e, _ := get(t, c, m, &calls); e.Hit || calls.Load() != 1 {
		t.Errorf("Get once the slot is free: hit %v after %d compiles, want a compile", e.Hit, calls.Load())
	}
}

// TestSlotsBound takes every slot, and checks that one more is not to be
// had until one is released.
func TestSlotsBound(t *testing.T) {
	for _, n := range []int{1, 2, 5} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			s := slots{dir: t.TempDir(), n: n}
			var releases []func()
			for i := 0; i < n; i++ {
				release, err := s.acquire(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				releases = append(releases, release)
			}
			if f, err := s.try(); f != nil || err != nil {
				t.Fatalf("slot %d of %d: %v, %v; want none free", n+1, n, f, err)
			}
			releases[n/2]()
			f, err := s.try()
			if f == nil || err != nil {
				t.Fatalf("a slot released: %v, %v; want it free", f, err)
			}
			f.Close()
			for i, release := range releases {
				if i != n/2 {
					release()
				}
			}
		})
	}
}
