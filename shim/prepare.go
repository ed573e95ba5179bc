package shim

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/cache"
	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/runner"
	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/wasmmod"
	"github.com/containerd-shim-wasm/containerd-shim-wasm/oci"
)

// preparedRunner is what prepareBundle made ready for a Wasm container's
// runner.
type preparedRunner struct {
	// config is the runner's configuration.
	config *runner.Config
	// entry is the module's compiled code, pinned until runc has mounted
	// it; nil if the cache could not be used.
	entry *cache.Entry
	// module, for a module that is in no rootfs (a Wasm layer), is the
	// module, pinned until runc has mounted it; nil otherwise.
	module *cache.Pin
}

// release releases the pins, once runc has mounted them or failed.
func (p *preparedRunner) release() {
	if p.entry != nil {
		p.entry.Release()
	}
	if p.module != nil {
		p.module.Release()
	}
}

// prepareBundle finds out what the container's entrypoint is and, for a Wasm
// module, checks what is cheap to check (the spec, the runner's
// environment, the module's size and entry function), then has the module
// compiled (or finds it compiled), rewrites the bundle's spec so that runc
// starts the runner, and returns the runner's configuration. A module that
// cannot run is never compiled. The rootfs is mounted only while that is
// done: runc's shim mounts it again for the container, and owns its
// cleanup.
//
// The entrypoint may also be a module of the container's image, found
// through images (see findEntrypoint).
func prepareBundle(ctx context.Context, opts *Options, r *taskAPI.CreateTaskRequest, spec *specs.Spec, images *imageModules) (_ oci.Kind, _ *preparedRunner, retErr error) {
	if len(r.Rootfs) > 0 {
		rootfs := filepath.Join(r.Bundle, "rootfs")
		var mounts []mount.Mount
		for _, m := range r.Rootfs {
			mounts = append(mounts, mount.Mount{Type: m.Type, Source: m.Source, Target: m.Target, Options: m.Options})
		}
		if err := os.Mkdir(rootfs, 0o711); err != nil && !os.IsExist(err) {
			return 0, nil, fmt.Errorf("create rootfs mount point: %w", err)
		}
		if err := mount.All(mounts, rootfs); err != nil {
			return 0, nil, fmt.Errorf("mount rootfs to inspect the entrypoint: %w", err)
		}
		defer func() {
			if err := mount.UnmountMounts(mounts, rootfs, 0); err != nil {
				log.G(ctx).WithError(err).Warn("unmount rootfs after inspecting the entrypoint")
				if retErr == nil {
					retErr = fmt.Errorf("unmount rootfs after inspecting the entrypoint: %w", err)
				}
			}
		}()
	}
	ep, module, err := findEntrypoint(ctx, opts, r.ID, r.Bundle, spec, images)
	if err != nil {
		return 0, nil, err
	}
	if module != nil {
		defer func() {
			if retErr != nil {
				module.Release()
			}
		}()
	}
	log.G(ctx).Debugf("entrypoint %s is %s", ep.Name(), ep.Kind)
	if ep.Kind != oci.Wasm {
		return ep.Kind, nil, nil
	}
	if !hasDevTmpfs(spec) {
		return 0, nil, fmt.Errorf("runtime spec mounts no tmpfs on /dev, where the Wasm runner is mounted: %w", errdefs.ErrInvalidArgument)
	}
	cfg, err := toRunner(ep, spec.Process, false)
	if err != nil {
		return 0, nil, err
	}
	cfg.Trace = opts.Trace
	if err := checkEntry(ctx, ep); err != nil {
		return 0, nil, err
	}
	entry, err := compiledModule(ctx, opts, ep)
	if err != nil {
		return 0, nil, err
	}
	if err := writeRunnerSpec(r.Bundle, spec, cfg, entry, module); err != nil {
		if entry != nil {
			entry.Release()
		}
		return 0, nil, err
	}
	return ep.Kind, &preparedRunner{config: cfg, entry: entry, module: module}, nil
}

// findEntrypoint finds what container id runs: the Wasm variant of its
// image, if it is an index with one in the store; else process.args[0] in
// the rootfs (oci.Detect); else, if that is no file of the rootfs, the
// module of its image's Wasm layer. A module of the image comes pinned
// (module), for the caller to release. The image is looked up once; if
// containerd's API cannot be reached, the rootfs decides.
func findEntrypoint(ctx context.Context, opts *Options, id, bundle string, spec *specs.Spec, images *imageModules) (_ *oci.Entrypoint, module *cache.Pin, _ error) {
	var img *containerImage
	var imgErr error
	if images != nil {
		ctx = images.withNamespace(ctx)
		img, imgErr = images.image(ctx, id)
		if imgErr != nil && !errors.Is(imgErr, errNoImageModule) {
			log.G(ctx).WithError(imgErr).Warn("looking up the container's image")
		}
	}
	if img != nil {
		ep, pin, err := images.entrypoint(ctx, opts, img, spec, true)
		switch {
		case errors.Is(err, errNoImageModule):
		case variantUnusable(err):
			return nil, nil, fmt.Errorf("the Wasm variant of the container's image cannot run: %w", err)
		case err != nil:
			// The index could not be read: the rootfs decides.
			log.G(ctx).WithError(err).Warn("looking for a Wasm variant of the container's image")
		default:
			return ep, pin, nil
		}
	}
	ep, err := oci.Detect(bundle, spec)
	if errors.Is(err, oci.ErrNotInRootfs) && images != nil && !errors.Is(imgErr, errNoImageModule) {
		if imgErr != nil {
			return nil, nil, fmt.Errorf("entrypoint %q is no file of the container's root, and its image could not be looked at: %w", spec.Process.Args[0], imgErr)
		}
		lep, pin, lerr := images.entrypoint(ctx, opts, img, spec, false)
		switch {
		case errors.Is(lerr, errNoImageModule):
		case lerr != nil:
			return nil, nil, fmt.Errorf("entrypoint %q is no file of the container's root, and the module in its image's layer cannot run: %w", spec.Process.Args[0], lerr)
		default:
			return lep, pin, nil
		}
	}
	if errors.Is(err, oci.ErrBadEntrypoint) {
		return nil, nil, fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	return ep, nil, err
}

// checkEntry reads the module's sections up to its exports (not its code)
// and checks that it exports its entry function, callable as one. It is
// the check that spares a compile of a module that cannot run. A module
// using what the reader leaves to the compiler (wasmmod.ErrUnsupported) is
// let through: the compile judges it.
func checkEntry(ctx context.Context, ep *oci.Entrypoint) error {
	f, err := os.OpenFile(ep.HostPath, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("open module %s: %w", ep.Name(), err)
	}
	defer f.Close()
	exports, err := wasmmod.ReadExports(bufio.NewReader(f))
	var fe *wasmmod.FormatError
	switch {
	case errors.Is(err, wasmmod.ErrUnsupported):
		log.G(ctx).WithError(err).Debugf("entrypoint %s: left to the compile", ep.Name())
		return nil
	case errors.As(err, &fe):
		return fmt.Errorf("entrypoint %s: invalid module: %w: %w", ep.Name(), err, errdefs.ErrInvalidArgument)
	case err != nil:
		return fmt.Errorf("read module %s: %w", ep.Name(), err)
	}
	if err := exports.CheckEntry(ep.Func); err != nil {
		return fmt.Errorf("entrypoint %s: %w: %w", ep.Name(), err, errdefs.ErrInvalidArgument)
	}
	return nil
}

// writeRunnerSpec writes the spec, whose process toRunner has made the
// runner, with the runner bind-mounted read-only from the shim's own
// binary on the container's /dev (a tmpfs of its own), leaving the image's
// rootfs untouched. The runner's configuration cfg reaches it as a
// descriptor, never as a file in the container. The module's compiled
// code, if entry is not nil, is bind-mounted read-only as the one entry of
// a wazero cache directory on /dev as well, and cfg says so; so is the
// module, if it is in no rootfs (module is not nil), at
// runner.ModulePath.
func writeRunnerSpec(bundle string, spec *specs.Spec, cfg *runner.Config, entry *cache.Entry, module *cache.Pin) error {
	if !hasDevTmpfs(spec) {
		return fmt.Errorf("runtime spec mounts no tmpfs on /dev, where the Wasm runner is mounted: %w", errdefs.ErrInvalidArgument)
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the shim's binary for the runner: %w", err)
	}
	spec.Mounts = append(spec.Mounts,
		specs.Mount{Destination: runner.Path, Type: "bind", Source: self, Options: []string{"rbind", "ro", "nosuid", "nodev"}},
	)
	if entry != nil {
		cfg.Cache, cfg.CacheResult = runner.CachePath, runner.CodeMiss
		if entry.Hit {
			cfg.CacheResult = runner.CodeHit
		}
		spec.Mounts = append(spec.Mounts, specs.Mount{
			Destination: path.Join(runner.CachePath, entry.Name), Type: "bind", Source: entry.Path,
			Options: []string{"rbind", "ro", "nosuid", "nodev", "noexec"},
		})
	}
	if module != nil {
		spec.Mounts = append(spec.Mounts, specs.Mount{
			Destination: runner.ModulePath, Type: "bind", Source: module.Path,
			Options: []string{"rbind", "ro", "nosuid", "nodev", "noexec"},
		})
	}
	if !mountsCgroups(spec) {
		spec.Mounts = append(spec.Mounts, specs.Mount{
			Destination: runner.CgroupPath, Type: "cgroup", Source: "cgroup",
			Options: []string{"ro", "nosuid", "noexec", "nodev"},
		})
	}
	return oci.WriteSpec(bundle, spec)
}

// mountsCgroups reports whether spec mounts the container's cgroups (as
// CRI's specs do at /sys/fs/cgroup; ctr's do not).
func mountsCgroups(spec *specs.Spec) bool {
	for _, m := range spec.Mounts {
		if m.Type == "cgroup" || m.Type == "cgroup2" {
			return true
		}
	}
	return false
}

// toRunner returns the runner's configuration for running ep as process p
// (the guest gets p's args and environment) and rewrites p to start the
// runner, with an empty environment; p is left as it was on error. For a
// container's process, the listeners WASM_LISTEN names are the runner's to
// open; for an exec (containerd gives it the container's environment, but
// the listeners are the container's own process's), WASM_LISTEN is only
// taken out of the guest's environment, and the runner is told it is an
// exec (see runner.Config.Exec).
func toRunner(ep *oci.Entrypoint, p *specs.Process, exec bool) (*runner.Config, error) {
	env := guestEnv(p)
	var listeners []runner.Listener
	if !exec {
		var err error
		if env, listeners, err = takeListenEnv(env); err != nil {
			return nil, fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
		}
	} else {
		env, _, _ = splitListenEnv(env)
	}
	cfg := &runner.Config{
		Module: ep.Path,
		Name:   layerName(ep),
		Func:   ep.Func,
		Args:   append([]string{ep.Arg0}, p.Args[1:]...),
		Env:    env,
		Listen: listeners,
		Exec:   exec,
	}
	p.Args = []string{runner.Path}
	p.Env = []string{} // nothing from the image or the shim may tune the runner's Go runtime
	return cfg, nil
}

// variantUnusable tells an error of the Wasm variant lookup that says the
// image's Wasm variant cannot run (a component, content that does not
// match its digest) from one that says the image could not be looked at:
// the first fails the Create, the second leaves it to the rootfs.
func variantUnusable(err error) bool {
	return errdefs.IsInvalidArgument(err) || errdefs.IsDataLoss(err)
}

// layerName is how the runner names a module that is an image layer; ""
// for a file of the root, which it names by its path.
func layerName(ep *oci.Entrypoint) string {
	if ep.Layer == "" {
		return ""
	}
	return ep.Name()
}

// guestEnv is process.env with PWD set to process.cwd.
func guestEnv(p *specs.Process) []string {
	env := make([]string, 0, len(p.Env)+1)
	for _, kv := range p.Env {
		if k, ok := oci.EnvKey(kv); ok && k == "PWD" {
			continue
		}
		env = append(env, kv)
	}
	cwd := p.Cwd
	if cwd == "" {
		cwd = "/"
	}
	return append(env, "PWD="+cwd)
}

// splitListenEnv takes runner.ListenEnv out of a guest environment: it is
// the runner's, not the guest's. It returns the rest, and the variable's
// value ("" and false if it is not set).
func splitListenEnv(env []string) (rest []string, value string, found bool) {
	rest = env[:0:0]
	for _, kv := range env {
		if k, v, _ := strings.Cut(kv, "="); k == runner.ListenEnv {
			value, found = v, true
			continue
		}
		rest = append(rest, kv)
	}
	return rest, value, found
}

// takeListenEnv takes runner.ListenEnv out of a guest environment and
// parses it.
func takeListenEnv(env []string) ([]string, []runner.Listener, error) {
	rest, value, found := splitListenEnv(env)
	if !found {
		return rest, nil, nil
	}
	listen, err := runner.ParseListen(value)
	if err != nil {
		return nil, nil, err
	}
	return rest, listen, nil
}

func hasDevTmpfs(s *specs.Spec) bool {
	for _, m := range s.Mounts {
		if filepath.Clean(m.Destination) == "/dev" && m.Type == "tmpfs" {
			return true
		}
	}
	return false
}
