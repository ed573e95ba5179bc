package shim

import (
	"context"
	"net"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	taskv2 "github.com/containerd/containerd/api/runtime/task/v2"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// recordingTasks is a task service v3 that records each request and
// answers with a fixed response.
type recordingTasks struct {
	mu   sync.Mutex
	reqs map[string]proto.Message
}

func (f *recordingTasks) rec(method string, req proto.Message) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.reqs == nil {
		f.reqs = map[string]proto.Message{}
	}
	f.reqs[method] = req
}

var (
	exitedAt = timestamppb.New(time.Date(2026, 12, 3, 4, 5, 6, 7, time.UTC))
	stats    = &anypb.Any{TypeUrl: "io.containerd.cgroups.v1.Metrics", Value: []byte{1, 2, 3}}
)

func (f *recordingTasks) State(_ context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	f.rec("State", r)
	return &taskAPI.StateResponse{ID: r.ID, Bundle: "/b", Pid: 42, Status: tasktypes.Status_STOPPED, ExitStatus: 143, ExitedAt: exitedAt, Terminal: true}, nil
}
func (f *recordingTasks) Create(_ context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	f.rec("Create", r)
	return &taskAPI.CreateTaskResponse{Pid: 42}, nil
}
func (f *recordingTasks) Start(_ context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	f.rec("Start", r)
	return &taskAPI.StartResponse{Pid: 43}, nil
}
func (f *recordingTasks) Delete(_ context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	f.rec("Delete", r)
	return &taskAPI.DeleteResponse{Pid: 42, ExitStatus: 143, ExitedAt: exitedAt}, nil
}
func (f *recordingTasks) Pids(_ context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	f.rec("Pids", r)
	return &taskAPI.PidsResponse{Processes: []*tasktypes.ProcessInfo{{Pid: 42}, {Pid: 44}}}, nil
}
func (f *recordingTasks) Pause(_ context.Context, r *taskAPI.PauseRequest) (*emptypb.Empty, error) {
	f.rec("Pause", r)
	return &emptypb.Empty{}, nil
}
func (f *recordingTasks) Resume(_ context.Context, r *taskAPI.ResumeRequest) (*emptypb.Empty, error) {
	f.rec("Resume", r)
	return &emptypb.Empty{}, nil
}
func (f *recordingTasks) Checkpoint(_ context.Context, r *taskAPI.CheckpointTaskRequest) (*emptypb.Empty, error) {
	f.rec("Checkpoint", r)
	return nil, errgrpc.ToGRPC(errdefs.ErrNotImplemented)
}
func (f *recordingTasks) Kill(_ context.Context, r *taskAPI.KillRequest) (*emptypb.Empty, error) {
	f.rec("Kill", r)
	return &emptypb.Empty{}, nil
}
func (f *recordingTasks) Exec(_ context.Context, r *taskAPI.ExecProcessRequest) (*emptypb.Empty, error) {
	f.rec("Exec", r)
	return &emptypb.Empty{}, nil
}
func (f *recordingTasks) ResizePty(_ context.Context, r *taskAPI.ResizePtyRequest) (*emptypb.Empty, error) {
	f.rec("ResizePty", r)
	return &emptypb.Empty{}, nil
}
func (f *recordingTasks) CloseIO(_ context.Context, r *taskAPI.CloseIORequest) (*emptypb.Empty, error) {
	f.rec("CloseIO", r)
	return &emptypb.Empty{}, nil
}
func (f *recordingTasks) Update(_ context.Context, r *taskAPI.UpdateTaskRequest) (*emptypb.Empty, error) {
	f.rec("Update", r)
	return &emptypb.Empty{}, nil
}
func (f *recordingTasks) Wait(_ context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	f.rec("Wait", r)
	return &taskAPI.WaitResponse{ExitStatus: 143, ExitedAt: exitedAt}, nil
}
func (f *recordingTasks) Stats(_ context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	f.rec("Stats", r)
	return &taskAPI.StatsResponse{Stats: stats}, nil
}
func (f *recordingTasks) Connect(_ context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	f.rec("Connect", r)
	return &taskAPI.ConnectResponse{ShimPid: 7, TaskPid: 42, Version: "x"}, nil
}
func (f *recordingTasks) Shutdown(_ context.Context, r *taskAPI.ShutdownRequest) (*emptypb.Empty, error) {
	f.rec("Shutdown", r)
	return &emptypb.Empty{}, nil
}

// serveTasks serves svc's ttrpc services on a socket and returns a client.
func serveTasks(t *testing.T, register func(*ttrpc.Server) error) *ttrpc.Client {
	t.Helper()
	server, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	if err := register(server); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "shim.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go server.Serve(context.Background(), l)
	t.Cleanup(func() { server.Close() })
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	client := ttrpc.NewClient(conn)
	t.Cleanup(func() { client.Close() })
	return client
}

// TestTaskV2: every method of task API v2 reaches the v3 service with every
// field of its request, and answers with every field of the response.
func TestTaskV2(t *testing.T) {
	ctx := context.Background()
	f := &recordingTasks{}
	v2 := taskv2.NewTTRPCTaskClient(serveTasks(t, func(s *ttrpc.Server) error {
		taskv2.RegisterTTRPCTaskService(s, taskV2{v3: f})
		return nil
	}))
	opts := &anypb.Any{TypeUrl: "containerd.runc.v1.Options", Value: []byte{0x0a, 0x01, 'x'}}
	for _, tt := range []struct {
		method string
		call   func() (proto.Message, error)
		req    proto.Message // the v3 request the service must see
		resp   proto.Message // the v2 response the client must see
	}{
		{
			method: "Create",
			call: func() (proto.Message, error) {
				return v2.Create(ctx, &taskv2.CreateTaskRequest{ID: "c", Bundle: "/b", Rootfs: []*types.Mount{{Type: "overlay", Source: "overlay", Options: []string{"lowerdir=/l"}}},
					Terminal: true, Stdin: "/in", Stdout: "/out", Stderr: "/err", Checkpoint: "/cp", ParentCheckpoint: "/pcp", Options: opts})
			},
			req: &taskAPI.CreateTaskRequest{ID: "c", Bundle: "/b", Rootfs: []*types.Mount{{Type: "overlay", Source: "overlay", Options: []string{"lowerdir=/l"}}},
				Terminal: true, Stdin: "/in", Stdout: "/out", Stderr: "/err", Checkpoint: "/cp", ParentCheckpoint: "/pcp", Options: opts},
			resp: &taskv2.CreateTaskResponse{Pid: 42},
		},
		{
			method: "State",
			call:   func() (proto.Message, error) { return v2.State(ctx, &taskv2.StateRequest{ID: "c", ExecID: "e"}) },
			req:    &taskAPI.StateRequest{ID: "c", ExecID: "e"},
			resp:   &taskv2.StateResponse{ID: "c", Bundle: "/b", Pid: 42, Status: tasktypes.Status_STOPPED, ExitStatus: 143, ExitedAt: exitedAt, Terminal: true},
		},
		{
			method: "Start",
			call:   func() (proto.Message, error) { return v2.Start(ctx, &taskv2.StartRequest{ID: "c", ExecID: "e"}) },
			req:    &taskAPI.StartRequest{ID: "c", ExecID: "e"},
			resp:   &taskv2.StartResponse{Pid: 43},
		},
		{
			method: "Delete",
			call:   func() (proto.Message, error) { return v2.Delete(ctx, &taskv2.DeleteRequest{ID: "c"}) },
			req:    &taskAPI.DeleteRequest{ID: "c"},
			resp:   &taskv2.DeleteResponse{Pid: 42, ExitStatus: 143, ExitedAt: exitedAt},
		},
		{
			method: "Pids",
			call:   func() (proto.Message, error) { return v2.Pids(ctx, &taskv2.PidsRequest{ID: "c"}) },
			req:    &taskAPI.PidsRequest{ID: "c"},
			resp:   &taskv2.PidsResponse{Processes: []*tasktypes.ProcessInfo{{Pid: 42}, {Pid: 44}}},
		},
		{
			method: "Pause",
			call:   func() (proto.Message, error) { return v2.Pause(ctx, &taskv2.PauseRequest{ID: "c"}) },
			req:    &taskAPI.PauseRequest{ID: "c"},
			resp:   &emptypb.Empty{},
		},
		{
			method: "Resume",
			call:   func() (proto.Message, error) { return v2.Resume(ctx, &taskv2.ResumeRequest{ID: "c"}) },
			req:    &taskAPI.ResumeRequest{ID: "c"},
			resp:   &emptypb.Empty{},
		},
		{
			method: "Kill",
			call: func() (proto.Message, error) {
				return v2.Kill(ctx, &taskv2.KillRequest{ID: "c", ExecID: "e", Signal: 15, All: true})
			},
			req:  &taskAPI.KillRequest{ID: "c", ExecID: "e", Signal: 15, All: true},
			resp: &emptypb.Empty{},
		},
		{
			method: "Exec",
			call: func() (proto.Message, error) {
				return v2.Exec(ctx, &taskv2.ExecProcessRequest{ID: "c", ExecID: "e", Terminal: true, Stdin: "/i", Stdout: "/o", Stderr: "/e", Spec: opts})
			},
			req:  &taskAPI.ExecProcessRequest{ID: "c", ExecID: "e", Terminal: true, Stdin: "/i", Stdout: "/o", Stderr: "/e", Spec: opts},
			resp: &emptypb.Empty{},
		},
		{
			method: "ResizePty",
			call: func() (proto.Message, error) {
				return v2.ResizePty(ctx, &taskv2.ResizePtyRequest{ID: "c", ExecID: "e", Width: 100, Height: 40})
			},
			req:  &taskAPI.ResizePtyRequest{ID: "c", ExecID: "e", Width: 100, Height: 40},
			resp: &emptypb.Empty{},
		},
		{
			method: "CloseIO",
			call: func() (proto.Message, error) {
				return v2.CloseIO(ctx, &taskv2.CloseIORequest{ID: "c", ExecID: "e", Stdin: true})
			},
			req:  &taskAPI.CloseIORequest{ID: "c", ExecID: "e", Stdin: true},
			resp: &emptypb.Empty{},
		},
		{
			method: "Update",
			call: func() (proto.Message, error) {
				return v2.Update(ctx, &taskv2.UpdateTaskRequest{ID: "c", Resources: opts, Annotations: map[string]string{"a": "b"}})
			},
			req:  &taskAPI.UpdateTaskRequest{ID: "c", Resources: opts, Annotations: map[string]string{"a": "b"}},
			resp: &emptypb.Empty{},
		},
		{
			method: "Wait",
			call:   func() (proto.Message, error) { return v2.Wait(ctx, &taskv2.WaitRequest{ID: "c", ExecID: "e"}) },
			req:    &taskAPI.WaitRequest{ID: "c", ExecID: "e"},
			resp:   &taskv2.WaitResponse{ExitStatus: 143, ExitedAt: exitedAt},
		},
		{
			method: "Stats",
			call:   func() (proto.Message, error) { return v2.Stats(ctx, &taskv2.StatsRequest{ID: "c"}) },
			req:    &taskAPI.StatsRequest{ID: "c"},
			resp:   &taskv2.StatsResponse{Stats: stats},
		},
		{
			method: "Connect",
			call:   func() (proto.Message, error) { return v2.Connect(ctx, &taskv2.ConnectRequest{ID: "c"}) },
			req:    &taskAPI.ConnectRequest{ID: "c"},
			resp:   &taskv2.ConnectResponse{ShimPid: 7, TaskPid: 42, Version: "x"},
		},
		{
			method: "Shutdown",
			call:   func() (proto.Message, error) { return v2.Shutdown(ctx, &taskv2.ShutdownRequest{ID: "c", Now: true}) },
			req:    &taskAPI.ShutdownRequest{ID: "c", Now: true},
			resp:   &emptypb.Empty{},
		},
	} {
		t.Run(tt.method, func(t *testing.T) {
			resp, err := tt.call()
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(resp, tt.resp) {
				t.Errorf("response %v, want %v", resp, tt.resp)
			}
			f.mu.Lock()
			got := f.reqs[tt.method]
			f.mu.Unlock()
			if !proto.Equal(got, tt.req) {
				t.Errorf("the v3 service got %v, want %v", got, tt.req)
			}
		})
	}
	// An error keeps its code.
	_, err := v2.Checkpoint(ctx, &taskv2.CheckpointTaskRequest{ID: "c", Path: "/p"})
	if !errdefs.IsNotImplemented(errgrpc.ToNative(err)) {
		t.Errorf("Checkpoint: %v, want NotImplemented", err)
	}
	// Every method of the v2 API is served.
	if n := reflect.TypeOf((*taskv2.TTRPCTaskService)(nil)).Elem().NumMethod(); len(f.reqs) != n {
		t.Errorf("%d of the %d methods reached the v3 service: %v", len(f.reqs), n, f.reqs)
	}
}

// TestRegisterBothTaskAPIs: the shim's service answers on task API v3 and v2.
func TestRegisterBothTaskAPIs(t *testing.T) {
	f := &recordingTasks{}
	s := &service{TTRPCTaskService: f, containers: newContainers()}
	client := serveTasks(t, s.RegisterTTRPC)
	ctx := context.Background()
	if r, err := taskAPI.NewTTRPCTaskClient(client).State(ctx, &taskAPI.StateRequest{ID: "v3"}); err != nil || r.Pid != 42 {
		t.Errorf("v3 State: %v, %v", r, err)
	}
	if r, err := taskv2.NewTTRPCTaskClient(client).State(ctx, &taskv2.StateRequest{ID: "v2"}); err != nil || r.Pid != 42 {
		t.Errorf("v2 State: %v, %v", r, err)
	}
}
