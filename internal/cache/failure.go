package cache

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

const (
	// DefaultFailureTTL is how long a failed compile is remembered, unless
	// configured.
	DefaultFailureTTL = time.Hour

	// maxReason bounds a remembered failure's reason, in bytes.
	maxReason = 1 << 10
	// maxKind bounds a remembered failure's kind, in bytes.
	maxKind = 64
	// maxFailureRecord bounds a failure record file, in bytes: what a
	// record may hold (its strings bounded, cleaned of control characters
	// and so escaped at most twice over in JSON) fits well within it, and
	// no more of a file is read.
	maxFailureRecord = 4 << 10
	// ellipsis ends a reason or kind that was cut short.
	ellipsis = "…"
)

// Failure is a compile that failed for the module's sake: the module is
// invalid, or its compile ran out of memory or time. A Compiler returns an
// error wrapping a *Failure (see errors.As) for Get to remember it, by
// module and engine, under the cache's settings; until the record expires,
// every Get of the module on the node then fails at once with a Failure
// from the record (Remembered), instead of compiling again.
type Failure struct {
	// Kind is a short class of failure, the Compiler's choice (for
	// example "invalid", "memory", "timeout").
	Kind string
	// Reason is the failure's message. Get records it cleaned to one
	// line and cut to 1 KiB; if it is empty, it records the compile
	// error's whole message instead.
	Reason string
	// At is when the compile failed. Get records the time the Compiler
	// returned, whatever the Compiler set here.
	At time.Time
	// Until is when a remembered failure is forgotten: At plus the
	// cache's FailureTTL. It is zero unless Remembered.
	Until time.Time
	// Remembered says the Failure comes from the record of an earlier
	// compile, not from a compile now.
	Remembered bool
}

// Error returns the reason, on one line when the Failure was remembered,
// and says when the compile failed and until when it is remembered.
func (f *Failure) Error() string {
	msg := f.Reason
	if msg == "" {
		msg = "compile failed"
		if f.Kind != "" {
			msg += " (" + f.Kind + ")"
		}
	}
	if !f.Remembered {
		return msg
	}
	return fmt.Sprintf("%s (remembered from a compile at %s, until %s)",
		msg, f.At.UTC().Format(time.RFC3339), f.Until.UTC().Format(time.RFC3339))
}

// failureRecord is what v1/failed/KEY holds: a Failure, and what it is a
// failure of. The engine and the settings are kept as SHA-256s, so that a
// record stays small whatever they are.
type failureRecord struct {
	// Module is the SHA-256 of the module, in hex.
	Module string `json:"module"`
	// Engine is the SHA-256 of Options.Engine of the compile, in hex.
	Engine string `json:"engine_sha256"`
	// Settings is the SHA-256 of Options.Settings of the compile, in hex.
	Settings string `json:"settings_sha256"`
	// Kind and Reason are those of the Failure, bounded and cleaned.
	Kind   string `json:"kind"`
	Reason string `json:"reason"`
	// At is when the compile failed.
	At time.Time `json:"at"`
}

// encode returns the record as JSON of at most maxFailureRecord bytes.
func (r *failureRecord) encode() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // a reason's <, > and & would take six bytes each
	if err := enc.Encode(r); err != nil {
		return nil, fmt.Errorf("encode failure record: %w", err)
	}
	if buf.Len() > maxFailureRecord {
		return nil, fmt.Errorf("failure record is %d bytes, more than %d", buf.Len(), maxFailureRecord)
	}
	return buf.Bytes(), nil
}

// decodeFailure decodes and checks a failure record's form: what it is a
// failure of is for the caller to check.
func decodeFailure(data []byte) (*failureRecord, error) {
	if len(data) > maxFailureRecord {
		return nil, fmt.Errorf("failure record is larger than %d bytes", maxFailureRecord)
	}
	var r failureRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("decode failure record: %w", err)
	}
	switch {
	case !validHex(r.Module) || !validHex(r.Engine) || !validHex(r.Settings):
		return nil, errors.New("failure record: module, engine or settings is not a SHA-256 in hex")
	case bounded(r.Kind, maxKind) != r.Kind:
		return nil, fmt.Errorf("failure record: kind is not one line of at most %d bytes", maxKind)
	case bounded(r.Reason, maxReason) != r.Reason:
		return nil, fmt.Errorf("failure record: reason is not one line of at most %d bytes", maxReason)
	case r.At.IsZero():
		return nil, errors.New("failure record: no time of failure")
	}
	return &r, nil
}

// readFailure reads a failure record file, no more than maxFailureRecord
// bytes of it (and one more, to tell it is too long).
func readFailure(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFailureRecord+1))
	if err != nil {
		return nil, fmt.Errorf("read failure record: %w", err)
	}
	return data, nil
}

// bounded returns s as valid UTF-8 on one line (control characters and
// line or paragraph separators made spaces) of at most max bytes, cut at a
// character and ended with an ellipsis if it was longer.
func bounded(s string, max int) string {
	s = strings.ToValidUTF8(s, string(utf8.RuneError))
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.In(r, unicode.Zl, unicode.Zp) {
			return ' '
		}
		return r
	}, s)
	if len(s) <= max {
		return s
	}
	cut := max - len(ellipsis)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ellipsis
}

// failure returns the remembered failure of key's module under the
// cache's engine and settings, or nil if there is none. With the key's
// lock held (locked), a record that cannot be used is removed: a corrupt
// one, or one of another module or engine, is reported in the error; an
// expired one, one under other settings or one from the future (the clock
// was set back) is forgotten quietly. Without the lock, nothing is
// removed and nothing reported: a writer may be replacing the record.
func (c *Cache) failure(key, module string, locked bool) (*Failure, error) {
	path := filepath.Join(c.dir, "failed", key)
	data, err := readFailure(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	var why error
	var r *failureRecord
	if err != nil {
		why = err
	} else if r, err = decodeFailure(data); err != nil {
		why = err
	} else if r.Module != module || r.Engine != c.engineSum {
		why = fmt.Errorf("failure record is for module %s of engine SHA-256 %s, not module %s of engine %q", r.Module, r.Engine, module, c.engine)
	} else {
		now, until := c.now(), r.At.Add(c.failureTTL)
		if r.Settings == c.settingsSum && !r.At.After(now) && now.Before(until) {
			return &Failure{Kind: r.Kind, Reason: r.Reason, At: r.At, Until: until, Remembered: true}, nil
		}
	}
	if !locked {
		return nil, nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("compile cache: remove failure record %s: %w", key, err)
	}
	if why != nil {
		return nil, fmt.Errorf("compile cache failure record %s dropped: %w", key, why)
	}
	return nil, nil
}

// remember records a compile's failure of key's module, f being the
// Failure that err, the compile's error, wraps. The key's lock is held.
func (c *Cache) remember(key, module string, f *Failure, err error) error {
	reason := f.Reason
	if reason == "" {
		reason = err.Error()
	}
	r := &failureRecord{
		Module:   module,
		Engine:   c.engineSum,
		Settings: c.settingsSum,
		Kind:     bounded(f.Kind, maxKind),
		Reason:   bounded(reason, maxReason),
		At:       c.now().UTC(),
	}
	data, err := r.encode()
	if err != nil {
		return fmt.Errorf("compile cache: remember the failed compile of %s: %w", module, err)
	}
	if err := c.writeFile(filepath.Join(c.dir, "failed", key), data); err != nil {
		return fmt.Errorf("remember the failed compile of %s: %w", module, err)
	}
	return nil
}

// forget removes the failure record of key, after a compile succeeded.
// The key's lock is held.
func (c *Cache) forget(key string) error {
	if err := os.Remove(filepath.Join(c.dir, "failed", key)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("compile cache: remove failure record %s: %w", key, err)
	}
	return nil
}

// expiredFailure says whether the failure record at path is to be removed
// by eviction: it cannot be read or decoded, or it has expired under the
// cache's FailureTTL. A record that is gone meanwhile is not.
func (c *Cache) expiredFailure(path string) bool {
	data, err := readFailure(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false
	}
	if err != nil {
		return true
	}
	r, err := decodeFailure(data)
	return err != nil || !c.now().Before(r.At.Add(c.failureTTL))
}
