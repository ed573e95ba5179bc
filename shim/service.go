package shim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskv2 "github.com/containerd/containerd/api/runtime/task/v2"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	tasktypes "github.com/containerd/containerd/api/types/task"
	runctask "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/task"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/oci"
)

// service is the task service v3. It delegates to containerd's runc task
// service for the container lifecycle and adds what is Wasm-specific:
// preparing Wasm containers on Create and Exec, and the kill-signal
// mapping on Kill and in every exit status it reports. What it knows of
// each container is one record in containers.
type service struct {
	taskAPI.TTRPCTaskService
	containers *containers
	// unusable is why the shim's binary cannot run as the Wasm runner
	// (see checkRunnerBinary), nil if it can. Every Create then fails
	// with it: a shim that runs native containers alone would leave the
	// broken install unnoticed until the first Wasm container.
	unusable error
	// images finds the modules of images that carry them in a layer.
	images *imageModules
}

// NewTaskService returns the task service, publishing events through
// publisher. address is containerd's gRPC socket, from which the modules of
// images that carry them in a layer are read ("": none are).
func NewTaskService(ctx context.Context, publisher shim.Publisher, sd shutdown.Service, address string) (taskAPI.TTRPCTaskService, error) {
	cs := newContainers()
	inner, err := runctask.NewTaskService(ctx, &statusPublisher{Publisher: publisher, containers: cs}, sd)
	if err != nil {
		return nil, fmt.Errorf("create runc task service: %w", err)
	}
	// The runc task service has set go-runc's monitor to the shim's reaper;
	// wrap it so that `runc create` and `runc exec` can hand a runner its
	// descriptors.
	runc.Monitor = &fdMonitor{ProcessMonitor: runc.Monitor, lookup: cs.runnerFiles}
	removeSocketsOnShutdown(sd)
	// pkg/shim exits once the shutdown callbacks are done, without waiting
	// for the runc task service to publish the events still queued: the
	// last task's /tasks/exit or /tasks/delete was lost now and then.
	sd.RegisterCallback(cs.wait)
	unusable := checkRunnerBinary()
	if unusable != nil {
		log.G(ctx).WithError(unusable).Error("every Create will fail")
	}
	ns, _ := namespaces.Namespace(ctx)
	images := &imageModules{address: address, namespace: ns}
	sd.RegisterCallback(func(context.Context) error { images.close(); return nil })
	return &service{TTRPCTaskService: inner, containers: cs, unusable: unusable, images: images}, nil
}

// RegisterTTRPC registers the service on the shim's ttrpc server, as task
// API v3 and, for containerd 1.7, v2 (see taskV2).
func (s *service) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTTRPCTaskService(server, s)
	taskv2.RegisterTTRPCTaskService(server, taskV2{v3: s})
	return nil
}

// Create prepares the bundle (for a Wasm entrypoint: the runner and its
// configuration) and has runc create the container. A Create that fails
// leaves no record behind.
func (s *service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (_ *taskAPI.CreateTaskResponse, retErr error) {
	ctx = s.containers.logCtx(ctx, r.ID, "")
	defer func() {
		if retErr != nil && !errdefs.IsAborted(errgrpc.ToNative(retErr)) {
			log.G(ctx).WithError(retErr).Error("create failed")
		}
	}()
	if s.unusable != nil {
		return nil, errgrpc.ToGRPC(s.unusable)
	}
	opts, ropts, err := parseOptions(r.Options)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if r.Options, err = typeurl.MarshalAnyToProto(ropts); err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("encode runc options: %w", err))
	}
	start := time.Now()
	spec, err := oci.ReadSpec(r.Bundle)
	if err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument))
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c := &container{id: r.ID, bundle: r.Bundle, sandbox: spec.Annotations[sandboxAnnotation], cancelCreate: cancel}
	if err := s.containers.add(c); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	ctx = s.containers.logCtx(ctx, r.ID, "")
	created := false
	defer func() {
		if !created {
			handOver(s.containers.abandon(r.ID)...)
		}
	}()
	kind, prepared, err := prepareBundle(ctx, opts, r, spec, s.images)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if spec.Annotations[CompileOnlyAnnotation] == "true" {
		return nil, errgrpc.ToGRPC(compiledOnly(ctx, kind, prepared))
	}
	preparedAt := time.Now()
	if kind == oci.Wasm {
		defer prepared.release() // runc create has mounted the pins, or failed
		rf, err := newRunnerFiles(prepared.config, log.G(ctx))
		if err != nil {
			return nil, errgrpc.ToGRPC(err)
		}
		s.containers.setWasm(r.ID, &wasmContainer{opts: opts, init: rf, initReport: rf.report})
	}
	resp, err := s.TTRPCTaskService.Create(ctx, r)
	handOver(s.containers.createReturned(r.ID))
	if err != nil {
		return nil, err
	}
	created = true
	s.containers.created(r.ID, resp.Pid)
	fields := log.Fields{"kind": kind.String(), "prepare": preparedAt.Sub(start), "runc_create": time.Since(preparedAt)}
	if prepared != nil && prepared.entry != nil {
		fields["cache_hit"] = prepared.entry.Hit
	}
	log.G(ctx).WithFields(fields).Debug("created")
	return resp, nil
}

// CompileOnlyAnnotation, set to "true" on a container, has Create do only
// what comes before runc: find the entrypoint and, for a Wasm module,
// check it and have it compiled into the node's cache. Create then fails
// with errdefs.ErrAborted and a message beginning "compile only:" that
// says what was done; nothing is left of the container. The node agent
// (containerd-shim-wasm-install agent) compiles pulled images this way.
const CompileOnlyAnnotation = "containerd-shim-wasm.io/compile-only"

// compiledOnly releases what prepareBundle pinned for a compile-only
// Create and returns its error.
func compiledOnly(ctx context.Context, kind oci.Kind, prepared *preparedRunner) error {
	if kind != oci.Wasm {
		return fmt.Errorf("compile only: the entrypoint is %s, nothing to compile: %w", kind, errdefs.ErrAborted)
	}
	defer prepared.release()
	how := "compiled now"
	switch {
	case prepared.entry == nil:
		return fmt.Errorf("compile only: the module is valid, but the compile cache is unusable: %w", errdefs.ErrAborted)
	case prepared.entry.Hit:
		how = "already compiled"
	}
	log.G(ctx).WithField("module", prepared.config.Module).Debug("compile only: " + how)
	return fmt.Errorf("compile only: module %s (sha256 %s): %w", how, prepared.entry.Module, errdefs.ErrAborted)
}

// Start implements the task service.
func (s *service) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	if r.ExecID != "" {
		// `runc exec` runs now: its runner's descriptors are passed on.
		defer func() { handOver(s.containers.execDone(r.ID, r.ExecID)) }()
	}
	ctx = s.containers.logCtx(ctx, r.ID, r.ExecID)
	start := time.Now()
	resp, err := s.TTRPCTaskService.Start(ctx, r)
	if err != nil {
		log.G(ctx).WithError(err).Error("start failed")
		return resp, err
	}
	if r.ExecID == "" {
		s.containers.started(r.ID)
	}
	log.G(ctx).WithField("runc_start", time.Since(start)).Debug("started")
	return resp, nil
}

// Kill sends a signal. To a Wasm task's init process, a signal whose default
// action ends a process is sent as SIGKILL; the exit is then reported as
// 128 + the signal requested.
func (s *service) Kill(ctx context.Context, r *taskAPI.KillRequest) (*emptypb.Empty, error) {
	if r.ExecID == "" {
		if sig, ok := s.containers.killing(r.ID, r.Signal); ok {
			log.G(s.containers.logCtx(ctx, r.ID, "")).Debugf("wasm task: signal %d sent as SIGKILL", r.Signal)
			r = &taskAPI.KillRequest{ID: r.ID, ExecID: r.ExecID, Signal: sig, All: r.All}
		}
	}
	return s.TTRPCTaskService.Kill(ctx, r)
}

// Wait implements the task service.
func (s *service) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	resp, err := s.TTRPCTaskService.Wait(ctx, r)
	if err == nil && r.ExecID == "" {
		resp.ExitStatus = s.containers.status(r.ID, resp.ExitStatus)
	}
	return resp, err
}

// State implements the task service.
func (s *service) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	resp, err := s.TTRPCTaskService.State(ctx, r)
	if err == nil && r.ExecID == "" && resp.Status == tasktypes.Status_STOPPED {
		resp.ExitStatus = s.containers.status(r.ID, resp.ExitStatus)
	}
	return resp, err
}

// Delete implements the task service. What it reports of a Wasm task is
// taken before runc's task service queues the delete event, so that the
// event going out first changes nothing.
func (s *service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	if r.ExecID != "" {
		resp, err := s.TTRPCTaskService.Delete(ctx, r)
		if err == nil {
			handOver(s.containers.execDone(r.ID, r.ExecID)) // an exec never started
		}
		return resp, err
	}
	s.containers.cancelCreate(r.ID) // a Create containerd gave up on
	sig := s.containers.killSignal(r.ID)
	resp, err := s.TTRPCTaskService.Delete(ctx, r)
	if err != nil {
		return resp, err
	}
	resp.ExitStatus = MapExitStatus(resp.ExitStatus, sig)
	handOver(s.containers.deleted(r.ID)...) // execs added and never started
	log.G(s.containers.logCtx(ctx, r.ID, "")).WithField("exit_status", resp.ExitStatus).Debug("deleted")
	return resp, nil
}

// reportTimeout bounds how long an exit event waits for what the exited
// runner said (see runnerReport).
const reportTimeout = time.Second

// statusPublisher precedes the /tasks/exit event of a Wasm task whose
// guest failed out of memory (a memory.grow refused at the container's
// limit) with a /tasks/oom event; it rewrites the exit status in a Wasm
// task's /tasks/exit and /tasks/delete events, as the service does in its
// responses, and records each as out in the container's record, which
// ends once the container is deleted and both are out (they go out in
// either order: see containers).
type statusPublisher struct {
	shim.Publisher
	containers *containers
}

// Publish implements shim.Publisher.
func (p *statusPublisher) Publish(ctx context.Context, topic string, event events.Event) error {
	switch e := event.(type) {
	case *eventstypes.TaskExit:
		if e.ID == e.ContainerID {
			if p.containers.initReport(e.ContainerID, e.Pid).outOfMemory(reportTimeout) {
				// As the kernel's OOM kill of a native process is: CRI
				// then gives the exit the reason OOMKilled.
				p.Publisher.Publish(ctx, runtime.TaskOOMEventTopic, &eventstypes.TaskOOM{ContainerID: e.ContainerID})
			}
			defer p.containers.published(e.ContainerID, e.Pid, &e.ExitStatus, true)()
		}
	case *eventstypes.TaskDelete:
		if e.ID == "" || e.ID == e.ContainerID {
			defer p.containers.published(e.ContainerID, e.Pid, &e.ExitStatus, false)()
		}
	}
	// An event that could not be forwarded is queued to be sent again, or
	// lost: either way nothing more can be done for it.
	return p.Publisher.Publish(ctx, topic, event)
}

// removeSocketsOnShutdown removes the shim's own socket files when it shuts
// down. runc's task service removes the one named in the bundle's
// "address" file if that file is there when the service starts (the front
// end for containerd 1.7 to 2.2 writes it: see legacyStart); nothing else
// would remove the others (a grouped shim whose group saw a failed Create
// left its socket behind). The server's listening sockets are descriptors 3
// (and 4 with debug logging), as pkg/shim hands them over. A socket gone
// already is no error: an error of one shutdown callback cuts the others
// short.
func removeSocketsOnShutdown(sd shutdown.Service) {
	var runcRemoves string
	if address, err := shim.ReadAddress(addressFile); err == nil {
		runcRemoves = strings.TrimPrefix(address, "unix://")
	}
	for _, fd := range []int{3, 4} {
		sa, err := unix.Getsockname(fd)
		if err != nil {
			continue
		}
		if u, ok := sa.(*unix.SockaddrUnix); ok && strings.HasPrefix(u.Name, "/") && u.Name != runcRemoves {
			path := u.Name
			sd.RegisterCallback(func(context.Context) error {
				if err := shim.RemoveSocket("unix://" + path); err != nil && !errors.Is(err, os.ErrNotExist) {
					return err
				}
				return nil
			})
		}
	}
}
