package shim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskv2 "github.com/containerd/containerd/api/runtime/task/v2"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	tasktypes "github.com/containerd/containerd/api/types/task"
	runctask "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/task"
	"github.com/containerd/containerd/v2/core/events"
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
// preparing Wasm containers on Create, and the kill-signal mapping on Kill
// and in every exit status it reports.
type service struct {
	taskAPI.TTRPCTaskService
	exits   *exitMapper
	configs *configMonitor
	execs   *pendingExecs
	events  *taskEvents
	// containers are all of the shim's containers, Wasm or native.
	containers *containers
}

// NewTaskService returns the task service, publishing events through
// publisher.
func NewTaskService(ctx context.Context, publisher shim.Publisher, sd shutdown.Service) (taskAPI.TTRPCTaskService, error) {
	exits := &exitMapper{wasm: map[string]*wasmTask{}}
	evs := newTaskEvents()
	inner, err := runctask.NewTaskService(ctx, &mappingPublisher{Publisher: publisher, exits: exits, events: evs}, sd)
	if err != nil {
		return nil, fmt.Errorf("create runc task service: %w", err)
	}
	// The runc task service has set go-runc's monitor to the shim's reaper;
	// wrap it so that `runc create` can hand the runner its configuration.
	configs := newConfigMonitor(runc.Monitor)
	runc.Monitor = configs
	removeSocketsOnShutdown(sd)
	// pkg/shim exits once the shutdown callbacks are done, without waiting
	// for the runc task service to publish the events still queued: the
	// last task's /tasks/exit or /tasks/delete was lost now and then.
	sd.RegisterCallback(evs.wait)
	return &service{TTRPCTaskService: inner, exits: exits, configs: configs, execs: &pendingExecs{files: map[string]func(){}}, events: evs,
		containers: newContainers()}, nil
}

// RegisterTTRPC registers the service on the shim's ttrpc server, as task
// API v3 and, for containerd 1.7, v2 (see taskV2).
func (s *service) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTTRPCTaskService(server, s)
	taskv2.RegisterTTRPCTaskService(server, taskV2{v3: s})
	return nil
}

// Create prepares the bundle (for a Wasm entrypoint: the runner and its
// configuration) and has runc create the container.
func (s *service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
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
		err = fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
		log.G(s.logCtx(ctx, r.ID, "")).WithError(err).Error("create failed")
		return nil, errgrpc.ToGRPC(err)
	}
	s.containers.created(r.ID, r.Bundle, spec)
	ctx = s.logCtx(ctx, r.ID, "")
	kind, wb, err := prepareBundle(ctx, opts, r, spec)
	if err != nil {
		log.G(ctx).WithError(err).Error("create failed")
		return nil, errgrpc.ToGRPC(err)
	}
	prepared := time.Now()
	if kind == oci.Wasm {
		if wb.entry != nil {
			defer wb.entry.Release() // runc create has mounted it, or failed
		}
		rf, err := newRunnerFiles(wb.config)
		if err != nil {
			return nil, errgrpc.ToGRPC(err)
		}
		defer rf.handedOver(log.G(ctx))
		defer s.configs.register(r.Bundle, rf.files()...)()
		t := &wasmTask{bundle: r.Bundle, opts: opts}
		if wb.entry != nil {
			t.entryName = wb.entry.Name
		}
		s.exits.add(r.ID, t)
	}
	resp, err := s.TTRPCTaskService.Create(ctx, r)
	if err != nil {
		s.exits.remove(r.ID, 0)
		log.G(ctx).WithError(err).Error("create failed")
		return nil, err
	}
	s.exits.setPid(r.ID, resp.Pid)
	s.events.created(r.ID)
	fields := log.Fields{"kind": kind.String(), "prepare": prepared.Sub(start), "runc_create": time.Since(prepared)}
	if wb != nil && wb.entry != nil {
		fields["cache_hit"] = wb.entry.Hit
	}
	log.G(ctx).WithFields(fields).Debug("created")
	return resp, nil
}

// Start implements the task service.
func (s *service) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	if r.ExecID != "" {
		if t := s.exits.get(r.ID); t != nil {
			defer s.execs.done(execPidFile(t.bundle, r.ExecID))
		}
	}
	ctx = s.logCtx(ctx, r.ID, r.ExecID)
	start := time.Now()
	resp, err := s.TTRPCTaskService.Start(ctx, r)
	if err != nil {
		log.G(ctx).WithError(err).Error("start failed")
	} else {
		if r.ExecID == "" {
			s.events.started(r.ID)
		}
		log.G(ctx).WithField("runc_start", time.Since(start)).Debug("started")
	}
	return resp, err
}

// Kill sends a signal. To a Wasm task's init process, a signal whose default
// action ends a process is sent as SIGKILL; the exit is then reported as
// 128 + the signal requested.
func (s *service) Kill(ctx context.Context, r *taskAPI.KillRequest) (*emptypb.Empty, error) {
	if r.ExecID == "" {
		if sig, ok := s.exits.killing(r.ID, r.Signal); ok {
			log.G(s.logCtx(ctx, r.ID, "")).Debugf("wasm task: signal %d sent as SIGKILL", r.Signal)
			r = &taskAPI.KillRequest{ID: r.ID, ExecID: r.ExecID, Signal: sig, All: r.All}
		}
	}
	return s.TTRPCTaskService.Kill(ctx, r)
}

// Wait implements the task service.
func (s *service) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	resp, err := s.TTRPCTaskService.Wait(ctx, r)
	if err == nil && r.ExecID == "" {
		resp.ExitStatus = s.exits.status(r.ID, resp.ExitStatus)
	}
	return resp, err
}

// State implements the task service.
func (s *service) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	resp, err := s.TTRPCTaskService.State(ctx, r)
	if err == nil && r.ExecID == "" && resp.Status == tasktypes.Status_STOPPED {
		resp.ExitStatus = s.exits.status(r.ID, resp.ExitStatus)
	}
	return resp, err
}

// Delete implements the task service. What it reports of a Wasm task is
// taken before runc's task service queues the delete event, so that the
// event going out first changes nothing.
func (s *service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	t := s.exits.get(r.ID)
	if r.ExecID != "" {
		if t != nil {
			defer s.execs.done(execPidFile(t.bundle, r.ExecID))
		}
	}
	resp, err := s.TTRPCTaskService.Delete(ctx, r)
	if err == nil && r.ExecID == "" {
		if t != nil {
			resp.ExitStatus = MapExitStatus(resp.ExitStatus, t.signal)
			s.execs.doneAll(t.bundle) // execs added and never started
		}
		if resp.ExitStatus != 0 {
			log.G(s.logCtx(ctx, r.ID, "")).WithField("exit_status", resp.ExitStatus).Info("deleted a failed task")
		}
		s.containers.deleted(r.ID)
		if s.events.deleted(r.ID) && t != nil {
			s.exits.remove(r.ID, t.pid)
		}
	}
	return resp, err
}

// mappingPublisher rewrites the exit status in a Wasm task's /tasks/exit and
// /tasks/delete events, as the service does in its responses, and forgets
// the task once both are out (they go out in either order: see
// taskEvents).
type mappingPublisher struct {
	shim.Publisher
	exits  *exitMapper
	events *taskEvents
}

func (p *mappingPublisher) Publish(ctx context.Context, topic string, event events.Event) error {
	switch e := event.(type) {
	case *eventstypes.TaskExit:
		if e.ID == e.ContainerID {
			e.ExitStatus = p.exits.status(e.ContainerID, e.ExitStatus)
			defer p.forget(e.ContainerID, e.Pid, p.events.exitPublished)
		}
	case *eventstypes.TaskDelete:
		if e.ID == "" || e.ID == e.ContainerID {
			e.ExitStatus = p.exits.status(e.ContainerID, e.ExitStatus)
			defer p.forget(e.ContainerID, e.Pid, p.events.deletePublished)
		}
	}
	// An event that could not be forwarded is queued to be sent again, or
	// lost: either way nothing more can be done for it.
	return p.Publisher.Publish(ctx, topic, event)
}

// forget records an event of container id's init as out, and forgets the
// Wasm task once nothing more of it is awaited.
func (p *mappingPublisher) forget(id string, pid uint32, published func(string) bool) {
	if published(id) {
		p.exits.remove(id, pid)
	}
}

// wasmTask is what the shim remembers of a Wasm container.
type wasmTask struct {
	// bundle is the task's bundle directory.
	bundle string
	// opts are the runtime options it was created with.
	opts *Options
	// entryName is the name of its module's compiled code, mounted in the
	// container; "" if none is.
	entryName string
	// pid of the task's init process, once created.
	pid uint32
	// signal is the first terminating signal requested, 0 if none.
	signal uint32
}

// exitMapper holds the Wasm tasks of this shim and maps their statuses.
type exitMapper struct {
	mu   sync.Mutex
	wasm map[string]*wasmTask
}

func (m *exitMapper) add(id string, t *wasmTask) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.wasm[id] = t
}

// get returns a copy of Wasm task id, nil if id is no Wasm task.
func (m *exitMapper) get(id string) *wasmTask {
	m.mu.Lock()
	defer m.mu.Unlock()
	if t, ok := m.wasm[id]; ok {
		c := *t
		return &c
	}
	return nil
}

func (m *exitMapper) setPid(id string, pid uint32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if t, ok := m.wasm[id]; ok {
		t.pid = pid
	}
}

// remove forgets task id, if pid is 0 or its pid: a task created again
// under the same id is not forgotten by the old one's late event.
func (m *exitMapper) remove(id string, pid uint32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if t, ok := m.wasm[id]; ok && (pid == 0 || t.pid == pid) {
		delete(m.wasm, id)
	}
}

// killing records a signal requested for task id and returns the signal to
// send instead, if id is a Wasm task and sig ends a process.
func (m *exitMapper) killing(id string, sig uint32) (uint32, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.wasm[id]
	if !ok || !Terminating(sig) {
		return 0, false
	}
	if t.signal == 0 {
		t.signal = sig
		if t.bundle != "" {
			// For `delete`, which reports the exit when the shim is gone.
			if err := writeKillSignal(t.bundle, sig); err != nil {
				log.L.WithError(err).Warn("record the kill signal in the bundle")
			}
		}
	}
	return sigKill, true
}

// status maps the exit status of task id's init process.
func (m *exitMapper) status(id string, status uint32) uint32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if t, ok := m.wasm[id]; ok {
		return MapExitStatus(status, t.signal)
	}
	return status
}

// pendingExecs holds the runner files of Wasm execs, by the exec's pid
// file, between Exec and Start (or Delete, if never started).
type pendingExecs struct {
	mu    sync.Mutex
	files map[string]func()
}

func (p *pendingExecs) add(key string, release func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if old := p.files[key]; old != nil {
		old()
	}
	p.files[key] = release
}

// done withdraws and closes the configuration of exec key, if any.
func (p *pendingExecs) done(key string) {
	p.mu.Lock()
	release := p.files[key]
	delete(p.files, key)
	p.mu.Unlock()
	if release != nil {
		release()
	}
}

// doneAll withdraws the configurations of every exec of bundle.
func (p *pendingExecs) doneAll(bundle string) {
	p.mu.Lock()
	var release []func()
	for key, r := range p.files {
		if filepath.Dir(key) == bundle {
			release = append(release, r)
			delete(p.files, key)
		}
	}
	p.mu.Unlock()
	for _, r := range release {
		r()
	}
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
