package shim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/containerd/containerd/api/types"
	runcmanager "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/manager"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// RuntimeName is the runtime type containerd maps to this shim's binary,
// containerd-shim-wasm-v1.
const RuntimeName = "io.containerd.wasm.v1"

// manager is the shim's bootstrap: start (one long-running shim per pod,
// grouped by the sandbox id, as the runc shim does), delete (runc delete
// --force and unmount the rootfs, from what the bundle recorded; its exit
// status is runc's shim's, 128+SIGKILL, for the shim that knew more is
// gone) and -info (runc's features, as CRI asks for them). Only the
// runtime options differ from runc's: they are translated before runc's
// manager reads them.
type manager struct {
	shim.Shim
}

// NewManager returns the shim's bootstrap for RuntimeName.
func NewManager() shim.Shim {
	return manager{Shim: runcmanager.NewShimManager(RuntimeName)}
}

// Info implements shim.Shim: it answers as runc's shim would for the runc
// options the shim's own options translate to.
func (m manager) Info(ctx context.Context, optionsR io.Reader) (*types.RuntimeInfo, error) {
	data, err := io.ReadAll(optionsR)
	if err != nil {
		return nil, fmt.Errorf("read runtime options: %w", err)
	}
	if len(data) > 0 {
		var a anypb.Any
		if err := proto.Unmarshal(data, &a); err != nil {
			return nil, fmt.Errorf("decode runtime options: %w", err)
		}
		opts, err := runcOptions(&a)
		if err != nil {
			return nil, err
		}
		pa, err := typeurl.MarshalAnyToProto(opts)
		if err != nil {
			return nil, fmt.Errorf("encode runc options: %w", err)
		}
		if data, err = proto.Marshal(pa); err != nil {
			return nil, fmt.Errorf("encode runc options: %w", err)
		}
	}
	info, err := m.Shim.Info(ctx, bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	if info == nil {
		return nil, errors.New("runc manager returned no runtime info")
	}
	info.Name = RuntimeName
	readBuildVersion().setInfo(info)
	return info, nil
}
