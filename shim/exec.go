package shim

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/oci"
	"github.com/containerd-shim-wasm/containerd-shim-wasm/runtime"
)

// Exec adds a process to a container. In a Wasm container, an exec whose
// args[0] is a Wasm module (looked up in the container's root as for the
// container's own entrypoint) runs in a runner of its own, like the
// container's: the process spec is rewritten to start the runner, which
// gets its configuration as a descriptor when `runc exec` runs it (on
// Start). It loads the module's compiled code from the container's own
// entry if it is the same module, and compiles it otherwise. A native
// program, and any exec in a native container, is run as it is.
func (s *service) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*emptypb.Empty, error) {
	ctx = s.logCtx(ctx, r.ID, r.ExecID)
	t := s.exits.get(r.ID)
	if t == nil {
		if err := checkNativeExec(s.containers.bundle(r.ID), r.Spec); err != nil {
			log.G(ctx).WithError(err).Error("exec failed")
			return nil, errgrpc.ToGRPC(err)
		}
		return s.TTRPCTaskService.Exec(ctx, r)
	}
	proc, cfg, err := prepareExec(ctx, t, r.Spec)
	if err != nil {
		log.G(ctx).WithError(err).Error("exec failed")
		return nil, errgrpc.ToGRPC(err)
	}
	if cfg == nil {
		return s.TTRPCTaskService.Exec(ctx, r)
	}
	spec, err := typeurl.MarshalAnyToProto(proc)
	if err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("encode exec process: %w", err))
	}
	rf, err := newRunnerFiles(cfg)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	rewritten := &taskAPI.ExecProcessRequest{
		ID: r.ID, ExecID: r.ExecID, Terminal: r.Terminal,
		Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Spec: spec,
	}
	resp, err := s.TTRPCTaskService.Exec(ctx, rewritten)
	if err != nil {
		rf.handedOver(log.G(ctx))
		return nil, err
	}
	// runc runs the process on Start; the files wait for it until then,
	// or until the exec is deleted unstarted.
	pidFile := execPidFile(t.bundle, r.ExecID)
	unregister := s.configs.register(pidFile, rf.files()...)
	logger := log.G(ctx)
	s.execs.add(pidFile, func() { unregister(); rf.handedOver(logger) })
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
// returns it rewritten to start the runner, and the runner's
// configuration; a nil configuration if it is to run as it is.
func prepareExec(ctx context.Context, t *wasmTask, a *anypb.Any) (*specs.Process, *runtime.Config, error) {
	proc, err := decodeProcess(a)
	if err != nil {
		return nil, nil, err
	}
	spec, err := oci.ReadSpec(t.bundle)
	if err != nil {
		return nil, nil, err
	}
	spec.Process = proc
	ep, err := oci.Detect(t.bundle, spec)
	if err != nil {
		if errors.Is(err, oci.ErrBadEntrypoint) {
			return nil, nil, fmt.Errorf("exec: %w: %w", err, errdefs.ErrInvalidArgument)
		}
		return nil, nil, fmt.Errorf("exec: %w", err)
	}
	if ep.Kind != oci.Wasm {
		return nil, nil, nil
	}
	entry, err := compiledModule(ctx, t.opts, ep)
	if err != nil {
		return nil, nil, fmt.Errorf("exec: %w", err)
	}
	if entry != nil {
		defer entry.Release()
	}
	cfg, err := toRunner(ep, proc)
	if err != nil {
		return nil, nil, fmt.Errorf("exec: %w", err)
	}
	cfg.Trace = t.opts.Trace
	// The container has its own module's compiled code mounted; another
	// module's cannot be mounted into a running container, so the runner
	// compiles that one (the node's cache has it for the next container).
	if entry != nil && entry.Name == t.entryName {
		cfg.Cache = runtime.CachePath
	}
	log.G(ctx).WithFields(log.Fields{"module": ep.Path, "cached": cfg.Cache != ""}).Debug("wasm exec")
	return proc, cfg, nil
}

// execPidFile is where runc's task service has `runc exec` write an
// exec's pid: the key by which the config monitor and the pending execs
// know the exec.
func execPidFile(bundle, execID string) string {
	return filepath.Join(bundle, execID+".pid")
}
