package shim

import (
	"context"
	"fmt"

	taskv2 "github.com/containerd/containerd/api/runtime/task/v2"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
)

// taskV2 serves task API v2, which containerd 1.7 speaks (and containerd
// 2.x when the bootstrap reply offered version 2), with the task service
// v3. The two APIs are the same protobuf messages under two package names:
// each request is decoded again as its v3 twin and each response as its v2
// twin, so every field goes through whatever either version adds.
type taskV2 struct {
	v3 taskAPI.TTRPCTaskService
}

var _ taskv2.TTRPCTaskService = taskV2{}

// convert re-decodes message from as a T.
func convert[T any, P interface {
	*T
	proto.Message
}](from proto.Message) (P, error) {
	b, err := proto.Marshal(from)
	if err != nil {
		return nil, err
	}
	to := P(new(T))
	if err := proto.Unmarshal(b, to); err != nil {
		return nil, err
	}
	return to, nil
}

// relay calls the v3 method call with the v3 twin of req (of type Q) and
// returns the v2 twin (of type R) of its response.
func relay[Q, R any, PQ interface {
	*Q
	proto.Message
}, PR interface {
	*R
	proto.Message
}, R3 proto.Message](ctx context.Context, req proto.Message, call func(context.Context, PQ) (R3, error)) (PR, error) {
	in, err := convert[Q, PQ](req)
	if err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("task API v2 request %T: %v: %w", req, err, errdefs.ErrInvalidArgument))
	}
	out, err := call(ctx, in)
	if err != nil {
		return nil, err
	}
	resp, err := convert[R, PR](out)
	if err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("task API v2 response %T: %w", out, err))
	}
	return resp, nil
}

func (s taskV2) State(ctx context.Context, r *taskv2.StateRequest) (*taskv2.StateResponse, error) {
	return relay[taskAPI.StateRequest, taskv2.StateResponse](ctx, r, s.v3.State)
}

func (s taskV2) Create(ctx context.Context, r *taskv2.CreateTaskRequest) (*taskv2.CreateTaskResponse, error) {
	return relay[taskAPI.CreateTaskRequest, taskv2.CreateTaskResponse](ctx, r, s.v3.Create)
}

func (s taskV2) Start(ctx context.Context, r *taskv2.StartRequest) (*taskv2.StartResponse, error) {
	return relay[taskAPI.StartRequest, taskv2.StartResponse](ctx, r, s.v3.Start)
}

func (s taskV2) Delete(ctx context.Context, r *taskv2.DeleteRequest) (*taskv2.DeleteResponse, error) {
	return relay[taskAPI.DeleteRequest, taskv2.DeleteResponse](ctx, r, s.v3.Delete)
}

func (s taskV2) Pids(ctx context.Context, r *taskv2.PidsRequest) (*taskv2.PidsResponse, error) {
	return relay[taskAPI.PidsRequest, taskv2.PidsResponse](ctx, r, s.v3.Pids)
}

func (s taskV2) Pause(ctx context.Context, r *taskv2.PauseRequest) (*emptypb.Empty, error) {
	return relay[taskAPI.PauseRequest, emptypb.Empty](ctx, r, s.v3.Pause)
}

func (s taskV2) Resume(ctx context.Context, r *taskv2.ResumeRequest) (*emptypb.Empty, error) {
	return relay[taskAPI.ResumeRequest, emptypb.Empty](ctx, r, s.v3.Resume)
}

func (s taskV2) Checkpoint(ctx context.Context, r *taskv2.CheckpointTaskRequest) (*emptypb.Empty, error) {
	return relay[taskAPI.CheckpointTaskRequest, emptypb.Empty](ctx, r, s.v3.Checkpoint)
}

func (s taskV2) Kill(ctx context.Context, r *taskv2.KillRequest) (*emptypb.Empty, error) {
	return relay[taskAPI.KillRequest, emptypb.Empty](ctx, r, s.v3.Kill)
}

func (s taskV2) Exec(ctx context.Context, r *taskv2.ExecProcessRequest) (*emptypb.Empty, error) {
	return relay[taskAPI.ExecProcessRequest, emptypb.Empty](ctx, r, s.v3.Exec)
}

func (s taskV2) ResizePty(ctx context.Context, r *taskv2.ResizePtyRequest) (*emptypb.Empty, error) {
	return relay[taskAPI.ResizePtyRequest, emptypb.Empty](ctx, r, s.v3.ResizePty)
}

func (s taskV2) CloseIO(ctx context.Context, r *taskv2.CloseIORequest) (*emptypb.Empty, error) {
	return relay[taskAPI.CloseIORequest, emptypb.Empty](ctx, r, s.v3.CloseIO)
}

func (s taskV2) Update(ctx context.Context, r *taskv2.UpdateTaskRequest) (*emptypb.Empty, error) {
	return relay[taskAPI.UpdateTaskRequest, emptypb.Empty](ctx, r, s.v3.Update)
}

func (s taskV2) Wait(ctx context.Context, r *taskv2.WaitRequest) (*taskv2.WaitResponse, error) {
	return relay[taskAPI.WaitRequest, taskv2.WaitResponse](ctx, r, s.v3.Wait)
}

func (s taskV2) Stats(ctx context.Context, r *taskv2.StatsRequest) (*taskv2.StatsResponse, error) {
	return relay[taskAPI.StatsRequest, taskv2.StatsResponse](ctx, r, s.v3.Stats)
}

func (s taskV2) Connect(ctx context.Context, r *taskv2.ConnectRequest) (*taskv2.ConnectResponse, error) {
	return relay[taskAPI.ConnectRequest, taskv2.ConnectResponse](ctx, r, s.v3.Connect)
}

func (s taskV2) Shutdown(ctx context.Context, r *taskv2.ShutdownRequest) (*emptypb.Empty, error) {
	return relay[taskAPI.ShutdownRequest, emptypb.Empty](ctx, r, s.v3.Shutdown)
}
