package runtime

import (
	"encoding/json"
	"fmt"
	"io"
)

const (
	// RunnerPath is where the shim mounts the runner binary in a Wasm
	// container, and the runner's argv[0] there.
	RunnerPath = "/dev/.containerd-shim-wasm-runner"
	// ConfigPath is where the shim mounts the runner's Config.
	ConfigPath = "/dev/.containerd-shim-wasm-config"
)

// Config is what the shim tells the runner about the guest it runs.
type Config struct {
	// Module is the container path of the module, with symlinks resolved.
	Module string `json:"module"`
	// Func is the exported function to call, usually "_start".
	Func string `json:"func"`
	// Args are the guest's arguments, args[0] included.
	Args []string `json:"args"`
	// Env is the guest's environment as KEY=value pairs.
	Env []string `json:"env"`
}

// Encode writes c as JSON.
func (c *Config) Encode(w io.Writer) error {
	return json.NewEncoder(w).Encode(c)
}

// DecodeConfig reads a Config written by Encode.
func DecodeConfig(r io.Reader) (*Config, error) {
	var c Config
	if err := json.NewDecoder(r).Decode(&c); err != nil {
		return nil, fmt.Errorf("decode runner config: %w", err)
	}
	if c.Module == "" || c.Func == "" {
		return nil, fmt.Errorf("runner config names no module or function")
	}
	return &c, nil
}
