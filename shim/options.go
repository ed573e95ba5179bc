package shim

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	"github.com/pelletier/go-toml/v2"
)

// Options are the shim's runtime options. containerd's CRI passes the
// handler's `options` table as TOML; ctr passes a TOML file named by
// --runtime-config-path. The keys are runc's: the shim drives runc.
type Options struct {
	// BinaryName is the runc binary to use; "runc" on PATH by default.
	BinaryName string `toml:"BinaryName"`
	// Root is runc's state root; /run/containerd/runc by default.
	Root string `toml:"Root"`
	// SystemdCgroup has runc manage cgroups through systemd.
	SystemdCgroup bool `toml:"SystemdCgroup"`
}

// runcOptions decodes the runtime options containerd passed, whatever their
// form, into runc's.
func runcOptions(a typeurl.Any) (*runcoptions.Options, error) {
	if a == nil || len(a.GetValue()) == 0 && a.GetTypeUrl() == "" {
		return &runcoptions.Options{}, nil
	}
	v, err := typeurl.UnmarshalAny(a)
	if err != nil {
		return nil, fmt.Errorf("decode runtime options of type %s: %w", a.GetTypeUrl(), errdefs.ErrInvalidArgument)
	}
	switch o := v.(type) {
	case *runcoptions.Options:
		return o, nil
	case *runtimeoptions.Options:
		body := o.ConfigBody
		if len(body) == 0 && o.ConfigPath != "" {
			if body, err = os.ReadFile(o.ConfigPath); err != nil {
				return nil, fmt.Errorf("read runtime options: %v: %w", err, errdefs.ErrInvalidArgument)
			}
		}
		var opts Options
		dec := toml.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&opts); err != nil {
			where := "runtime options"
			if o.ConfigPath != "" && len(o.ConfigBody) == 0 {
				where += " in " + o.ConfigPath
			}
			var strict *toml.StrictMissingError
			if errors.As(err, &strict) {
				var keys []string
				for _, e := range strict.Errors {
					keys = append(keys, strings.Join(e.Key(), "."))
				}
				return nil, fmt.Errorf("%s: unknown keys %s (known: BinaryName, Root, SystemdCgroup): %w", where, strings.Join(keys, ", "), errdefs.ErrInvalidArgument)
			}
			return nil, fmt.Errorf("%s: %v: %w", where, err, errdefs.ErrInvalidArgument)
		}
		return &runcoptions.Options{
			BinaryName:    opts.BinaryName,
			Root:          opts.Root,
			SystemdCgroup: opts.SystemdCgroup,
		}, nil
	}
	return nil, fmt.Errorf("unsupported runtime options type %T: %w", v, errdefs.ErrInvalidArgument)
}
