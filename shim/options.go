package shim

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	"github.com/pelletier/go-toml/v2"
)

// Options are the shim's runtime options. containerd's CRI passes the
// handler's `options` table as TOML; ctr passes a TOML file named by
// --runtime-config-path. The first keys are runc's: the shim drives runc.
type Options struct {
	// BinaryName is the runc binary to use; "runc" on PATH by default.
	BinaryName string `toml:"BinaryName"`
	// Root is runc's state root; /run/containerd/runc by default.
	Root string `toml:"Root"`
	// SystemdCgroup has runc manage cgroups through systemd.
	SystemdCgroup bool `toml:"SystemdCgroup"`

	// CacheRoot is the node's cache of compiled modules;
	// cache.DefaultRoot (/var/lib/containerd-shim-wasm) by default.
	CacheRoot string `toml:"CacheRoot"`
	// CacheMaxBytes bounds the compiled code the cache keeps (least
	// recently used entries go first); cache.DefaultMaxBytes (2 GiB) by
	// default.
	CacheMaxBytes int64 `toml:"CacheMaxBytes"`
	// CompileCgroup is the cgroup under which each compile helper runs, in
	// a cgroup of its own; defaultCompileCgroup by default.
	CompileCgroup string `toml:"CompileCgroup"`
	// CompileMemoryLimit is the memory limit of a compile helper, in
	// bytes; defaultCompileMemory by default.
	CompileMemoryLimit int64 `toml:"CompileMemoryLimit"`
	// CompileTotalMemoryLimit is the memory limit of CompileCgroup, under
	// which every compile helper of the node runs: it bounds them
	// together; a quarter of the node's memory by default. The node has
	// one such cgroup: give every handler the same value.
	CompileTotalMemoryLimit int64 `toml:"CompileTotalMemoryLimit"`
	// CompileConcurrency bounds the compiles running at once on the node,
	// across every shim; one per CPU by default. A compile past the bound
	// waits for one to end.
	CompileConcurrency int `toml:"CompileConcurrency"`
	// Trace has the runner write its phases' durations to the guest's
	// stderr after the guest returns (see runner.Trace). For benchmarks
	// and debugging only.
	Trace bool `toml:"Trace"`
}

// optionKeys lists the keys of Options, for error messages.
const optionKeys = "BinaryName, Root, SystemdCgroup, CacheRoot, CacheMaxBytes, CompileCgroup, CompileMemoryLimit, CompileTotalMemoryLimit, CompileConcurrency, Trace"

// runcOptions decodes the runtime options containerd passed, whatever their
// form, into runc's.
func runcOptions(a typeurl.Any) (*runcoptions.Options, error) {
	_, ro, err := parseOptions(a)
	return ro, err
}

// parseOptions decodes the runtime options containerd passed, whatever
// their form, into the shim's and runc's. runc's own options type leaves
// the shim's at their defaults.
func parseOptions(a typeurl.Any) (*Options, *runcoptions.Options, error) {
	if a == nil || len(a.GetValue()) == 0 && a.GetTypeUrl() == "" {
		return &Options{}, &runcoptions.Options{}, nil
	}
	v, err := typeurl.UnmarshalAny(a)
	if err != nil {
		return nil, nil, fmt.Errorf("decode runtime options of type %s: %w", a.GetTypeUrl(), errdefs.ErrInvalidArgument)
	}
	switch o := v.(type) {
	case *runcoptions.Options:
		return &Options{}, o, nil
	case *runtimeoptions.Options:
		body := o.ConfigBody
		if len(body) == 0 && o.ConfigPath != "" {
			if body, err = os.ReadFile(o.ConfigPath); err != nil {
				return nil, nil, fmt.Errorf("read runtime options: %v: %w", err, errdefs.ErrInvalidArgument)
			}
		}
		where := "runtime options"
		if o.ConfigPath != "" && len(o.ConfigBody) == 0 {
			where += " in " + o.ConfigPath
		}
		var opts Options
		dec := toml.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&opts); err != nil {
			var strict *toml.StrictMissingError
			if errors.As(err, &strict) {
				var keys []string
				for _, e := range strict.Errors {
					keys = append(keys, strings.Join(e.Key(), "."))
				}
				return nil, nil, fmt.Errorf("%s: unknown keys %s (known: %s): %w", where, strings.Join(keys, ", "), optionKeys, errdefs.ErrInvalidArgument)
			}
			return nil, nil, fmt.Errorf("%s: %v: %w", where, err, errdefs.ErrInvalidArgument)
		}
		if opts.CacheRoot != "" && !filepath.IsAbs(opts.CacheRoot) {
			return nil, nil, fmt.Errorf("%s: CacheRoot %q is not an absolute path: %w", where, opts.CacheRoot, errdefs.ErrInvalidArgument)
		}
		if opts.CacheMaxBytes < 0 || opts.CompileMemoryLimit < 0 || opts.CompileTotalMemoryLimit < 0 || opts.CompileConcurrency < 0 {
			return nil, nil, fmt.Errorf("%s: CacheMaxBytes, CompileMemoryLimit, CompileTotalMemoryLimit and CompileConcurrency may not be negative: %w", where, errdefs.ErrInvalidArgument)
		}
		return &opts, &runcoptions.Options{
			BinaryName:    opts.BinaryName,
			Root:          opts.Root,
			SystemdCgroup: opts.SystemdCgroup,
		}, nil
	}
	return nil, nil, fmt.Errorf("unsupported runtime options type %T: %w", v, errdefs.ErrInvalidArgument)
}
