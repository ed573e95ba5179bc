package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	toml "github.com/pelletier/go-toml/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// HandlerFromCRI reads runtime handler name from the config containerd's
// CRI reports (its verbose status): the runtime, the shim's path, the
// options and the snapshotter, so that the agent's Creates are the
// handler's.
func HandlerFromCRI(ctx context.Context, socket, name string) (Handler, error) {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return Handler{}, fmt.Errorf("connect to containerd's CRI at %s: %w", socket, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := cri.NewRuntimeServiceClient(conn).Status(ctx, &cri.StatusRequest{Verbose: true})
	if err != nil {
		return Handler{}, fmt.Errorf("containerd's CRI status: %w", err)
	}
	return handlerFromConfig([]byte(st.GetInfo()["config"]), name)
}

// handlerFromConfig reads handler name from CRI's config, as JSON.
func handlerFromConfig(config []byte, name string) (Handler, error) {
	var c struct {
		Containerd struct {
			Snapshotter string `json:"snapshotter"`
			Runtimes    map[string]struct {
				Type        string         `json:"runtimeType"`
				Path        string         `json:"runtimePath"`
				Snapshotter string         `json:"snapshotter"`
				Options     map[string]any `json:"options"`
			} `json:"runtimes"`
		} `json:"containerd"`
	}
	d := json.NewDecoder(bytes.NewReader(config))
	d.UseNumber()
	if err := d.Decode(&c); err != nil {
		return Handler{}, fmt.Errorf("containerd's CRI config: %w", err)
	}
	rt, ok := c.Containerd.Runtimes[name]
	if !ok {
		var names []string
		for n := range c.Containerd.Runtimes {
			names = append(names, n)
		}
		return Handler{}, fmt.Errorf("containerd's CRI has no runtime handler %q (it has %v)", name, names)
	}
	opts := map[string]any{}
	for k, v := range rt.Options {
		if n, ok := v.(json.Number); ok {
			if i, err := n.Int64(); err == nil {
				v = i
			} else if f, err := n.Float64(); err == nil {
				v = f
			}
		}
		opts[k] = v
	}
	body, err := toml.Marshal(opts)
	if err != nil {
		return Handler{}, fmt.Errorf("runtime options of %q: %w", name, err)
	}
	h := Handler{RuntimeType: rt.Type, RuntimePath: rt.Path, Options: body, Snapshotter: rt.Snapshotter}
	if h.Snapshotter == "" {
		h.Snapshotter = c.Containerd.Snapshotter
	}
	return h, nil
}
