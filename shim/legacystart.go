package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	versionapi "github.com/containerd/containerd/api/services/version/v1"
	"github.com/containerd/containerd/v2/pkg/atomicfile"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shim"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Task API versions, as a bootstrap reply names them.
const (
	// taskAPIv2 is what containerd 1.7 speaks, and what every containerd
	// 2.x speaks too.
	taskAPIv2 = 2
	// taskAPIv3 is what containerd 2.x prefers: the containers of a pod
	// then share the sandbox's shim connection, and containerd runs the
	// binary neither to start nor to delete each of them.
	taskAPIv3 = 3
)

// versionProbeTimeout bounds the question to containerd about its version.
const versionProbeTimeout = 5 * time.Second

// legacyReply is the JSON bootstrap reply containerd 1.7 to 2.2 read from
// `start` (containerd 2.3 and newer read it too): the format of pkg/shim's
// BootstrapParams, deprecated there.
type legacyReply struct {
	Version  int    `json:"version"`
	Address  string `json:"address"`
	Protocol string `json:"protocol"`
}

// legacyStart serves `start` for containerd 2.0 to 2.2 (and 1.7): their
// invocation is turned into the BootstrapParams that newer containerd
// sends, the manager starts (or finds) the shim's server as for any
// version, and the reply is written as those versions read it. options are
// the runtime options containerd wrote on standard input, if any.
func legacyStart(ctx context.Context, m shim.Shim, inv invocation, options []byte, out io.Writer) error {
	if inv.namespace == "" {
		return fmt.Errorf("shim namespace cannot be empty")
	}
	params, err := legacyParams(inv, options, os.Getenv("TTRPC_ADDRESS"))
	if err != nil {
		return err
	}
	ctx = namespaces.WithNamespace(ctx, inv.namespace)
	api, err := taskAPIFor(containerdVersion(ctx, inv.address))
	if err != nil {
		return err
	}
	res, err := m.Start(ctx, params)
	if err != nil {
		return err
	}
	// containerd 1.7 finds the shim of a running task in the bundle's
	// "address" file when it restarts (2.x keep the reply in
	// bootstrap.json); its own runc shim wrote it there. The working
	// directory is the bundle.
	if err := writeAddress(addressFile, res.GetAddress()); err != nil {
		return err
	}
	b, err := json.Marshal(legacyReply{Version: api, Address: res.GetAddress(), Protocol: res.GetProtocol()})
	if err != nil {
		return fmt.Errorf("encode the bootstrap reply: %w", err)
	}
	_, err = out.Write(b)
	return err
}

// addressFile is the bundle's file that names the shim's socket, for
// containerd 1.7.
const addressFile = "address"

// writeAddress writes the shim's socket address to path, atomically.
func writeAddress(path, address string) error {
	f, err := atomicfile.New(path, 0o600)
	if err != nil {
		return fmt.Errorf("write the shim's address: %w", err)
	}
	if _, err := f.Write([]byte(address)); err != nil {
		f.Cancel()
		return fmt.Errorf("write the shim's address: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write the shim's address: %w", err)
	}
	return nil
}

// legacyParams are the BootstrapParams equivalent to an older containerd's
// invocation: the command line, TTRPC_ADDRESS, and the runtime options
// (a protobuf Any, or nothing) from standard input.
func legacyParams(inv invocation, options []byte, ttrpcAddress string) (*bootapi.BootstrapParams, error) {
	p := &bootapi.BootstrapParams{
		InstanceID:             inv.id,
		Namespace:              inv.namespace,
		ContainerdGrpcAddress:  inv.address,
		ContainerdTtrpcAddress: ttrpcAddress,
		LogLevel:               bootapi.LogLevel_LOG_LEVEL_INFO,
	}
	if inv.debug {
		p.LogLevel = bootapi.LogLevel_LOG_LEVEL_DEBUG
	}
	if len(options) > 0 {
		var a anypb.Any
		if err := proto.Unmarshal(options, &a); err != nil {
			return nil, fmt.Errorf("decode the runtime options containerd passed on standard input: %w", err)
		}
		p.Extensions = []*bootapi.Extension{{Value: &a}}
	}
	return p, nil
}

// containerdVersion asks the containerd at address (its gRPC socket) for
// its version; "" if it does not answer.
func containerdVersion(ctx context.Context, address string) string {
	if address == "" {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, versionProbeTimeout)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return ""
	}
	defer conn.Close()
	v, err := versionapi.NewVersionClient(conn).Version(ctx, &emptypb.Empty{})
	if err != nil {
		return ""
	}
	return v.GetVersion()
}

// taskAPIFor is the task API version to offer a containerd of version v
// ("v2.2.9", "1.7.35", "v2.1.4-k3s1"): 3 from containerd 2.0 on, 2 for 1.7
// and when the version is unknown (every containerd from 1.7 on speaks 2).
// Releases before 1.7 are refused.
func taskAPIFor(v string) (int, error) {
	var major, minor int
	if _, err := fmt.Sscanf(strings.TrimPrefix(v, "v"), "%d.%d", &major, &minor); err != nil {
		return taskAPIv2, nil
	}
	switch {
	case major >= 2:
		return taskAPIv3, nil
	case major == 1 && minor >= 7:
		return taskAPIv2, nil
	}
	return 0, fmt.Errorf("containerd %s is not supported: %s needs containerd 1.7 or newer (2.0 or newer recommended)", v, RuntimeName)
}
