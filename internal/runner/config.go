package runner

import (
	"encoding/json"
	"fmt"
	"io"
)

const (
	// Path is where the shim mounts the runner binary in a Wasm
	// container, and the runner's argv[0] there.
	Path = "/dev/.containerd-shim-wasm-runner"
	// ConfigFD is the descriptor on which the runner finds its Config: the
	// shim has runc preserve it into the container (--preserve-fds), and the
	// runner closes it once read. It is never a file in the container.
	ConfigFD = 3
	// ReasonFD is the write end of a pipe on which the runner reports, a
	// line each, why it could not run the guest or how the guest failed
	// (as it does on the guest's stderr), for the shim's log. The shim
	// reads it until the runner exits.
	ReasonFD = 4
	// CacheFD is the descriptor on which the runner of an exec finds a
	// directory in wazero's cache layout holding its module's compiled
	// code, when Config.Cache is CacheFDPath: the mounts of a running
	// container cannot change, so the shim passes it as it passes the
	// Config. The runner closes it once the code is loaded. The directory
	// holds that module's code alone.
	CacheFD = 5
	// CacheFDPath is Config.Cache for a runner given CacheFD: the
	// directory through the runner's own procfs.
	CacheFDPath = "/proc/self/fd/5"
	// CachePath is where the shim mounts a Wasm container's compiled code,
	// as the one entry of a wazero cache directory. Like the runner, it is
	// on the container's own /dev tmpfs and never visible to the guest.
	CachePath = "/dev/.containerd-shim-wasm-cache"
	// CgroupPath is where the shim mounts the container's own cgroups (a
	// "cgroup" mount, as runc sets up at /sys/fs/cgroup) when its spec
	// mounts none, so that the runner can read its memory limit as it
	// changes (see MemoryMargin). The guest is denied it.
	CgroupPath = "/dev/.containerd-shim-wasm-cgroup"
	// ModulePath is where the shim mounts a module that is in no rootfs
	// (the layer of a Wasm artifact), read-only; Config.Module names it
	// then. The guest is denied it, as the runner.
	ModulePath = "/dev/.containerd-shim-wasm-module"
)

// Config is what the shim tells the runner about the guest it runs.
type Config struct {
	// Module is the container path of the module, with symlinks resolved,
	// or ModulePath.
	Module string `json:"module"`
	// Name is how messages name the module (for a module at ModulePath:
	// its image's layer); Module if empty.
	Name string `json:"name,omitempty"`
	// Func is the exported function to call, usually "_start".
	Func string `json:"func"`
	// Args are the guest's arguments, args[0] included.
	Args []string `json:"args"`
	// Env is the guest's environment as KEY=value pairs.
	Env []string `json:"env"`
	// Listen are TCP listeners to pre-open for the guest (see ListenEnv).
	Listen []Listener `json:"listen,omitempty"`
	// Cache, if set, is the container path of a directory in wazero's
	// cache layout holding the module's compiled code (CachePath, or
	// CacheFDPath): the runner loads it instead of compiling, and compiles
	// if that fails.
	Cache string `json:"cache,omitempty"`
	// CacheResult says how the shim got the compiled code in Cache:
	// CodeHit or CodeMiss. The runner only reports it (see Trace.Code).
	CacheResult string `json:"cache_result,omitempty"`
	// Exec says the runner runs an exec into a container, beside the
	// container's own process: it makes itself the first the kernel's
	// OOM killer picks in the container (oom_score_adj 1000), so that an
	// exec that outgrows the container's memory limit is killed, not the
	// process it was exec'd beside.
	Exec bool `json:"exec,omitempty"`
	// Trace has the runner write how long each of its phases took to the
	// guest's stderr once the guest has returned (see Trace).
	Trace bool `json:"trace,omitempty"`
}

// name is how messages name the module.
func (c *Config) name() string {
	if c.Name != "" {
		return c.Name
	}
	return c.Module
}

// Encode writes c as JSON.
func (c *Config) Encode(w io.Writer) error {
	return json.NewEncoder(w).Encode(c)
}

// maxConfig bounds what the runner reads as its Config.
const maxConfig = 64 << 20

// DecodeConfig reads a Config written by Encode.
func DecodeConfig(r io.Reader) (*Config, error) {
	var c Config
	if err := json.NewDecoder(io.LimitReader(r, maxConfig)).Decode(&c); err != nil {
		return nil, fmt.Errorf("decode runner config: %w", err)
	}
	if c.Module == "" || c.Func == "" {
		return nil, fmt.Errorf("runner config names no module or function")
	}
	return &c, nil
}
