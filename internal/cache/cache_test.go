package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// fakeModule is a module digest and the "compiled code" a fake compiler
// produces for it.
type fakeModule struct {
	digest string
	code   []byte
}

// getVerified gets m's entry from a Cache of its own (as a shim of its
// own would), compiling with compile on a miss, and verifies and
// releases it.
func getVerified(opts Options, m fakeModule, compile Compiler) error {
	c, err := Open(opts)
	if err != nil {
		return err
	}
	e, err := c.Get(context.Background(), m.digest, compile, nil)
	if err != nil {
		return err
	}
	defer e.Release()
	return verify(e.Path, int64(len(m.code)), e.SHA256)
}

func module(name string, size int) fakeModule {
	sum := sha256.Sum256([]byte(name))
	code := bytes.Repeat([]byte(name), size/len(name)+1)[:size]
	return fakeModule{digest: hex.EncodeToString(sum[:]), code: code}
}

// compiler returns a Compiler that writes m's code in wazero's layout and
// counts its calls.
func (m fakeModule) compiler(calls *atomic.Int32) Compiler {
	return func(ctx context.Context, dir string) error {
		calls.Add(1)
		d := filepath.Join(dir, "wazero-vtest-amd64-linux")
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(d, m.digest), m.code, 0o644)
	}
}

func open(t testing.TB, root string, max int64, engine string) *Cache {
	t.Helper()
	c, err := Open(Options{Root: root, MaxBytes: max, Engine: engine})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// get gets m and checks that the pinned entry holds m's code.
func get(t *testing.T, c *Cache, m fakeModule, calls *atomic.Int32) (*Entry, []error) {
	t.Helper()
	var warnings []error
	e, err := c.Get(context.Background(), m.digest, m.compiler(calls), func(err error) { warnings = append(warnings, err) })
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	got, err := os.ReadFile(e.Path)
	if err != nil || !bytes.Equal(got, m.code) {
		t.Fatalf("entry %s holds %d bytes (%v), want the module's %d", e.Path, len(got), err, len(m.code))
	}
	if e.Name != "wazero-vtest-amd64-linux/"+m.digest || e.Module != m.digest || e.Size != int64(len(m.code)) {
		t.Errorf("record %+v does not describe the module", e.Record)
	}
	return e, warnings
}

func TestMissThenHit(t *testing.T) {
	c := open(t, t.TempDir(), 0, "engine-1")
	m := module("hello", 1000)
	var calls atomic.Int32
	e1, _ := get(t, c, m, &calls)
	if e1.Hit || calls.Load() != 1 {
		t.Fatalf("first Get: hit %v after %d compiles, want a miss and 1 compile", e1.Hit, calls.Load())
	}
	e2, warnings := get(t, c, m, &calls)
	if !e2.Hit || calls.Load() != 1 || len(warnings) != 0 {
		t.Fatalf("second Get: hit %v after %d compiles (warnings %v), want a hit", e2.Hit, calls.Load(), warnings)
	}
	if e1.Path == e2.Path {
		t.Error("two containers share one pin")
	}
	for _, e := range []*Entry{e1, e2} {
		if err := e.Release(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(e.Path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("pin %s still there after Release", e.Path)
		}
	}
	if st, err := os.Stat(filepath.Join(c.Dir(), "entries", c.Key(m.digest))); err != nil || st.Mode().Perm() != 0o444 {
		t.Errorf("entry after its pins are released: %v, %v; want it kept read-only", st, err)
	}
	for _, d := range []string{"", "entries", "index", "pins", "failed", "slots", "tmp", "locks"} {
		if st, err := os.Stat(filepath.Join(c.Dir(), d)); err != nil || st.Mode().Perm() != 0o700 {
			t.Errorf("%s/%s: %v, %v; want a root-only directory", c.Dir(), d, st, err)
		}
	}
	if tmp, _ := os.ReadDir(filepath.Join(c.Dir(), "tmp")); len(tmp) != 0 {
		t.Errorf("staging left: %v", tmp)
	}
}

// TestEntryDir: an entry's directory holds its code alone, at its name in
// wazero's layout, readable by any user; Release removes it with the pin,
// and Evict removes one left by a process that died.
func TestEntryDir(t *testing.T) {
	old := syscall.Umask(0o077) // Dir's modes do not depend on the umask
	defer syscall.Umask(old)
	c := open(t, t.TempDir(), 0, "engine-1")
	m := module("exec", 500)
	var calls atomic.Int32
	e, _ := get(t, c, m, &calls)
	dir, err := e.Dir()
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if st, _ := d.Info(); d.IsDir() && st.Mode().Perm() != 0o755 {
			t.Errorf("%s: mode %04o, want 0755", p, st.Mode().Perm())
		}
		if !d.IsDir() {
			files = append(files, rel(dir, p))
		}
		return nil
	})
	if len(files) != 1 || files[0] != e.Name {
		t.Fatalf("code directory holds %q, want only %s", files, e.Name)
	}
	if b, err := os.ReadFile(filepath.Join(dir, e.Name)); err != nil || !bytes.Equal(b, m.code) {
		t.Errorf("code in the directory: %v", err)
	}
	if again, err := e.Dir(); err != nil || again != dir {
		t.Errorf("Dir again: %q, %v", again, err)
	}
	if err := e.Release(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, e.Path} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there after Release", p)
		}
	}
	// One left by a process that died: removed once stale.
	e, _ = get(t, c, m, &calls)
	if dir, err = e.Dir(); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(c.Dir(), "pins", fmt.Sprintf("%d.0033.dir", time.Now().Add(-2*staleAfter).Unix()))
	if err := os.Rename(dir, stale); err != nil {
		t.Fatal(err)
	}
	if err := c.Evict(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale code directory kept: %v", err)
	}
	e.Release()
}

// TestBadEntries damages a cached entry in each way and checks that Get
// notices, warns, drops it and compiles again, and never returns it.
func TestBadEntries(t *testing.T) {
	a, b := module("module-a", 4096), module("module-b", 4096)
	tests := []struct {
		name   string
		damage func(t *testing.T, c *Cache)
		want   string // in the warning
	}{
		{"truncated code", func(t *testing.T, c *Cache) {
			os.Truncate(filepath.Join(c.Dir(), "entries", c.Key(a.digest)), 100)
		}, "is 100 bytes"},
		{"empty code", func(t *testing.T, c *Cache) {
			os.Truncate(filepath.Join(c.Dir(), "entries", c.Key(a.digest)), 0)
		}, "is 0 bytes"},
		{"flipped byte", func(t *testing.T, c *Cache) {
			p := filepath.Join(c.Dir(), "entries", c.Key(a.digest))
			os.Chmod(p, 0o644)
			f, _ := os.OpenFile(p, os.O_WRONLY, 0)
			f.WriteAt([]byte{'X'}, 2000)
			f.Close()
		}, "SHA-256"},
		{"code swapped with another module's", func(t *testing.T, c *Cache) {
			swap(t, c, "entries", a, b)
		}, "SHA-256"},
		{"records swapped", func(t *testing.T, c *Cache) {
			swap(t, c, "index", a, b)
		}, "record is for module " + b.digest},
		{"entry and record both swapped", func(t *testing.T, c *Cache) {
			swap(t, c, "index", a, b)
			swap(t, c, "entries", a, b)
		}, "record is for module " + b.digest},
		{"garbage record", func(t *testing.T, c *Cache) {
			os.WriteFile(filepath.Join(c.Dir(), "index", c.Key(a.digest)), []byte("{not json"), 0o600)
		}, "decode record"},
		{"truncated record", func(t *testing.T, c *Cache) {
			os.Truncate(filepath.Join(c.Dir(), "index", c.Key(a.digest)), 10)
		}, "decode record"},
		{"record of another engine", func(t *testing.T, c *Cache) {
			p := filepath.Join(c.Dir(), "index", c.Key(a.digest))
			rec, _ := os.ReadFile(p)
			os.WriteFile(p, bytes.Replace(rec, []byte("engine-1"), []byte("engine-0"), 1), 0o600)
		}, `engine "engine-0"`},
		{"record naming a path outside the layout", func(t *testing.T, c *Cache) {
			p := filepath.Join(c.Dir(), "index", c.Key(a.digest))
			rec, _ := os.ReadFile(p)
			os.WriteFile(p, bytes.Replace(rec, []byte("wazero-vtest-amd64-linux/"), []byte("../../../etc/"), 1), 0o600)
		}, "names entry"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := open(t, t.TempDir(), 0, "engine-1")
			var calls atomic.Int32
			for _, m := range []fakeModule{a, b} {
				e, _ := get(t, c, m, &calls)
				e.Release()
			}
			tt.damage(t, c)
			e, warnings := get(t, c, a, &calls) // checks the content is a's
			if e.Hit || calls.Load() != 3 {
				t.Errorf("damaged entry: hit %v after %d compiles, want a recompile", e.Hit, calls.Load())
			}
			if len(warnings) == 0 || !strings.Contains(warnings[0].Error(), tt.want) {
				t.Errorf("warnings %v, want one mentioning %q", warnings, tt.want)
			}
			e.Release()
			e, warnings = get(t, c, a, &calls)
			if !e.Hit || len(warnings) != 0 {
				t.Errorf("after the recompile: hit %v, warnings %v; want a clean hit", e.Hit, warnings)
			}
			e.Release()
		})
	}
}

// swap swaps the files of two modules in one of the cache's directories.
func swap(t *testing.T, c *Cache, dir string, a, b fakeModule) {
	t.Helper()
	pa, pb := filepath.Join(c.Dir(), dir, c.Key(a.digest)), filepath.Join(c.Dir(), dir, c.Key(b.digest))
	tmp := pa + ".swap"
	for _, mv := range [][2]string{{pa, tmp}, {pb, pa}, {tmp, pb}} {
		if err := os.Rename(mv[0], mv[1]); err != nil {
			t.Fatal(err)
		}
	}
}

func TestEngineChange(t *testing.T) {
	root := t.TempDir()
	m := module("hello", 512)
	var calls atomic.Int32
	for i, engine := range []string{"wazero v1.12.0", "wazero v1.13.0", "wazero v1.12.0"} {
		e, _ := get(t, open(t, root, 0, engine), m, &calls)
		e.Release()
		if want := i < 2; e.Hit == want {
			t.Errorf("engine %q, Get %d: hit %v", engine, i, e.Hit)
		}
	}
	if calls.Load() != 2 {
		t.Errorf("%d compiles, want one per engine", calls.Load())
	}
}

func TestEviction(t *testing.T) {
	// Two entries with their records (about 250 bytes each) fit, three do
	// not.
	c := open(t, t.TempDir(), 2800, "engine-1")
	var calls atomic.Int32
	mods := []fakeModule{module("m1", 1000), module("m2", 1000), module("m3", 1000)}
	e1, _ := get(t, c, mods[0], &calls)
	e1.Release()
	old := time.Now().Add(-time.Minute)
	os.Chtimes(filepath.Join(c.Dir(), "index", c.Key(mods[0].digest)), old, old)
	e2, _ := get(t, c, mods[1], &calls)
	e2.Release()
	os.Chtimes(filepath.Join(c.Dir(), "index", c.Key(mods[1].digest)), old.Add(time.Second), old.Add(time.Second))
	// m1 is used again: m2 is now the least recently used.
	e1, _ = get(t, c, mods[0], &calls)
	if !e1.Hit {
		t.Fatal("m1 was not cached")
	}
	e3, _ := get(t, c, mods[2], &calls) // 3000 bytes > 2500: one must go
	for i, want := range []bool{true, false, true} {
		_, err := os.Stat(filepath.Join(c.Dir(), "entries", c.Key(mods[i].digest)))
		if kept := err == nil; kept != want {
			t.Errorf("m%d kept %v, want %v", i+1, kept, want)
		}
	}
	// The records count: two entries' code alone fits 2000 bytes, with
	// their records it does not.
	c.maxBytes = 2000
	if err := c.Evict(); err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(filepath.Join(c.Dir(), "entries")); len(left) != 1 {
		t.Errorf("%d entries left under a bound their code alone fits, want 1", len(left))
	}
	// A pinned entry survives its eviction until released.
	c.maxBytes = 1
	if err := c.Evict(); err != nil {
		t.Fatal(err)
	}
	for _, e := range []*Entry{e1, e3} {
		if err := verify(e.Path, e.Size, e.SHA256); err != nil {
			t.Errorf("pin of an evicted entry: %v", err)
		}
		e.Release()
	}
	if left, _ := os.ReadDir(filepath.Join(c.Dir(), "entries")); len(left) != 0 {
		t.Errorf("entries left past a 1-byte bound: %v", left)
	}
}

func TestStaleFiles(t *testing.T) {
	c := open(t, t.TempDir(), 0, "engine-1")
	old := time.Now().Add(-2 * staleAfter)
	stalePin := filepath.Join(c.Dir(), "pins", fmt.Sprintf("%d.0011", old.Unix()))
	freshPin := filepath.Join(c.Dir(), "pins", fmt.Sprintf("%d.0022", time.Now().Unix()))
	staleTmp := filepath.Join(c.Dir(), "tmp", "abc.123")
	freshTmp := filepath.Join(c.Dir(), "tmp", "def.456")
	for _, p := range []string{stalePin, freshPin, staleTmp, freshTmp} {
		os.WriteFile(p, []byte("x"), 0o600)
	}
	os.Chtimes(staleTmp, old, old)
	os.Chtimes(stalePin, time.Now(), time.Now()) // a pin's own times are its entry's
	if err := c.Evict(); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]bool{stalePin: false, freshPin: true, staleTmp: false, freshTmp: true} {
		if _, err := os.Stat(p); (err == nil) != want {
			t.Errorf("%s kept %v, want %v", p, err == nil, want)
		}
	}
}

// TestConcurrentGets has many Caches (each its own lock descriptor, as in
// separate shims) ask for one module at once: it is compiled once.
func TestConcurrentGets(t *testing.T) {
	root := t.TempDir()
	m := module("shared", 10000)
	var calls atomic.Int32
	slow := func(ctx context.Context, dir string) error {
		time.Sleep(200 * time.Millisecond)
		return m.compiler(&calls)(ctx, dir)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- getVerified(Options{Root: root, Engine: "engine-1"}, m, slow)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if calls.Load() != 1 {
		t.Errorf("%d compiles of one module, want 1", calls.Load())
	}
}

func TestLockWaitEndsWithContext(t *testing.T) {
	c := open(t, t.TempDir(), 0, "engine-1")
	unlock, err := c.lock(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.lock(ctx, "k"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("lock held elsewhere: %v, want the context's deadline", err)
	}
}

func TestCompileFailures(t *testing.T) {
	m := module("bad", 100)
	errBad := errors.New("invalid module")
	tests := []struct {
		name    string
		compile func(ctx context.Context, dir string) error
		want    string
	}{
		{"compile error", func(context.Context, string) error { return errBad }, "invalid module"},
		{"no output", func(context.Context, string) error { return nil }, "want one file"},
		{"two files", func(_ context.Context, dir string) error {
			os.MkdirAll(filepath.Join(dir, "wazero-v"), 0o755)
			os.WriteFile(filepath.Join(dir, "wazero-v", m.digest), nil, 0o644)
			return os.WriteFile(filepath.Join(dir, "wazero-v", strings.Repeat("0", 64)), nil, 0o644)
		}, "want one file"},
		{"wrong layout", func(_ context.Context, dir string) error {
			return os.WriteFile(filepath.Join(dir, "code.bin"), nil, 0o644)
		}, "want one file"},
		{"symlink", func(_ context.Context, dir string) error {
			os.MkdirAll(filepath.Join(dir, "wazero-v"), 0o755)
			return os.Symlink("/etc/passwd", filepath.Join(dir, "wazero-v", m.digest))
		}, "unexpected file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := open(t, t.TempDir(), 0, "engine-1")
			_, err := c.Get(context.Background(), m.digest, tt.compile, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Get: %v, want an error mentioning %q", err, tt.want)
			}
			for _, d := range []string{"entries", "index", "pins", "failed", "tmp"} {
				if left, _ := os.ReadDir(filepath.Join(c.Dir(), d)); len(left) != 0 {
					t.Errorf("%s left after a failed compile: %v", d, left)
				}
			}
		})
	}
}

func TestOpenAndGetRefuse(t *testing.T) {
	if _, err := Open(Options{Root: "relative/dir", Engine: "e"}); err == nil {
		t.Error("Open accepted a relative root")
	}
	if _, err := Open(Options{Root: t.TempDir()}); err == nil {
		t.Error("Open accepted no engine identity")
	}
	if _, err := Open(Options{Root: t.TempDir(), Engine: "e", MaxCompiles: -1}); err == nil {
		t.Error("Open accepted a negative number of compiles")
	}
	if _, err := Open(Options{Root: t.TempDir(), Engine: "e", FailureTTL: -time.Second}); err == nil {
		t.Error("Open accepted a negative failure TTL")
	}
	if c := open(t, t.TempDir(), 0, "e"); c.slots.n != runtime.NumCPU() || c.failureTTL != DefaultFailureTTL {
		t.Errorf("defaults: %d compiles at once, failures remembered for %s; want %d, %s", c.slots.n, c.failureTTL, runtime.NumCPU(), DefaultFailureTTL)
	}
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	if _, err := Open(Options{Root: file, Engine: "e"}); err == nil {
		t.Error("Open accepted a file as root")
	}
	c := open(t, t.TempDir(), 0, "e")
	for _, d := range []string{"", "abc", strings.Repeat("g", 64), "../" + strings.Repeat("0", 61)} {
		if _, err := c.Get(context.Background(), d, nil, nil); err == nil {
			t.Errorf("Get accepted module digest %q", d)
		}
	}
}

// FuzzRecord: an index record is a file on the node; whatever it holds,
// Get does not panic and returns the module's own code, compiled again if
// the record is not a valid one of this module and engine.
func FuzzRecord(f *testing.F) {
	m := module("fuzzed", 3000)
	f.Add([]byte(`{"module":"` + m.digest + `","engine":"engine-1","name":"wazero-vtest-amd64-linux/` + m.digest + `","size":3000,"sha256":"00"}`))
	f.Add([]byte(`{"module":"` + m.digest + `","engine":"engine-1","name":"../../etc/passwd","size":1,"sha256":""}`))
	f.Add([]byte(`{"size":-1}`))
	f.Add([]byte("not json"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, record []byte) {
		c := open(t, t.TempDir(), 0, "engine-1")
		var calls atomic.Int32
		e, _ := get(t, c, m, &calls)
		e.Release()
		if err := os.WriteFile(filepath.Join(c.Dir(), "index", c.Key(m.digest)), record, 0o600); err != nil {
			t.Fatal(err)
		}
		e, _ = get(t, c, m, &calls) // checks the pinned code is the module's
		e.Release()
	})
}
