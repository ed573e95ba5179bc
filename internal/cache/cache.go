// Package cache is the node's cache of compiled Wasm modules: every module
// is compiled once per node, and every later container that runs it loads
// the compiled code instead.
//
// The cache keeps its own index rather than trusting wazero's directory
// cache, which checks only a CRC, fails rather than recompiles on a bad
// entry and cannot be read through a read-only view on a miss. An entry is
// keyed by the module's SHA-256 and the engine's identity (everything that
// makes compiled code incompatible: wazero's version, the engine's flags,
// the CPU's features), and its record holds the SHA-256 of the compiled
// code, checked every time before it is used.
//
// Layout under the root (all root-only):
//
//	v1/index/KEY    the record of an entry (JSON)
//	v1/entries/KEY  the compiled code, in wazero's cache format
//	v1/locks/KEY    flock(2)ed while KEY is compiled, from any process
//	v1/pins/NAME    hard links that keep an entry alive for one container
//	v1/failed/KEY   a compile that failed for the module's sake (JSON),
//	                remembered until it expires
//	v1/slots/N      flock(2)ed by a compile running, N < MaxCompiles
//	v1/modules/SHA  modules that are in no container's rootfs (the layers
//	                of Wasm artifacts), by their SHA-256
//	v1/tmp/         staging for compiles and records
//
// Files are written in tmp/ and renamed into place, the code before its
// record, so a reader sees a whole entry or none; what a crash tears fails
// verification. Entries and failure records past the size bound are
// evicted, least recently used first. A container is given a pin, not the
// entry itself: an entry evicted meanwhile stays on disk until the pin is
// released, and the pin is what is verified.
//
// A compile that fails for the module's sake (the Compiler says so with a
// Failure) is remembered under the module, the engine and the compile's
// settings for a while, so that the node does not compile an invalid
// module again for every container that asks for it. No more than
// MaxCompiles compiles run at once on the node, whichever process runs
// them.
package cache

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// DefaultRoot is where the cache lives unless configured otherwise.
	DefaultRoot = "/var/lib/containerd-shim-wasm"
	// DefaultMaxBytes bounds the compiled code kept, unless configured.
	DefaultMaxBytes = 2 << 30

	layout = "v1"
	// staleAfter is the age after which a pin or a staging file is left
	// over from a process that died, and is removed by eviction.
	staleAfter = time.Hour
	// lockPoll is how often a waiter retries a busy compile lock.
	lockPoll = 10 * time.Millisecond
)

// Options configure a Cache.
type Options struct {
	// Root is the cache's directory; DefaultRoot if empty.
	Root string
	// MaxBytes bounds the total size of compiled code kept, with its index
	// records; DefaultMaxBytes if 0.
	MaxBytes int64
	// Engine identifies the compiler: entries of another engine are never
	// used. It must change whenever compiled code would be incompatible.
	Engine string
	// Settings is whatever else the outcome of a compile depends on (for
	// example "memory=1073741824 timeout=2m0s"): a failure remembered
	// under other settings is forgotten.
	Settings string
	// FailureTTL is how long a failed compile is remembered;
	// DefaultFailureTTL if 0.
	FailureTTL time.Duration
	// MaxCompiles bounds the compiles running at once on the node, by
	// every process using the cache; DefaultMaxCompiles() if 0.
	MaxCompiles int
}

// Cache is a node-wide cache of compiled modules, shared by every shim.
type Cache struct {
	// dir is the directory of this layout version under the root.
	dir string
	// maxBytes bounds the compiled code, index records and failure
	// records kept.
	maxBytes int64
	// engine is Options.Engine; engineSum and settingsSum are the SHA-256s
	// of Options.Engine and Options.Settings, in hex, as failure records
	// hold them.
	engine, engineSum, settingsSum string
	// failureTTL is how long a failed compile is remembered.
	failureTTL time.Duration
	// slots bound the compiles running at once.
	slots slots
	// now tells the time of failures; time.Now but in tests.
	now func() time.Time
}

// Record is what the index says of an entry.
type Record struct {
	// Module is the SHA-256 of the module, in hex.
	Module string `json:"module"`
	// Engine is Options.Engine of the compile.
	Engine string `json:"engine"`
	// Name is the entry's path in wazero's cache directory layout.
	Name string `json:"name"`
	// Size and SHA256 are those of the compiled code.
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Entry is a verified entry, pinned for one container: Path is the pin, a
// host file holding the compiled code, verified against the record, which
// stays until Release; Hit says whether the entry was in the cache (false:
// compiled now).
type Entry struct {
	Record
	Pin
}

// Dir returns a directory in wazero's cache directory layout holding the
// entry's code alone (a second hard link of the pin, under pins/), for a
// process that cannot have the pin mounted but can be given the
// directory's descriptor (an exec's runner in a running container). It is
// readable by any user, as the code is, and removed by Release.
func (e *Entry) Dir() (string, error) {
	dir := e.Path + ".dir"
	code := filepath.Join(dir, e.Name)
	if err := os.MkdirAll(filepath.Dir(code), 0o755); err != nil {
		return "", fmt.Errorf("compile cache: code directory: %w", err)
	}
	// MkdirAll's modes are less the umask: the runner may run as any user.
	for _, d := range []string{dir, filepath.Dir(code)} {
		if err := os.Chmod(d, 0o755); err != nil {
			os.RemoveAll(dir)
			return "", fmt.Errorf("compile cache: code directory: %w", err)
		}
	}
	if err := os.Link(e.Path, code); err != nil && !errors.Is(err, fs.ErrExist) {
		os.RemoveAll(dir)
		return "", fmt.Errorf("compile cache: code directory: %w", err)
	}
	return dir, nil
}

// Release removes the pin, and the directory Dir made of it, if any.
func (e *Entry) Release() error {
	if err := os.RemoveAll(e.Path + ".dir"); err != nil {
		return fmt.Errorf("release cache pin: %w", err)
	}
	return e.Pin.Release()
}

// Compiler compiles a module into dir, in wazero's cache directory layout.
type Compiler func(ctx context.Context, dir string) error

// Open opens (creating it if need be) the cache under opts.Root.
func Open(opts Options) (*Cache, error) {
	if opts.Engine == "" {
		return nil, errors.New("compile cache: no engine identity")
	}
	root := opts.Root
	if root == "" {
		root = DefaultRoot
	}
	if !filepath.IsAbs(root) {
		return nil, fmt.Errorf("compile cache root %q is not an absolute path", root)
	}
	max := opts.MaxBytes
	if max == 0 {
		max = DefaultMaxBytes
	}
	ttl := opts.FailureTTL
	if ttl < 0 {
		return nil, fmt.Errorf("compile cache: failure TTL %s is negative", ttl)
	} else if ttl == 0 {
		ttl = DefaultFailureTTL
	}
	compiles := opts.MaxCompiles
	if compiles < 0 {
		return nil, fmt.Errorf("compile cache: at most %d compiles at once", compiles)
	} else if compiles == 0 {
		compiles = DefaultMaxCompiles()
	}
	dir := filepath.Join(root, layout)
	c := &Cache{
		dir:         dir,
		maxBytes:    max,
		engine:      opts.Engine,
		engineSum:   sha256Hex(opts.Engine),
		settingsSum: sha256Hex(opts.Settings),
		failureTTL:  ttl,
		slots:       slots{dir: filepath.Join(dir, "slots"), n: compiles},
		now:         time.Now,
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("compile cache: %w", err)
	}
	for _, d := range []string{"", "index", "entries", "modules", "locks", "pins", "failed", "slots", "tmp"} {
		if err := os.Mkdir(filepath.Join(c.dir, d), 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("compile cache: %w", err)
		}
	}
	return c, nil
}

// Dir is the cache's directory for this layout version.
func (c *Cache) Dir() string { return c.dir }

// Key is the index key of a module (its SHA-256 in hex) for this engine.
func (c *Cache) Key(module string) string {
	h := sha256.New()
	fmt.Fprintf(h, "containerd-shim-wasm cache %s\nengine %s\nmodule %s\n", layout, c.engine, module)
	return hex.EncodeToString(h.Sum(nil))
}

// Get returns the verified entry of a module, given its SHA-256 in hex. On
// a miss it takes the module's compile lock (waiting while another process
// holds it, then looking again), compiles with compile, holding one of the
// node's compile slots (waiting while all are busy), and adds the result.
// An entry that fails verification is dropped and reported to warn, then
// treated as a miss.
//
// On a miss, a failure of the module remembered under the cache's engine
// and settings (looked for before the lock is taken and again after) is
// returned as it is: a *Failure, Remembered. A compile error that wraps a
// *Failure is remembered, unless ctx has ended, and returned as it is;
// other compile errors are returned as they are and not remembered. A
// successful compile removes the module's failure record. Waits for the
// lock or a slot that ctx ends return errors wrapping ctx.Err(); other
// errors are the cache's own.
func (c *Cache) Get(ctx context.Context, module string, compile Compiler, warn func(error)) (*Entry, error) {
	if warn == nil {
		warn = func(error) {}
	}
	if !validHex(module) {
		return nil, fmt.Errorf("module digest %q is not a SHA-256 in hex", module)
	}
	key := c.Key(module)
	if e, err := c.lookup(key, module); err == nil {
		return e, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		warn(err)
	}
	if f, _ := c.failure(key, module, false); f != nil {
		return nil, f
	}
	unlock, err := c.lock(ctx, key)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if e, err := c.lookup(key, module); err == nil {
		return e, nil // compiled by whoever held the lock
	} else if !errors.Is(err, fs.ErrNotExist) {
		warn(err)
	}
	if f, err := c.failure(key, module, true); f != nil {
		return nil, f // failed for whoever held the lock
	} else if err != nil {
		warn(err)
	}
	rec, err := c.add(ctx, key, module, compile)
	if err != nil {
		var f *Failure
		if errors.As(err, &f) && f != nil && ctx.Err() == nil {
			if rerr := c.remember(key, module, f, err); rerr != nil {
				warn(rerr)
			} else if eerr := c.Evict(); eerr != nil {
				warn(eerr)
			}
		}
		return nil, err
	}
	if err := c.forget(key); err != nil {
		warn(err)
	}
	// The code was hashed as it was added: the pin needs no second check.
	pin, err := c.pin(key)
	if err != nil {
		return nil, fmt.Errorf("compile cache: entry just added: %w", err)
	}
	e := &Entry{Record: *rec, Pin: Pin{Path: pin}}
	if err := c.Evict(); err != nil {
		warn(err)
	}
	return e, nil
}

// lookup pins and verifies the entry of key. It returns an error wrapping
// fs.ErrNotExist on a miss; any other error means the entry was bad and has
// been dropped.
func (c *Cache) lookup(key, module string) (*Entry, error) {
	data, err := os.ReadFile(filepath.Join(c.dir, "index", key))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, c.drop(key, fmt.Errorf("read record: %w", err))
	}
	var r Record
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, c.drop(key, fmt.Errorf("decode record: %w", err))
	}
	if r.Module != module || r.Engine != c.engine {
		return nil, c.drop(key, fmt.Errorf("record is for module %s of engine %q, not module %s of engine %q", r.Module, r.Engine, module, c.engine))
	}
	if !validName(r.Name) {
		return nil, c.drop(key, fmt.Errorf("record names entry %q", r.Name))
	}
	pin, err := c.pin(key)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("compiled code of %s: %w", key, err) // evicted meanwhile
	} else if err != nil {
		return nil, err
	}
	if err := verify(pin, r.Size, r.SHA256); err != nil {
		os.Remove(pin)
		return nil, c.drop(key, err)
	}
	now := time.Now()
	os.Chtimes(filepath.Join(c.dir, "index", key), now, now) // least recently used first
	return &Entry{Record: r, Pin: Pin{Path: pin, Hit: true}}, nil
}

// pin hard-links the entry's code to a new name under pins/.
func (c *Cache) pin(key string) (string, error) {
	return c.pinFile(filepath.Join(c.dir, "entries", key))
}

// pinFile hard-links a file of the cache to a new name under pins/.
func (c *Cache) pinFile(file string) (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("compile cache pin: %w", err)
	}
	// A pin shares the entry's inode, and so its times: its name says when
	// it was made, for Evict to find pins left by processes that died.
	pin := filepath.Join(c.dir, "pins", fmt.Sprintf("%d.%s", time.Now().Unix(), hex.EncodeToString(b[:])))
	if err := os.Link(file, pin); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		return "", fmt.Errorf("compile cache pin: %w", err)
	}
	return pin, nil
}

// verify checks a file's size and SHA-256.
func verify(path string, size int64, sum string) error {
	got, n, err := fileSHA256(path)
	if err != nil {
		return fmt.Errorf("compiled code: %w", err)
	}
	if n != size {
		return fmt.Errorf("compiled code is %d bytes, its record says %d", n, size)
	}
	if got != sum {
		return fmt.Errorf("compiled code has SHA-256 %s, its record says %s", got, sum)
	}
	return nil
}

// fileSHA256 returns a file's SHA-256, in hex, and its size.
func fileSHA256(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// drop removes a bad entry and returns why it was bad.
func (c *Cache) drop(key string, why error) error {
	os.Remove(filepath.Join(c.dir, "index", key))
	os.Remove(filepath.Join(c.dir, "entries", key))
	return fmt.Errorf("compile cache entry %s dropped: %w", key, why)
}

// lock takes key's compile lock, an flock(2) shared by every process on
// the node, polling so that ctx can end the wait.
func (c *Cache) lock(ctx context.Context, key string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(c.dir, "locks", key), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("compile cache lock: %w", err)
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("compile cache lock: %w", err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("wait for another compile of the module: %w", ctx.Err())
		case <-time.After(lockPoll):
		}
	}
}

// add compiles into a staging directory and moves the result into place.
func (c *Cache) add(ctx context.Context, key, module string, compile Compiler) (*Record, error) {
	stage, err := os.MkdirTemp(filepath.Join(c.dir, "tmp"), key+".")
	if err != nil {
		return nil, fmt.Errorf("compile cache staging: %w", err)
	}
	defer os.RemoveAll(stage)
	release, err := c.slots.acquire(ctx)
	if err != nil {
		return nil, err
	}
	err = compile(ctx, stage)
	release()
	if err != nil {
		return nil, err
	}
	name, err := compiledFile(stage)
	if err != nil {
		return nil, err
	}
	staged := filepath.Join(stage, name)
	f, err := os.Open(staged)
	if err != nil {
		return nil, fmt.Errorf("compile cache: %w", err)
	}
	h := sha256.New()
	size, err := io.Copy(h, f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("compile cache: read compiled code: %w", err)
	}
	if err := os.Chmod(staged, 0o444); err != nil {
		return nil, fmt.Errorf("compile cache: %w", err)
	}
	if err := os.Rename(staged, filepath.Join(c.dir, "entries", key)); err != nil {
		return nil, fmt.Errorf("compile cache: %w", err)
	}
	rec := &Record{Module: module, Engine: c.engine, Name: name, Size: size, SHA256: hex.EncodeToString(h.Sum(nil))}
	data, err := json.Marshal(rec)
	if err != nil {
		return nil, fmt.Errorf("compile cache record: %w", err)
	}
	if err := c.writeFile(filepath.Join(c.dir, "index", key), data); err != nil {
		return nil, err
	}
	return rec, nil
}

// compiledFile finds the one file a compile wrote under dir, in wazero's
// layout (a version directory, and in it a file named by wazero's key).
func compiledFile(dir string) (string, error) {
	var found []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			found = append(found, rel)
		} else if !d.IsDir() {
			return fmt.Errorf("unexpected file %s", rel(dir, p))
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("compile cache: compiled output: %w", err)
	}
	if len(found) != 1 || !validName(found[0]) {
		return "", fmt.Errorf("compile cache: compiled output is %q, want one file in wazero's cache layout", found)
	}
	return found[0], nil
}

// rel is p relative to dir, for messages.
func rel(dir, p string) string {
	r, _ := filepath.Rel(dir, p)
	return r
}

// validName says whether name is VERSIONDIR/HEXKEY, as wazero names its
// cache files: the runner looks for the code there and nowhere else.
func validName(name string) bool {
	dir, file, ok := strings.Cut(name, "/")
	return ok && strings.HasPrefix(dir, "wazero-") && !strings.ContainsAny(dir, "/\x00") && dir != "." && dir != ".." && validHex(file)
}

// validHex says whether s is a SHA-256 in hex.
func validHex(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// sha256Hex is the SHA-256 of s, in hex.
func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// writeFile writes data to path atomically: a file in tmp/, renamed. It
// is not synced: an entry torn by a crash fails verification and is
// compiled again, so durability would buy nothing but the wait.
func (c *Cache) writeFile(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Join(c.dir, "tmp"), filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("compile cache: %w", err)
	}
	defer os.Remove(f.Name())
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("compile cache: write %s: %w", filepath.Base(path), err)
	}
	return nil
}

// Evict removes expired and corrupt failure records, then least recently
// used entries, stored modules and failure records until the compiled
// code, index records, modules and failure records kept fit the size
// bound, and removes pins and
// staging files left by processes that died. Entries in use by containers
// are pinned, so their files live on until released.
func (c *Cache) Evict() error {
	unlock, err := c.lock(context.Background(), "evict")
	if err != nil {
		return err
	}
	defer unlock()
	type entry struct {
		key  string
		size int64
		used time.Time
		// failed says the entry is a failure record, module a stored
		// module, not compiled code.
		failed, module bool
	}
	var entries []entry
	var total int64
	des, err := os.ReadDir(filepath.Join(c.dir, "entries"))
	if err != nil {
		return fmt.Errorf("compile cache eviction: %w", err)
	}
	for _, de := range des {
		info, err := de.Info()
		if err != nil {
			continue
		}
		e := entry{key: de.Name(), size: info.Size(), used: info.ModTime()}
		if ri, err := os.Stat(filepath.Join(c.dir, "index", de.Name())); err == nil {
			e.used = ri.ModTime()
			e.size += ri.Size() // the record counts too
		}
		entries = append(entries, e)
		total += e.size
	}
	des, err = os.ReadDir(filepath.Join(c.dir, "failed"))
	if err != nil {
		return fmt.Errorf("compile cache eviction: %w", err)
	}
	for _, de := range des {
		path := filepath.Join(c.dir, "failed", de.Name())
		if c.expiredFailure(path) {
			os.Remove(path)
			continue
		}
		info, err := de.Info()
		if err != nil {
			continue
		}
		entries = append(entries, entry{key: de.Name(), size: info.Size(), used: info.ModTime(), failed: true})
		total += info.Size()
	}
	des, err = os.ReadDir(filepath.Join(c.dir, "modules"))
	if err != nil {
		return fmt.Errorf("compile cache eviction: %w", err)
	}
	for _, de := range des {
		if info, err := de.Info(); err == nil {
			entries = append(entries, entry{key: de.Name(), size: info.Size(), used: info.ModTime(), module: true})
			total += info.Size()
		}
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].used.Before(entries[j].used) })
	for _, e := range entries {
		if total <= c.maxBytes {
			break
		}
		if e.module {
			if err := os.Remove(filepath.Join(c.dir, "modules", e.key)); err == nil {
				total -= e.size
			}
			continue
		}
		if e.failed {
			if err := os.Remove(filepath.Join(c.dir, "failed", e.key)); err == nil {
				total -= e.size
			}
			continue
		}
		os.Remove(filepath.Join(c.dir, "index", e.key))
		if err := os.Remove(filepath.Join(c.dir, "entries", e.key)); err == nil {
			total -= e.size
		}
	}
	c.removeStale()
	return nil
}

// removeStale removes pins, staging files and locks left over: pins by the
// time in their names, the others by their modification times. A lock is
// removed only once its entry is gone.
func (c *Cache) removeStale() {
	for _, d := range []string{"pins", "tmp", "locks"} {
		des, err := os.ReadDir(filepath.Join(c.dir, d))
		if err != nil {
			continue
		}
		for _, de := range des {
			made := time.Time{}
			if d == "pins" {
				secs, _, _ := strings.Cut(de.Name(), ".")
				if n, err := strconv.ParseInt(secs, 10, 64); err == nil {
					made = time.Unix(n, 0)
				}
			} else if info, err := de.Info(); err == nil {
				made = info.ModTime()
			}
			if time.Since(made) <= staleAfter {
				continue
			}
			if d == "locks" {
				if de.Name() == "evict" {
					continue
				}
				if _, err := os.Stat(filepath.Join(c.dir, "entries", de.Name())); err == nil {
					continue
				}
			}
			os.RemoveAll(filepath.Join(c.dir, d, de.Name()))
		}
	}
}
