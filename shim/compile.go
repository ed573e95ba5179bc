package shim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/cache"
	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/cgroups"
	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/runner"
	"github.com/containerd-shim-wasm/containerd-shim-wasm/oci"
)

const (
	// defaultCompileCgroup is the parent cgroup of compile helpers.
	defaultCompileCgroup = "/containerd-shim-wasm"
	// defaultCompileMemory is a compile helper's memory limit: compiling
	// the 2.8 MB Go hello peaks near 70 MB RSS.
	defaultCompileMemory = 1 << 30
	// compilePids bounds a compile helper's threads.
	compilePids = 128
)

// compiledModule returns the cache entry of the entrypoint module, pinned
// for this container: found in the node's cache, or compiled now in a
// helper process and added. With a cache that cannot be used, it returns
// nil after validating the module in a helper, and the runner compiles it.
// The module's entry function has been checked before (checkEntry).
func compiledModule(ctx context.Context, opts *Options, ep *oci.Entrypoint) (*cache.Entry, error) {
	f, err := os.OpenFile(ep.HostPath, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("open module %s: %w", ep.Name(), err)
	}
	defer f.Close()
	digest := ep.SHA256
	if digest == "" {
		if digest, err = sha256Hex(f); err != nil {
			return nil, fmt.Errorf("read module %s: %w", ep.Name(), err)
		}
	}
	c, err := openCache(opts)
	if err != nil {
		log.G(ctx).WithError(err).Warn("compile cache unusable: checking the module, the runner will compile it")
		return nil, checkModule(ctx, ep)
	}
	compile := func(ctx context.Context, dir string) error {
		return compileInHelper(ctx, opts, f, digest, dir, ep)
	}
	warn := func(err error) { log.G(ctx).WithError(err).Warn("compile cache") }
	entry, err := c.Get(ctx, digest, compile, warn)
	if err != nil {
		var f *cache.Failure
		switch {
		case errors.As(err, &f) && f.Remembered:
			return nil, fmt.Errorf("%v: %w", f, failureClass(f.Kind))
		case f != nil:
			return nil, err // failed now, and remembered
		case ctx.Err() != nil:
			return nil, err // containerd gave up: nothing more to do for it
		}
		log.G(ctx).WithError(err).Warn("compile cache unusable: checking the module, the runner will compile it")
		return nil, checkModule(ctx, ep)
	}
	return entry, nil
}

func openCache(opts *Options) (*cache.Cache, error) {
	engine, err := runner.EngineID()
	if err != nil {
		return nil, err
	}
	return cache.Open(cache.Options{
		Root:        opts.CacheRoot,
		MaxBytes:    opts.CacheMaxBytes,
		Engine:      engine,
		Settings:    fmt.Sprintf("memory=%d timeout=%s", compileMemory(opts), helperTimeout),
		MaxCompiles: opts.CompileConcurrency,
	})
}

// compileMemory is a compile helper's memory limit.
func compileMemory(opts *Options) int64 {
	if opts.CompileMemoryLimit != 0 {
		return opts.CompileMemoryLimit
	}
	return defaultCompileMemory
}

// compileTotalMemory is the limit of every compile helper of the node
// together: by default a quarter of the node's memory.
func compileTotalMemory(opts *Options) int64 {
	if opts.CompileTotalMemoryLimit != 0 {
		return opts.CompileTotalMemoryLimit
	}
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil || si.Totalram == 0 {
		return 4 * defaultCompileMemory
	}
	return int64(si.Totalram) * int64(si.Unit) / 4
}

func sha256Hex(r io.Reader) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// compileError is a compile that failed for the module's sake (invalid,
// or too large to compile within the helper's limits), not the cache's:
// the shim's error, with its errdefs class, and the cache's Failure, which
// has the cache remember it. The Failure is reached by errors.As, not in
// the chain: containerd sends every branch of an error tree to its client
// as one more line.
type compileError struct {
	err     error
	failure *cache.Failure
}

func (e *compileError) Error() string { return e.err.Error() }
func (e *compileError) Unwrap() error { return e.err }

// As makes the cache's Failure reachable by errors.As.
func (e *compileError) As(target any) bool {
	if p, ok := target.(**cache.Failure); ok {
		*p = e.failure
		return true
	}
	return false
}

// moduleFailure is a compile failed for the module's sake: kind is the
// cache.Failure's Kind (see failureClass), err says why.
func moduleFailure(kind string, err error) error {
	return &compileError{
		err:     fmt.Errorf("%v: %w", err, failureClass(kind)),
		failure: &cache.Failure{Kind: kind, Reason: err.Error()},
	}
}

// failureClass is the errdefs class of a failed compile's kind.
func failureClass(kind string) error {
	switch kind {
	case "invalid":
		return errdefs.ErrInvalidArgument
	case "memory":
		return errdefs.ErrResourceExhausted
	case "timeout":
		return context.DeadlineExceeded
	}
	return errdefs.ErrFailedPrecondition
}

// compileInHelper compiles the module in f into dir in a short-lived
// helper process (the shim's own binary, as runner.CompilerName) in a
// cgroup of its own, so that neither a hostile module nor the compile's
// memory lands in the long-lived shim. The module reaches the helper
// through a pipe once it is in its cgroup, and is hashed on the way: what
// was compiled must be what was looked up.
func compileInHelper(ctx context.Context, opts *Options, f *os.File, digest, dir string, ep *oci.Entrypoint) error {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("read module %s: %w", ep.Name(), err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("compile %s: %w", ep.Name(), err)
	}
	defer pr.Close()
	defer pw.Close()
	start := time.Now()
	h, err := startHelper(ctx, runner.CompilerName, []string{dir}, pr)
	if err != nil {
		return err
	}
	pr.Close()
	limit := compileMemory(opts)
	parent := opts.CompileCgroup
	if parent == "" {
		parent = defaultCompileCgroup
	}
	// Groups of helpers whose shim was killed mid-compile are empty.
	cgroups.RemoveOrphans(cgroups.Root, parent, "compile")
	total := compileTotalMemory(opts)
	if err := cgroups.LimitMemory(parent, total); err != nil {
		log.G(ctx).WithError(err).Warn("compile helpers' total memory")
	}
	group, err := cgroups.NewGroup(path.Join("/", parent, "compile-"+strconv.Itoa(h.pid())), limit, compilePids)
	if err == nil {
		if err = group.Add(h.pid()); err != nil {
			group.Delete()
		}
	}
	if err != nil {
		h.kill()
		h.wait()
		return fmt.Errorf("compile helper: %w", err)
	}
	defer func() {
		if err := group.Delete(); err != nil {
			log.G(ctx).WithError(err).Warn("compile helper's cgroup")
		}
	}()
	sum := sha256.New()
	_, copyErr := io.Copy(io.MultiWriter(pw, sum), f)
	pw.Close()
	status, msg, err := h.wait()
	if err != nil {
		return fmt.Errorf("compile helper: %w", err)
	}
	switch {
	case status == 0:
	case status == runner.ExitCannotRun && msg != "":
		return moduleFailure("invalid", fmt.Errorf("entrypoint %s: %s", ep.Name(), msg))
	case h.timedOut.Load():
		return moduleFailure("timeout", fmt.Errorf("compile module %s: took more than %s", ep.Name(), helperTimeout))
	case ctx.Err() != nil:
		return fmt.Errorf("compile module %s: %w", ep.Name(), ctx.Err())
	case group.OOMKilled() && group.PeakMemory() >= limit-limit/16:
		return moduleFailure("memory", fmt.Errorf("compile module %s: out of memory: the compile helper's limit is %d bytes (runtime option CompileMemoryLimit)", ep.Name(), limit))
	case group.OOMKilled():
		// Under its own limit: the node's compiles together were at
		// theirs. Not the module's doing alone: not remembered.
		return fmt.Errorf("compile module %s: out of memory: the node's compiles together reached their limit of %d bytes (runtime option CompileTotalMemoryLimit): %w", ep.Name(), total, errdefs.ErrResourceExhausted)
	default:
		return fmt.Errorf("compile helper for %s failed with status %d: %s", ep.Name(), status, msg)
	}
	if copyErr != nil {
		return fmt.Errorf("read module %s: %w", ep.Name(), copyErr)
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != digest {
		return fmt.Errorf("module %s changed while it was compiled", ep.Name())
	}
	log.G(ctx).WithFields(log.Fields{"module": ep.Name(), "sha256": digest, "took": time.Since(start)}).Info("compiled")
	return nil
}
