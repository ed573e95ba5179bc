package oci

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// SpecFile is the name of the runtime spec inside a bundle.
const SpecFile = "config.json"

// ReadSpec reads and decodes the runtime spec of the bundle at dir.
func ReadSpec(bundle string) (*specs.Spec, error) {
	path := filepath.Join(bundle, SpecFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read runtime spec: %w", err)
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("decode runtime spec %s: %w", path, err)
	}
	if s.Process == nil || len(s.Process.Args) == 0 {
		return nil, fmt.Errorf("runtime spec %s: process.args is empty", path)
	}
	if s.Root == nil || s.Root.Path == "" {
		return nil, fmt.Errorf("runtime spec %s: root.path is empty", path)
	}
	return &s, nil
}

// WriteSpec atomically replaces the runtime spec of the bundle at dir.
func WriteSpec(bundle string, s *specs.Spec) error {
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("encode runtime spec: %w", err)
	}
	tmp := filepath.Join(bundle, "."+SpecFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write runtime spec: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(bundle, SpecFile)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("replace runtime spec: %w", err)
	}
	return nil
}

// RootPath returns the host path of the container's root file system.
func RootPath(bundle string, s *specs.Spec) string {
	if filepath.IsAbs(s.Root.Path) {
		return s.Root.Path
	}
	return filepath.Join(bundle, s.Root.Path)
}

// Env returns the value of key in a spec's process environment.
func Env(env []string, key string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

// EnvKey returns the key of a KEY=value environment entry.
func EnvKey(kv string) (string, bool) {
	k, _, ok := strings.Cut(kv, "=")
	return k, ok
}
