package shim

import (
	"context"
	"fmt"
	"strings"

	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// UnaryServerInterceptor implements shim.TTRPCServerUnaryOptioner: every
// task API call goes through it. runc's task service reports a request that
// a task's state forbids ("cannot delete a running process", "cannot start
// a stopped process", ...) as a plain error, which reaches containerd as
// Unknown; the interceptor gives those FailedPrecondition.
func (s *service) UnaryServerInterceptor() ttrpc.UnaryServerInterceptor {
	return func(ctx context.Context, unmarshal ttrpc.Unmarshaler, info *ttrpc.UnaryServerInfo, method ttrpc.Method) (any, error) {
		resp, err := method(ctx, unmarshal)
		return resp, wrongStateError(err)
	}
}

// wrongStateError turns an Unknown error whose message says the task's
// state forbids the request into FailedPrecondition.
func wrongStateError(err error) error {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unknown || !strings.HasPrefix(st.Message(), "cannot ") {
		return err
	}
	return errgrpc.ToGRPC(fmt.Errorf("%s: %w", st.Message(), errdefs.ErrFailedPrecondition))
}

var _ shim.TTRPCServerUnaryOptioner = (*service)(nil)
