package shim

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/cgroups"
	"github.com/containerd-shim-wasm/containerd-shim-wasm/oci"
	"github.com/containerd-shim-wasm/containerd-shim-wasm/runtime"
	"github.com/containerd-shim-wasm/containerd-shim-wasm/runtime/cache"
)

const (
	// compileTimeout bounds how long a compile (or a check) may take.
	compileTimeout = 2 * time.Minute
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
// helper process and added. The entry says which functions the module
// exports, so the entry function is checked on a hit too. With a cache
// that cannot be used, it returns nil after checking the module in a
// helper, and the runner compiles it.
func compiledModule(ctx context.Context, opts *Options, ep *oci.Entrypoint) (*cache.Entry, error) {
	f, err := os.OpenFile(ep.HostPath, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("open module %s: %w", ep.Path, err)
	}
	defer f.Close()
	digest, err := sha256Hex(f)
	if err != nil {
		return nil, fmt.Errorf("read module %s: %w", ep.Path, err)
	}
	c, err := openCache(opts)
	if err != nil {
		log.G(ctx).WithError(err).Warn("compile cache unusable: checking the module, the runner will compile it")
		return nil, checkModule(ctx, ep)
	}
	compile := func(ctx context.Context, dir string) ([]byte, error) {
		return compileInHelper(ctx, opts, f, digest, dir, ep)
	}
	warn := func(err error) { log.G(ctx).WithError(err).Warn("compile cache") }
	entry, err := c.Get(ctx, digest, compile, warn)
	if err != nil {
		var ce *compileError
		if errors.As(err, &ce) {
			return nil, err
		}
		log.G(ctx).WithError(err).Warn("compile cache unusable: checking the module, the runner will compile it")
		return nil, checkModule(ctx, ep)
	}
	var exports runtime.Exports
	if err := json.Unmarshal(entry.Meta, &exports); err != nil {
		entry.Release()
		return nil, fmt.Errorf("compile cache entry of %s: exports: %w", ep.Path, err)
	}
	if err := exports.CheckExport(ep.Func); err != nil {
		entry.Release()
		return nil, fmt.Errorf("entrypoint %s: %w: %w", ep.Path, err, errdefs.ErrInvalidArgument)
	}
	return entry, nil
}

func openCache(opts *Options) (*cache.Cache, error) {
	engine, err := runtime.EngineID()
	if err != nil {
		return nil, err
	}
	return cache.Open(cache.Options{Root: opts.CacheRoot, MaxBytes: opts.CacheMaxBytes, Engine: engine})
}

func sha256Hex(r io.Reader) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// compileError is a compile that failed for the module's sake (invalid, or
// too large to compile within the helper's limits), not the cache's.
type compileError struct{ err error }

func (e *compileError) Error() string { return e.err.Error() }
func (e *compileError) Unwrap() error { return e.err }

// compileInHelper compiles the module in f into dir in a short-lived
// helper process (the shim's own binary, as runtime.CompilerName) in a
// cgroup of its own, so that neither a hostile module nor the compile's
// memory lands in the long-lived shim. The module reaches the helper
// through a pipe once it is in its cgroup, and is hashed on the way: what
// was compiled must be what was looked up.
func compileInHelper(ctx context.Context, opts *Options, f *os.File, digest, dir string, ep *oci.Entrypoint) ([]byte, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("read module %s: %w", ep.Path, err)
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find the shim's binary to compile the module: %w", err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("compile %s: %w", ep.Path, err)
	}
	defer pr.Close()
	defer pw.Close()
	var stdout, stderr bytes.Buffer
	cmd := &exec.Cmd{
		Path:   self,
		Args:   []string{runtime.CompilerName, dir},
		Env:    []string{},
		Stdin:  pr,
		Stdout: &stdout,
		Stderr: &stderr,
		// A compile outliving a killed shim would hold memory for nothing.
		SysProcAttr: &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL},
	}
	start := time.Now()
	ec, err := reaper.Default.Start(cmd)
	if err != nil {
		return nil, fmt.Errorf("start compile helper: %w", err)
	}
	pr.Close()
	limit := opts.CompileMemoryLimit
	if limit == 0 {
		limit = defaultCompileMemory
	}
	parent := opts.CompileCgroup
	if parent == "" {
		parent = defaultCompileCgroup
	}
	group, err := cgroups.NewGroup(path.Join("/", parent, "compile-"+strconv.Itoa(cmd.Process.Pid)), limit, compilePids)
	if err == nil {
		if err = group.Add(cmd.Process.Pid); err != nil {
			group.Delete()
		}
	}
	if err != nil {
		cmd.Process.Kill()
		reaper.Default.Wait(cmd, ec)
		return nil, fmt.Errorf("compile helper: %w", err)
	}
	defer func() {
		if err := group.Delete(); err != nil {
			log.G(ctx).WithError(err).Warn("compile helper's cgroup")
		}
	}()
	var timedOut atomic.Bool
	timer := time.AfterFunc(compileTimeout, func() { timedOut.Store(true); cmd.Process.Kill() })
	stop := context.AfterFunc(ctx, func() { cmd.Process.Kill() })
	h := sha256.New()
	_, copyErr := io.Copy(io.MultiWriter(pw, h), f)
	pw.Close()
	status, err := reaper.Default.Wait(cmd, ec)
	timer.Stop()
	stop()
	if err != nil {
		return nil, fmt.Errorf("compile helper: %w", err)
	}
	msg := strings.TrimSpace(stderr.String())
	switch {
	case status == 0:
	case status == runtime.ExitCannotRun && msg != "":
		return nil, &compileError{fmt.Errorf("entrypoint %s: %s: %w", ep.Path, msg, errdefs.ErrInvalidArgument)}
	case group.OOMKilled():
		return nil, &compileError{fmt.Errorf("compile module %s: out of memory: the compile helper's limit is %d bytes (runtime option CompileMemoryLimit): %w", ep.Path, limit, errdefs.ErrResourceExhausted)}
	case timedOut.Load():
		return nil, &compileError{fmt.Errorf("compile module %s: took more than %s: %w", ep.Path, compileTimeout, context.DeadlineExceeded)}
	case ctx.Err() != nil:
		return nil, fmt.Errorf("compile module %s: %w", ep.Path, ctx.Err())
	default:
		return nil, fmt.Errorf("compile helper for %s failed with status %d: %s", ep.Path, status, msg)
	}
	if copyErr != nil {
		return nil, fmt.Errorf("read module %s: %w", ep.Path, copyErr)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != digest {
		return nil, fmt.Errorf("module %s changed while it was compiled", ep.Path)
	}
	log.G(ctx).Debugf("compiled %s (sha256 %s) in %s", ep.Path, digest, time.Since(start))
	return bytes.TrimSpace(stdout.Bytes()), nil
}
