package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"
)

// openWith opens a cache with opts, failing the test if it cannot.
func openWith(t *testing.T, opts Options) *Cache {
	t.Helper()
	c, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// failing returns a Compiler that fails with err and counts its calls.
func failing(err error, calls *atomic.Int32) Compiler {
	return func(context.Context, string) error {
		calls.Add(1)
		return err
	}
}

// invalid is the error of a compile that found the module invalid.
func invalid(reason string) error {
	return fmt.Errorf("compile module app.wasm: %w", &Failure{Kind: "invalid", Reason: reason})
}

// failedPath is the path of m's failure record in c.
func failedPath(c *Cache, m fakeModule) string {
	return filepath.Join(c.Dir(), "failed", c.Key(m.digest))
}

// exists says whether path exists.
func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// remembered gets m from c, expecting a remembered failure without a
// compile, and returns it.
func remembered(t *testing.T, c *Cache, m fakeModule) *Failure {
	t.Helper()
	var calls atomic.Int32
	_, err := c.Get(context.Background(), m.digest, m.compiler(&calls), nil)
	var f *Failure
	if !errors.As(err, &f) || !f.Remembered {
		t.Fatalf("Get: %v, want a remembered failure", err)
	}
	if calls.Load() != 0 {
		t.Errorf("%d compiles of a module whose failure is remembered", calls.Load())
	}
	return f
}

func TestFailureRemembered(t *testing.T) {
	root := t.TempDir()
	opts := Options{Root: root, Engine: "engine-1", Settings: "memory=1"}
	c1, c2 := openWith(t, opts), openWith(t, opts) // two shims
	m := module("invalid", 100)
	var calls atomic.Int32
	before := time.Now()
	_, err := c1.Get(context.Background(), m.digest, failing(invalid("bad magic number"), &calls), nil)
	var f *Failure
	if !errors.As(err, &f) || f.Remembered || err.Error() != "compile module app.wasm: bad magic number" {
		t.Fatalf("failed compile: %v, want the compile's own error", err)
	}
	for i, c := range []*Cache{c2, c1} {
		f := remembered(t, c, m)
		if f.Kind != "invalid" || f.Reason != "bad magic number" {
			t.Errorf("Get %d: remembered %q %q, want the compile's kind and reason", i, f.Kind, f.Reason)
		}
		if f.At.Before(before.Add(-time.Second)) || f.At.After(time.Now()) || !f.Until.Equal(f.At.Add(DefaultFailureTTL)) {
			t.Errorf("Get %d: remembered from %s until %s, want from the compile for %s", i, f.At, f.Until, DefaultFailureTTL)
		}
		if msg := f.Error(); !strings.HasPrefix(msg, "bad magic number (remembered from a compile at ") || strings.Contains(msg, "\n") {
			t.Errorf("Get %d: message %q, want the reason and when it was remembered, on one line", i, msg)
		}
	}
	if calls.Load() != 1 {
		t.Errorf("%d compiles, want 1", calls.Load())
	}
	// Remembered at once: without waiting for the lock of a compile
	// elsewhere.
	unlock, err := c1.lock(context.Background(), c1.Key(m.digest))
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := c2.Get(ctx, m.digest, m.compiler(&calls), nil); !errors.As(err, &f) || !f.Remembered {
		t.Errorf("Get while the module is locked: %v, want its remembered failure at once", err)
	}
}

// TestFailureRecorded checks what is recorded of a failure, whatever the
// Compiler's reason and kind.
func TestFailureRecorded(t *testing.T) {
	long := strings.Repeat(`"`, 100<<10)
	tests := []struct {
		name       string
		err        error
		wantKind   string
		wantReason string // or, ending in ellipsis, its start
	}{
		{"reason", invalid("bad magic number"), "invalid", "bad magic number"},
		{"no reason: the whole message", fmt.Errorf("compile module app.wasm: %w", &Failure{Kind: "memory"}),
			"memory", "compile module app.wasm: compile failed (memory)"},
		{"a timeout of the compiler's own", fmt.Errorf("%w: %w", &Failure{Kind: "timeout", Reason: "took more than 2m0s"}, context.DeadlineExceeded),
			"timeout", "took more than 2m0s"},
		{"lines, tabs and bad UTF-8", &Failure{Kind: "in\nvalid", Reason: "line 1\nline 2\r\n\tend\xff\u2028"},
			"in valid", "line 1 line 2   end\uFFFD "},
		{"long reason", &Failure{Kind: "invalid", Reason: long}, "invalid", strings.Repeat(`"`, maxReason-len(ellipsis)) + ellipsis},
		{"long reason of wide characters", &Failure{Kind: "invalid", Reason: strings.Repeat("é", maxReason)},
			"invalid", strings.Repeat("é", (maxReason-len(ellipsis))/2) + ellipsis},
		{"long kind", &Failure{Kind: strings.Repeat("k", 1000), Reason: "r"}, strings.Repeat("k", maxKind-len(ellipsis)) + ellipsis, "r"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			c := openWith(t, Options{Root: root, Engine: "engine-1"})
			m := module("invalid", 100)
			var calls atomic.Int32
			if _, err := c.Get(context.Background(), m.digest, failing(tt.err, &calls), nil); err != tt.err {
				t.Fatalf("failed compile: %v, want the compile's own error", err)
			}
			if st, err := os.Stat(failedPath(c, m)); err != nil || st.Size() > maxFailureRecord || st.Mode().Perm() != 0o600 {
				t.Errorf("record: %v, %v; want a root-only file of at most %d bytes", st, err, maxFailureRecord)
			}
			f := remembered(t, openWith(t, Options{Root: root, Engine: "engine-1"}), m)
			if f.Kind != tt.wantKind || f.Reason != tt.wantReason {
				t.Errorf("remembered kind %q, reason %q; want %q, %q", f.Kind, f.Reason, tt.wantKind, tt.wantReason)
			}
			if msg := f.Error(); !utf8.ValidString(msg) || strings.ContainsAny(msg, "\n\r") {
				t.Errorf("message %q is not one line of text", msg)
			}
		})
	}
}

// TestFailureNotRemembered: compile errors that are not the module's
// fault are not remembered, and the next Get compiles again.
func TestFailureNotRemembered(t *testing.T) {
	m := module("flaky", 100)
	var nilFailure *Failure
	tests := []struct {
		name    string
		compile func(ctx context.Context, cancel func()) error
	}{
		{"plain error", func(context.Context, func()) error { return errors.New("read module: input/output error") }},
		{"context cancelled", func(ctx context.Context, cancel func()) error {
			cancel()
			return fmt.Errorf("compile module app.wasm: %w", ctx.Err())
		}},
		{"failure once the context ended", func(ctx context.Context, cancel func()) error {
			cancel()
			return &Failure{Kind: "memory", Reason: "killed"}
		}},
		{"nil failure", func(context.Context, func()) error { return fmt.Errorf("odd: %w", nilFailure) }},
		{"no output", func(context.Context, func()) error { return nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := open(t, t.TempDir(), 0, "engine-1")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			compile := func(ctx context.Context, dir string) error { return tt.compile(ctx, cancel) }
			if _, err := c.Get(ctx, m.digest, compile, nil); err == nil {
				t.Fatal("Get succeeded")
			}
			if left, _ := os.ReadDir(filepath.Join(c.Dir(), "failed")); len(left) != 0 {
				t.Errorf("failure records: %v, want none", left)
			}
			var calls atomic.Int32
			if e, _ := get(t, c, m, &calls); e.Hit || calls.Load() != 1 {
				t.Errorf("next Get: hit %v after %d compiles, want a compile", e.Hit, calls.Load())
			}
		})
	}
}

func TestFailureExpiry(t *testing.T) {
	root := t.TempDir()
	t0 := time.Now()
	now := t0
	c := openWith(t, Options{Root: root, Engine: "engine-1", FailureTTL: time.Minute})
	c.now = func() time.Time { return now }
	// A shim that remembers failures for longer.
	long := openWith(t, Options{Root: root, Engine: "engine-1", FailureTTL: 24 * time.Hour})
	long.now = func() time.Time { return now }
	m, other := module("flaky", 100), module("other", 100)
	var calls atomic.Int32
	for _, mod := range []fakeModule{m, other} {
		if _, err := c.Get(context.Background(), mod.digest, failing(invalid("bad"), &calls), nil); err == nil {
			t.Fatal("failing compile succeeded")
		}
	}
	now = t0.Add(time.Minute - time.Nanosecond)
	if f := remembered(t, c, m); !f.At.Equal(t0) || !f.Until.Equal(t0.Add(time.Minute)) {
		t.Errorf("remembered from %s until %s, want from %s for a minute", f.At, f.Until, t0)
	}
	now = t0.Add(time.Minute)
	// Eviction removes what has expired under its cache's TTL, and only
	// that.
	if err := long.Evict(); err != nil {
		t.Fatal(err)
	}
	if !exists(failedPath(c, m)) || !exists(failedPath(c, other)) {
		t.Error("eviction removed a failure record that has not expired under its TTL")
	}
	if e, _ := get(t, c, m, &calls); e.Hit {
		t.Error("Get after the failure expired: a hit, want a compile")
	}
	if exists(failedPath(c, m)) {
		t.Error("failure record left after a successful compile")
	}
	if e, _ := get(t, long, m, &calls); !e.Hit {
		t.Error("the other shim still sees a failure, want the entry compiled since")
	}
	if err := c.Evict(); err != nil {
		t.Fatal(err)
	}
	if exists(failedPath(c, other)) {
		t.Error("eviction left an expired failure record")
	}
}

// TestFailureSuccessForgets: a compile that succeeds removes the
// module's failure record, even one written meanwhile.
func TestFailureSuccessForgets(t *testing.T) {
	c := open(t, t.TempDir(), 0, "engine-1")
	m := module("flaky", 100)
	var calls atomic.Int32
	compile := func(ctx context.Context, dir string) error {
		writeRecord(t, c, m, func(*failureRecord) {})
		return m.compiler(&calls)(ctx, dir)
	}
	if _, err := c.Get(context.Background(), m.digest, compile, nil); err != nil {
		t.Fatal(err)
	}
	if exists(failedPath(c, m)) {
		t.Error("failure record left after a successful compile")
	}
}

func TestFailureSettingsChange(t *testing.T) {
	m := module("big", 100)
	tests := []struct {
		name   string
		second error // of the compile under other settings
	}{
		{"succeeds under the new settings", nil},
		{"fails again under the new settings", &Failure{Kind: "memory", Reason: "out of memory at 2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			c1 := openWith(t, Options{Root: root, Engine: "engine-1", Settings: "memory=1"})
			c2 := openWith(t, Options{Root: root, Engine: "engine-1", Settings: "memory=2"})
			var calls atomic.Int32
			if _, err := c1.Get(context.Background(), m.digest, failing(&Failure{Kind: "memory", Reason: "out of memory at 1"}, &calls), nil); err == nil {
				t.Fatal("failing compile succeeded")
			}
			remembered(t, c1, m)
			compile := m.compiler(&calls)
			if tt.second != nil {
				compile = failing(tt.second, &calls)
			}
			_, err := c2.Get(context.Background(), m.digest, compile, nil)
			if calls.Load() != 2 || err != tt.second {
				t.Fatalf("Get under other settings: %v after %d compiles, want %v after a compile", err, calls.Load(), tt.second)
			}
			if tt.second == nil {
				if exists(failedPath(c1, m)) {
					t.Error("failure record left after a successful compile")
				}
				if e, _ := get(t, c1, m, &calls); !e.Hit {
					t.Error("back under the first settings: a miss, want the entry")
				}
				return
			}
			if f := remembered(t, c2, m); f.Reason != "out of memory at 2" {
				t.Errorf("remembered %q, want the failure under the new settings", f.Reason)
			}
			if _, err := c1.Get(context.Background(), m.digest, failing(errors.New("plain"), &calls), nil); err == nil || err.Error() != "plain" {
				t.Errorf("back under the first settings: %v, want a compile", err)
			}
		})
	}
	// Another engine has its own key: the failure is not its own.
	root := t.TempDir()
	var calls atomic.Int32
	if _, err := open(t, root, 0, "engine-1").Get(context.Background(), m.digest, failing(invalid("bad"), &calls), nil); err == nil {
		t.Fatal("failing compile succeeded")
	}
	if e, _ := get(t, open(t, root, 0, "engine-2"), m, &calls); e.Hit || calls.Load() != 2 {
		t.Errorf("another engine: hit %v after %d compiles, want a compile", e.Hit, calls.Load())
	}
	remembered(t, open(t, root, 0, "engine-1"), m)
}

// writeRecord writes a valid failure record of m in c, changed by mutate.
func writeRecord(t *testing.T, c *Cache, m fakeModule, mutate func(*failureRecord)) {
	t.Helper()
	r := &failureRecord{Module: m.digest, Engine: c.engineSum, Settings: c.settingsSum, Kind: "invalid", Reason: "bad", At: c.now().UTC()}
	mutate(r)
	data, err := r.encode()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(failedPath(c, m), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestBadFailureRecords damages a failure record in each way and checks
// that Get ignores and removes it, warning of what is not merely stale.
func TestBadFailureRecords(t *testing.T) {
	a, b := module("module-a", 100), module("module-b", 100)
	valid := func(r *failureRecord) {}
	tests := []struct {
		name   string
		damage func(t *testing.T, c *Cache)
		want   string // in the warning; none if empty
	}{
		{"garbage", func(t *testing.T, c *Cache) {
			os.WriteFile(failedPath(c, a), []byte("{not json"), 0o600)
		}, "decode failure record"},
		{"empty", func(t *testing.T, c *Cache) {
			os.WriteFile(failedPath(c, a), nil, 0o600)
		}, "decode failure record"},
		{"truncated", func(t *testing.T, c *Cache) {
			writeRecord(t, c, a, valid)
			os.Truncate(failedPath(c, a), 20)
		}, "decode failure record"},
		{"too large", func(t *testing.T, c *Cache) {
			writeRecord(t, c, a, valid)
			f, _ := os.OpenFile(failedPath(c, a), os.O_WRONLY|os.O_APPEND, 0)
			f.Write(bytes.Repeat([]byte(" "), 1<<20))
			f.Close()
		}, "larger than 4096 bytes"},
		{"a directory", func(t *testing.T, c *Cache) {
			os.Mkdir(failedPath(c, a), 0o700)
		}, "read failure record"},
		{"another module's", func(t *testing.T, c *Cache) {
			writeRecord(t, c, b, valid)
			os.Rename(failedPath(c, b), failedPath(c, a))
		}, "is for module " + b.digest},
		{"another engine's", func(t *testing.T, c *Cache) {
			writeRecord(t, c, a, func(r *failureRecord) { r.Engine = sha256Hex("engine-0") })
		}, "of engine SHA-256 " + sha256Hex("engine-0")},
		{"engine not a digest", func(t *testing.T, c *Cache) {
			writeRecord(t, c, a, func(r *failureRecord) { r.Engine = "engine-1" })
		}, "not a SHA-256"},
		{"reason on two lines", func(t *testing.T, c *Cache) {
			writeRecord(t, c, a, func(r *failureRecord) { r.Reason = "two\nlines" })
		}, "reason is not one line"},
		{"reason too long", func(t *testing.T, c *Cache) {
			writeRecord(t, c, a, func(r *failureRecord) { r.Reason = strings.Repeat("x", maxReason+1) })
		}, "reason is not one line of at most 1024 bytes"},
		{"kind too long", func(t *testing.T, c *Cache) {
			writeRecord(t, c, a, func(r *failureRecord) { r.Kind = strings.Repeat("x", maxKind+1) })
		}, "kind is not one line"},
		{"no time", func(t *testing.T, c *Cache) {
			writeRecord(t, c, a, func(r *failureRecord) { r.At = time.Time{} })
		}, "no time of failure"},
		{"expired", func(t *testing.T, c *Cache) {
			writeRecord(t, c, a, func(r *failureRecord) { r.At = r.At.Add(-DefaultFailureTTL) })
		}, ""},
		{"from the future", func(t *testing.T, c *Cache) {
			writeRecord(t, c, a, func(r *failureRecord) { r.At = r.At.Add(time.Hour) })
		}, ""},
		{"under other settings", func(t *testing.T, c *Cache) {
			writeRecord(t, c, a, func(r *failureRecord) { r.Settings = sha256Hex("memory=2") })
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := open(t, t.TempDir(), 0, "engine-1")
			tt.damage(t, c)
			var warnings []error
			var calls atomic.Int32
			plain := errors.New("plain")
			// A compile that fails without a Failure leaves records be:
			// what is removed was removed by the check.
			_, err := c.Get(context.Background(), a.digest, failing(plain, &calls), func(err error) { warnings = append(warnings, err) })
			if err != plain || calls.Load() != 1 {
				t.Fatalf("Get: %v after %d compiles, want the compile's error", err, calls.Load())
			}
			if exists(failedPath(c, a)) {
				t.Error("bad failure record left")
			}
			switch {
			case tt.want == "" && len(warnings) != 0:
				t.Errorf("warnings %v, want none", warnings)
			case tt.want != "" && (len(warnings) != 1 || !strings.Contains(warnings[0].Error(), tt.want)):
				t.Errorf("warnings %v, want one mentioning %q", warnings, tt.want)
			}
		})
	}
}

func TestFailureEviction(t *testing.T) {
	c := open(t, t.TempDir(), 0, "engine-1")
	m1, m2, expired, corrupt := module("m1", 1000), module("m2", 100), module("expired", 100), module("corrupt", 100)
	var calls atomic.Int32
	e, _ := get(t, c, m1, &calls)
	e.Release()
	old := time.Now().Add(-time.Minute)
	index := filepath.Join(c.Dir(), "index", c.Key(m1.digest))
	os.Chtimes(index, old, old)
	writeRecord(t, c, m2, func(*failureRecord) {})
	writeRecord(t, c, expired, func(r *failureRecord) { r.At = r.At.Add(-2 * DefaultFailureTTL) })
	os.WriteFile(failedPath(c, corrupt), []byte("{"), 0o600)
	size := func(p string) int64 {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return st.Size()
	}
	entry := size(filepath.Join(c.Dir(), "entries", c.Key(m1.digest))) + size(index)
	record := size(failedPath(c, m2))
	tests := []struct {
		name               string
		max                int64
		keepEntry, keepRec bool
	}{
		{"all fits", entry + record, true, true},
		{"the record counts: the older entry goes", entry + record - 1, false, true},
		{"then the record", record - 1, false, false},
	}
	for _, tt := range tests {
		c.maxBytes = tt.max
		if err := c.Evict(); err != nil {
			t.Fatal(err)
		}
		if got := exists(index); got != tt.keepEntry {
			t.Errorf("%s: entry kept %v, want %v", tt.name, got, tt.keepEntry)
		}
		if got := exists(failedPath(c, m2)); got != tt.keepRec {
			t.Errorf("%s: failure record kept %v, want %v", tt.name, got, tt.keepRec)
		}
		for _, m := range []fakeModule{expired, corrupt} {
			if exists(failedPath(c, m)) {
				t.Errorf("%s: %s failure record left", tt.name, filepath.Base(failedPath(c, m)))
			}
		}
	}
}

func TestFailureError(t *testing.T) {
	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		f    Failure
		want string
	}{
		{Failure{Kind: "invalid", Reason: "bad magic number"}, "bad magic number"},
		{Failure{Kind: "memory"}, "compile failed (memory)"},
		{Failure{}, "compile failed"},
		{Failure{Kind: "invalid", Reason: "bad magic number", At: at, Until: at.Add(time.Hour), Remembered: true},
			"bad magic number (remembered from a compile at 2025-03-01T12:00:00Z, until 2025-03-01T13:00:00Z)"},
		{Failure{Reason: "r", At: at.In(time.FixedZone("X", 3600)), Until: at.Add(time.Minute), Remembered: true},
			"r (remembered from a compile at 2025-03-01T12:00:00Z, until 2025-03-01T12:01:00Z)"},
	}
	for _, tt := range tests {
		if got := tt.f.Error(); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.f, got, tt.want)
		}
	}
}

// FuzzFailure: a failure record is a file on the node; whatever it holds,
// Get does not panic and either returns the module's own code, having
// removed the record, or fails at once with the record's failure, on one
// line of a bounded length, if it is a valid record of this module,
// engine and settings.
func FuzzFailure(f *testing.F) {
	m := module("fuzzed", 300)
	seed := open(f, f.TempDir(), 0, "engine-1")
	for _, r := range []failureRecord{
		{Module: m.digest, Engine: seed.engineSum, Settings: seed.settingsSum, Kind: "invalid", Reason: "bad magic number", At: time.Now().Add(-time.Minute)},
		{Module: m.digest, Engine: seed.engineSum, Settings: seed.settingsSum, Kind: "memory", Reason: "", At: time.Now().Add(time.Hour)},
		{Module: m.digest, Engine: seed.engineSum, Settings: seed.settingsSum, Reason: "expired", At: time.Now().Add(-2 * time.Hour)},
		{Module: m.digest, Engine: seed.engineSum, Settings: sha256Hex("other"), Reason: "other settings", At: time.Now()},
		{Module: strings.Repeat("0", 64), Engine: seed.engineSum, Settings: seed.settingsSum, Reason: "other module", At: time.Now()},
	} {
		data, err := r.encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{"module":"` + m.digest + `","reason":"a\nb","at":"2025-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"at":"not a time"}`))
	f.Add([]byte("not json"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, record []byte) {
		c := open(t, t.TempDir(), 0, "engine-1")
		if err := os.WriteFile(failedPath(c, m), record, 0o600); err != nil {
			t.Fatal(err)
		}
		var calls atomic.Int32
		e, err := c.Get(context.Background(), m.digest, m.compiler(&calls), nil)
		if err != nil {
			var f *Failure
			if !errors.As(err, &f) || !f.Remembered || calls.Load() != 0 {
				t.Fatalf("Get: %v after %d compiles, want the module or a remembered failure", err, calls.Load())
			}
			r, derr := decodeFailure(record)
			if derr != nil || r.Reason != f.Reason || r.Kind != f.Kind {
				t.Fatalf("remembered %+v of a record that decodes to %+v, %v", f, r, derr)
			}
			if msg := f.Error(); len(msg) > maxReason+200 || strings.ContainsAny(msg, "\n\r") || !utf8.ValidString(msg) {
				t.Fatalf("message %q is not one bounded line of text", msg)
			}
			return
		}
		defer e.Release()
		if got, err := os.ReadFile(e.Path); err != nil || !bytes.Equal(got, m.code) {
			t.Fatalf("entry holds %d bytes (%v), want the module's", len(got), err)
		}
		if exists(failedPath(c, m)) {
			t.Fatal("failure record left after a successful compile")
		}
	})
}
