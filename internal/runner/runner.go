package runner

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	goruntime "runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/moby/sys/mountinfo"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/experimental/sock"
	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/experimental/sysfs"
	"golang.org/x/sys/unix"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/wasmmod"
)

// Stdio is the guest's standard input, output and error.
type Stdio struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// Main is the runner's entry point inside a container: it returns the exit
// status of the process. It must run before anything else in the process
// opens a file: it reads its Config from ConfigFD, then closes every
// descriptor it inherited beyond stdio.
func Main() int {
	started := time.Now()
	// A WASI preview 1 guest has one thread, and the runner's own work
	// besides it (its Go heap's collections) is small: one P spares the
	// hand-offs between Ps and threads a second one costs each time the
	// guest blocks in poll_oneoff (a Go server's CPU per request: 1.3 ms
	// against 1.6 ms with two; see BENCHMARKS.md).
	goruntime.GOMAXPROCS(1)
	reason := reasonFile()
	fail := func(format string, a ...any) int {
		msg := fmt.Sprintf(format, a...)
		fmt.Fprintf(os.Stderr, "containerd-shim-wasm runner: %s\n", msg)
		if reason != nil {
			fmt.Fprintln(reason, msg)
		}
		return ExitRunner
	}
	cfg, err := readConfig()
	if err != nil {
		return fail("%v", err)
	}
	// runc sets HOME for a process whose spec has none (the runner's), as
	// it does for a native one: from the container's /etc/passwd for the
	// process's user, "/" if not found there. The guest gets it likewise.
	if home, ok := os.LookupEnv("HOME"); ok && !hasEnv(cfg.Env, "HOME") {
		cfg.Env = append(slices.Clip(cfg.Env), "HOME="+home)
	}
	// runc keeps only stdio and the preserved descriptors open across
	// exec, but a runner must not trust that: a leaked descriptor is a way
	// out.
	var keep []int
	if reason != nil {
		keep = append(keep, int(reason.Fd()))
	}
	if cfg.Cache == CacheFDPath {
		keep = append(keep, CacheFD)
	}
	if err := closeInherited(keep...); err != nil {
		return fail("close inherited descriptors: %v", err)
	}
	if cfg.Exec {
		// The OOM killer's first pick in the container, before the
		// process this exec runs beside.
		if err := os.WriteFile("/proc/self/oom_score_adj", []byte("1000"), 0); err != nil {
			return fail("an exec must be the first the OOM killer picks: %v", err)
		}
	}
	// The mount table serves the guest's confinement and the memory
	// budget both: read and parsed once.
	mounts, err := mountinfo.GetMounts(nil)
	if err != nil {
		return fail("the guest's file system confinement needs /proc mounted in the container: %v", err)
	}
	deny, err := denylist(mounts, cfg.Cache)
	if err != nil {
		return fail("%v", err)
	}
	env := runEnv{budget: newMemoryBudget(mounts)}
	if cfg.Cache == CacheFDPath {
		env.loaded = func() { unix.Close(CacheFD) }
	}
	if reason != nil {
		env.reason = reason
	}
	if cfg.Trace {
		env.trace = &Trace{Started: started, Setup: time.Since(started)}
	}
	root, err := NewConfinedFS("/", deny)
	if err != nil {
		return fail("%v", err)
	}
	return run(context.Background(), cfg, root, Stdio{os.Stdin, os.Stdout, os.Stderr}, env)
}

// instantiate is rt.InstantiateModule, with a memory refused at its first
// allocation (see mmapAllocator.checkFirst) returned as an error.
func instantiate(ctx context.Context, rt wazero.Runtime, compiled wazero.CompiledModule, mc wazero.ModuleConfig) (_ api.Module, err error) {
	defer func() {
		if r := recover(); r != nil {
			refused, ok := r.(memoryRefused)
			if !ok {
				panic(r)
			}
			err = refused.err
		}
	}()
	return rt.InstantiateModule(ctx, compiled, mc)
}

// hasEnv tells whether env (KEY=value pairs) sets key.
func hasEnv(env []string, key string) bool {
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k == key {
			return true
		}
	}
	return false
}

// reasonFile returns ReasonFD if it is a pipe, as the shim hands it over.
func reasonFile() *os.File {
	var st unix.Stat_t
	if err := unix.Fstat(ReasonFD, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return nil
	}
	return os.NewFile(ReasonFD, "reason")
}

// readConfig reads the Config from ConfigFD and closes it. The shim's file
// is shared with it, offset included, so it is read from its start.
func readConfig() (*Config, error) {
	var st unix.Stat_t
	if err := unix.Fstat(ConfigFD, &st); err != nil {
		return nil, fmt.Errorf("no configuration on descriptor %d: %w", ConfigFD, err)
	}
	f := os.NewFile(ConfigFD, "config")
	defer f.Close()
	return DecodeConfig(io.NewSectionReader(f, 0, st.Size))
}

// closeInherited closes every descriptor above stdio but those of keep
// and the Go runtime's own poller (an eventpoll and an eventfd, which
// reach no file).
func closeInherited(keep ...int) error {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return err
	}
	names, err := d.Readdirnames(-1)
	self := int(d.Fd())
	d.Close()
	if err != nil {
		return err
	}
	for _, name := range names {
		fd, err := strconv.Atoi(name)
		if err != nil || fd < 3 || fd == self || slices.Contains(keep, fd) {
			continue
		}
		target, err := os.Readlink("/proc/self/fd/" + name)
		if err == nil && (target == "anon_inode:[eventpoll]" || target == "anon_inode:[eventfd]") {
			continue
		}
		unix.Close(fd)
	}
	return nil
}

// denylist builds the guest's Denylist: the kernel interface file systems
// of this mount namespace (mounts, from its /proc/self/mountinfo), the
// runner's own binary, the directory of the compiled code, if any, and the
// container's compiled code, cgroup mount and module the shim added, if
// any.
func denylist(mounts []*mountinfo.Info, cache string) (*Denylist, error) {
	deny := NewDenylist(mounts)
	var st unix.Stat_t
	if err := unix.Stat(Path, &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", Path, err)
	}
	deny.DenyFile(st.Dev, st.Ino, Path)
	if cache != "" {
		if err := unix.Stat(cache, &st); err != nil {
			return nil, fmt.Errorf("stat %s: %w", cache, err)
		}
		deny.DenyFile(st.Dev, st.Ino, cache)
	}
	for _, p := range []string{CachePath, CgroupPath, ModulePath} { // an exec's cache is not the container's
		if err := unix.Stat(p, &st); err == nil {
			deny.DenyFile(st.Dev, st.Ino, p)
		}
	}
	return deny, nil
}

// Run compiles (or loads from cfg.Cache) and runs the module cfg names,
// reading it from root, and returns the process exit status. Errors of the
// module or the guest are written to stdio.Stderr, as the guest's own
// output would be.
func Run(ctx context.Context, cfg *Config, root experimentalsys.FS, stdio Stdio) int {
	return run(ctx, cfg, root, stdio, runEnv{})
}

// runEnv is what the runner adds to Run inside a container.
type runEnv struct {
	// budget keeps the guest's memory within the container's limit; nil:
	// no limit.
	budget *memoryBudget
	// trace, if not nil, has the phases timed and written to stderr.
	trace *Trace
	// reason, if not nil, gets why the guest could not run or failed (a
	// trap), as stderr does: for the shim's log.
	reason io.Writer
	// loaded, if not nil, is called once the module's code is loaded or
	// compiled: what was kept open for loading it can be closed.
	loaded func()
}

func run(ctx context.Context, cfg *Config, root experimentalsys.FS, stdio Stdio, re runEnv) int {
	budget, trace := re.budget, re.trace
	report := func(msg string) {
		fmt.Fprintf(stdio.Stderr, "%s\n", msg)
		if re.reason != nil {
			fmt.Fprintf(re.reason, "%s\n", msg)
		}
	}
	fail := func(status int, format string, a ...any) int {
		report("containerd-shim-wasm: " + fmt.Sprintf(format, a...))
		return status
	}
	if trace != nil {
		defer func() {
			budget.traced(trace)
			trace.write(stdio.Stderr)
		}()
	} else {
		trace = &Trace{} // timed, not written
	}
	phase := trace.phase()
	name := cfg.name()
	bin, err := readModule(root, cfg.Module)
	if err != nil {
		return fail(ExitCannotRun, "read module %s: %v", name, err)
	}
	phase(&trace.Read)
	// Every memory's declared minimum, before anything is loaded: wazero
	// tells of exported memories only.
	initial, read := initialMemory(bin)
	if read {
		if err := budget.checkInitial(initial); err != nil {
			return fail(ExitCannotRun, "module %s: %v", name, err)
		}
	}
	if cfg.Cache != "" {
		if err := budget.checkLoad(uint64(len(bin)), dirSize(cfg.Cache)); err != nil {
			return fail(ExitCannotRun, "module %s: %v", name, err)
		}
	}
	rt, compiled, cached, err := compile(ctx, cfg, bin, stdio.Stderr)
	if re.loaded != nil {
		re.loaded()
	}
	if rt != nil {
		defer rt.Close(ctx)
	}
	if err != nil {
		return fail(ExitCannotRun, "module %s: %v", name, err)
	}
	phase(&trace.Load)
	trace.Code = CodeCompiled
	if cached {
		trace.Code = cfg.CacheResult
	}
	if err := CheckEntry(compiled, cfg.Func); err != nil {
		return fail(ExitCannotRun, "module %s: %v", name, err)
	}
	if !read {
		if err := budget.checkInitial(exportedMemory(compiled)); err != nil {
			return fail(ExitCannotRun, "module %s: %v", name, err)
		}
	}
	fds := newGuestFDs()
	if fd := stdinFD(stdio.Stdin); fd >= 0 {
		fds.host[0] = fd
	}
	if err := instantiateWASI(ctx, rt, fds, resolver(root)); err != nil {
		return fail(ExitRunner, "instantiate WASI: %v", err)
	}
	mc := wazero.NewModuleConfig().
		WithName("").
		WithArgs(cfg.Args...).
		WithStdin(stdio.Stdin).
		WithStdout(stdio.Stdout).
		WithStderr(stdio.Stderr).
		WithSysWalltime().
		WithSysNanotime().
		WithSysNanosleep().
		WithRandSource(rand.Reader).
		WithStartFunctions(). // the entry is called below, so its exit is ours to map
		WithFSConfig(wazero.NewFSConfig().(sysfs.FSConfig).WithSysFSMount(root, "/"))
	env := cfg.Env
	if len(cfg.Listen) > 0 {
		sc := sock.NewConfig()
		for _, l := range cfg.Listen {
			sc = sc.WithTCPListener(l.Host, l.Port)
		}
		ctx = sock.WithConfig(ctx, sc)
		env = append(slices.Clip(env), listenEnv(cfg.Listen)...)
	}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		mc = mc.WithEnv(k, v)
	}
	mod, err := instantiate(experimental.WithMemoryAllocator(ctx, mmapAllocator{budget, !read}), rt, compiled, mc)
	if err != nil {
		if status, msg := ExitStatus(err); msg == "" {
			return status
		}
		return fail(ExitCannotRun, "instantiate module %s: %v", name, err)
	}
	if err := fds.addListeners(cfg.Listen); err != nil {
		return fail(ExitRunner, "%s: %v", ListenEnv, err)
	}
	phase(&trace.Instantiate)
	// Loading left garbage in the runner's heap (the module's decoding)
	// that the Go runtime would keep mapped until its scavenger gets to
	// it: with a large module, that is megabytes of the container's
	// memory for nothing. Hand it back now (about 8 ms for a 10 MB module).
	if len(bin) >= releaseAfterLoad {
		debug.FreeOSMemory()
	}
	defer phase(&trace.Run)
	budget.started()
	_, err = mod.ExportedFunction(cfg.Func).Call(ctx)
	status, msg := ExitStatus(err)
	if msg != "" {
		report(msg)
	}
	if status != 0 {
		if oom, ok := budget.outOfMemory(); ok {
			report(oom)
		}
	}
	return status
}

// compile loads the module's compiled code from cfg.Cache or, failing
// that, compiles it. A cache that cannot be used is reported on stderr and
// costs the compile, never the container.
// cached tells whether the code came from cfg.Cache.
func compile(ctx context.Context, cfg *Config, bin []byte, stderr io.Writer) (_ wazero.Runtime, _ wazero.CompiledModule, cached bool, _ error) {
	if cfg.Cache != "" {
		rt, err := newRuntime(ctx, cfg.Cache)
		if err == nil {
			var compiled wazero.CompiledModule
			if compiled, err = rt.CompileModule(ctx, bin); err == nil {
				return rt, compiled, true, nil
			}
			rt.Close(ctx)
		}
		fmt.Fprintf(stderr, "containerd-shim-wasm: compiled code of %s unusable, compiling it: %v\n", cfg.name(), err)
	}
	rt, err := newRuntime(ctx, "")
	if err != nil {
		return nil, nil, false, err
	}
	compiled, err := rt.CompileModule(ctx, bin)
	return rt, compiled, false, err
}

// CheckEntry reports whether a compiled module exports fn as a function the
// runner can call: one that takes no parameters and returns nothing, as
// WASI's _start. The shim checked as much from the module's export section
// before (package wasmmod); this is wazero's word on it.
func CheckEntry(m wazero.CompiledModule, fn string) error {
	def, ok := m.ExportedFunctions()[fn]
	if !ok {
		return fmt.Errorf("no exported function %q", fn)
	}
	params, results := def.ParamTypes(), def.ResultTypes()
	if len(params) != 0 || len(results) != 0 {
		return fmt.Errorf("exported function %q has type (%s) -> (%s); an entry function takes no parameters and returns nothing, as WASI's _start",
			fn, valueTypeNames(params), valueTypeNames(results))
	}
	return nil
}

// valueTypeNames lists value types, comma separated, at most 10.
func valueTypeNames(ts []api.ValueType) string {
	names := make([]string, 0, min(len(ts), 11))
	for i, t := range ts {
		if i == 10 {
			names = append(names, "…")
			break
		}
		names = append(names, api.ValueTypeName(t))
	}
	return strings.Join(names, ", ")
}

// readModule reads (or maps) a module through the confined file system, so
// that the runner cannot be made to load what the guest may not see either.
func readModule(root experimentalsys.FS, p string) ([]byte, error) {
	if p == ModulePath {
		return readMountedModule()
	}
	if c, ok := root.(*ConfinedFS); ok {
		return c.mapFile(p)
	}
	f, errno := root.OpenFile(relative(p), experimentalsys.O_RDONLY, 0)
	if errno != 0 {
		return nil, errno
	}
	defer f.Close()
	st, errno := f.Stat()
	if errno != 0 {
		return nil, errno
	}
	if st.Size > wasmmod.MaxSize {
		return nil, fmt.Errorf("module is %d bytes, more than the %d a module may have", st.Size, wasmmod.MaxSize)
	}
	out := make([]byte, 0, st.Size)
	buf := make([]byte, 1<<20)
	for {
		n, errno := f.Read(buf)
		out = append(out, buf[:n]...)
		if errno != 0 {
			return nil, errno
		}
		if n == 0 {
			return out, nil
		}
		if len(out) > wasmmod.MaxSize {
			return nil, fmt.Errorf("module grew past the %d bytes a module may have while it was read", wasmmod.MaxSize)
		}
	}
}

// readMountedModule maps the module the shim mounted at ModulePath (one
// that is in no rootfs), which the guest is denied.
func readMountedModule() ([]byte, error) {
	fd, err := unix.Open(ModulePath, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	return mapModule(fd, &st)
}

// resolver returns a function that resolves the symlinks of a directory
// path from root, if root is a ConfinedFS; the path itself otherwise, or
// if it cannot be resolved.
func resolver(root experimentalsys.FS) func(string) string {
	c, ok := root.(*ConfinedFS)
	return func(p string) string {
		if ok {
			if r, errno := c.resolve(p, true); errno == 0 {
				return strings.TrimSuffix(r, "/")
			}
		}
		return p
	}
}

// dirSize is the size of the regular files under dir (a cache directory
// with one module's compiled code); 0 if it cannot be read.
func dirSize(dir string) uint64 {
	var n uint64
	// The trailing slash has a symlink to the directory (CacheFDPath)
	// followed.
	filepath.WalkDir(dir+"/", func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += uint64(fi.Size())
			}
		}
		return nil
	})
	return n
}

// releaseAfterLoad is the module size from which the runner returns the
// garbage of loading it to the kernel before the guest starts.
const releaseAfterLoad = 4 << 20

// stdinFD returns the host descriptor behind the guest's stdin, or -1.
func stdinFD(r io.Reader) int {
	if f, ok := r.(*os.File); ok {
		return int(f.Fd())
	}
	return -1
}
