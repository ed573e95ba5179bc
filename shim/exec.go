package shim

import (
	"context"
	"errors"
	"fmt"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/cache"
	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/runner"
	"github.com/containerd-shim-wasm/containerd-shim-wasm/oci"
)

// Exec adds a process to a container. In a Wasm container, an exec whose
// args[0] is a Wasm module (looked up in the container's root as for the
// container's own entrypoint) runs in a runner of its own, like the
// container's: the process spec is rewritten to start the runner, which
// gets its configuration as a descriptor when `runc exec` runs it (on
// Start). The module is compiled through the node's compile cache, as a
// container's entrypoint is, and its runner gets the compiled code as a
// descriptor too (runner.CacheFD): the mounts of a running container
// cannot change. A native program, and any exec in a native container, is
// run as it is.
func (s *service) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*emptypb.Empty, error) {
	ctx = s.containers.logCtx(ctx, r.ID, r.ExecID)
	c, ok := s.containers.get(r.ID)
	if !ok || c.wasm == nil {
		if err := checkNativeExec(c.bundle, r.Spec); err != nil {
			log.G(ctx).WithError(err).Error("exec failed")
			return nil, errgrpc.ToGRPC(err)
		}
		return s.TTRPCTaskService.Exec(ctx, r)
	}
	proc, cfg, code, err := prepareExec(ctx, &c, r.Spec)
	if err != nil {
		log.G(ctx).WithError(err).Error("exec failed")
		return nil, errgrpc.ToGRPC(err)
	}
	if cfg == nil {
		return s.TTRPCTaskService.Exec(ctx, r)
	}
	rf, err := execRunnerFiles(cfg, code, log.G(ctx))
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	spec, err := typeurl.MarshalAnyToProto(proc)
	if err != nil {
		rf.handedOver()
		return nil, errgrpc.ToGRPC(fmt.Errorf("encode exec process: %w", err))
	}
	// runc runs the process on Start; the descriptors wait for it until
	// then, or until the exec is deleted unstarted.
	replaced, err := s.containers.addExec(r.ID, r.ExecID, rf)
	handOver(replaced)
	if err != nil {
		rf.handedOver()
		return nil, errgrpc.ToGRPC(err)
	}
	rewritten := &taskAPI.ExecProcessRequest{
		ID: r.ID, ExecID: r.ExecID, Terminal: r.Terminal,
		Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Spec: spec,
	}
	resp, err := s.TTRPCTaskService.Exec(ctx, rewritten)
	if err != nil {
		handOver(s.containers.execDone(r.ID, r.ExecID))
		return nil, err
	}
	return resp, nil
}

// checkNativeExec refuses an exec of a Wasm module into a native
// container (of bundle; "" if unknown), which has no runner. Anything else
// is left to runc.
func checkNativeExec(bundle string, a *anypb.Any) error {
	if bundle == "" {
		return nil
	}
	proc, err := decodeProcess(a)
	if err != nil {
		return err
	}
	spec, err := oci.ReadSpec(bundle)
	if err != nil {
		return nil // runc will say what is wrong with the container
	}
	spec.Process = proc
	if ep, err := oci.Detect(bundle, spec); err == nil && ep.Kind == oci.Wasm {
		return fmt.Errorf("exec %s: a Wasm module runs only in a container whose own entrypoint is Wasm; this one runs natively: %w", ep.Path, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// decodeProcess decodes an exec's process spec.
func decodeProcess(a *anypb.Any) (*specs.Process, error) {
	v, err := typeurl.UnmarshalAny(a)
	if err != nil {
		return nil, fmt.Errorf("decode exec process: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	proc, ok := v.(*specs.Process)
	if !ok || len(proc.Args) == 0 {
		return nil, fmt.Errorf("exec process has no args: %w", errdefs.ErrInvalidArgument)
	}
	return proc, nil
}

// prepareExec decodes an exec's process and, if it runs a Wasm module,
// returns it rewritten to start the runner, the runner's configuration,
// and the entry of the module's compiled code (nil if the compile cache is
// unusable: the runner then compiles), which the caller releases; a nil
// configuration if it is to run as it is.
func prepareExec(ctx context.Context, c *container, a *anypb.Any) (*specs.Process, *runner.Config, *cache.Entry, error) {
	proc, err := decodeProcess(a)
	if err != nil {
		return nil, nil, nil, err
	}
	spec, err := oci.ReadSpec(c.bundle)
	if err != nil {
		return nil, nil, nil, err
	}
	spec.Process = proc
	ep, err := oci.Detect(c.bundle, spec)
	if err != nil {
		if errors.Is(err, oci.ErrBadEntrypoint) {
			return nil, nil, nil, fmt.Errorf("exec: %w: %w", err, errdefs.ErrInvalidArgument)
		}
		return nil, nil, nil, fmt.Errorf("exec: %w", err)
	}
	if ep.Kind != oci.Wasm {
		return nil, nil, nil, nil
	}
	cfg, err := toRunner(ep, proc, true)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("exec: %w", err)
	}
	cfg.Trace = c.wasm.opts.Trace
	if err := checkEntry(ctx, ep); err != nil {
		return nil, nil, nil, fmt.Errorf("exec: %w", err)
	}
	entry, err := compiledModule(ctx, c.wasm.opts, ep)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("exec: %w", err)
	}
	if entry != nil {
		cfg.Cache, cfg.CacheResult = runner.CacheFDPath, runner.CodeMiss
		if entry.Hit {
			cfg.CacheResult = runner.CodeHit
		}
	}
	log.G(ctx).WithFields(log.Fields{"module": ep.Path, "cached": cfg.Cache != ""}).Debug("wasm exec")
	return proc, cfg, entry, nil
}

// execRunnerFiles makes the descriptors of an exec's runner, with the
// directory of its module's compiled code if code is not nil, which is
// released once the runner has exited (or never ran), or now on error.
func execRunnerFiles(cfg *runner.Config, code *cache.Entry, logger *log.Entry) (*runnerFiles, error) {
	release := func() {
		if code != nil {
			if err := code.Release(); err != nil {
				logger.WithError(err).Warn("release compiled code")
			}
		}
	}
	rf, err := newRunnerFiles(cfg, logger)
	if err != nil {
		release()
		return nil, err
	}
	if code == nil {
		return rf, nil
	}
	dir, err := code.Dir()
	if err == nil {
		err = rf.withCode(dir, release)
	} else {
		release()
	}
	if err != nil {
		rf.handedOver()
		return nil, fmt.Errorf("exec: %w", err)
	}
	return rf, nil
}
