package runner

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	goruntime "runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// features are the WebAssembly features every module is compiled with. The
// compile helper and the runner must agree on them, or the runner would not
// find the helper's code; EngineID names them.
const features = api.CoreFeaturesV2

// newRuntimeConfig is the wazero configuration of every compile and run:
// the optimizing compiler, without close-on-context-done (it slows guests
// down several times; a Wasm task is killed from outside instead), and
// without DWARF. wazero builds a stack trace for every end of a guest by
// panic, proc_exit included, and with DWARF it looks each frame's source
// line up: a Rust program built with -g took 0.93 s to exit against 34 ms
// without (wazero's CLI, same machine). A trap's stack trace still names
// the functions (from the name section), without file and line.
func newRuntimeConfig() wazero.RuntimeConfig {
	return wazero.NewRuntimeConfigCompiler().WithCoreFeatures(features).WithDebugInfoEnabled(false)
}

// newRuntime returns a wazero runtime; with cacheDir, one that loads and
// stores compiled code there (in wazero's cache directory layout).
func newRuntime(ctx context.Context, cacheDir string) (wazero.Runtime, error) {
	rc := newRuntimeConfig()
	if cacheDir != "" {
		cc, err := wazero.NewCompilationCacheWithDir(cacheDir)
		if err != nil {
			return nil, fmt.Errorf("compilation cache %s: %w", cacheDir, err)
		}
		rc = rc.WithCompilationCache(cc)
	}
	return wazero.NewRuntimeWithConfig(ctx, rc), nil
}

// EngineID identifies everything besides the module itself that compiled
// code depends on: wazero's version, the engine's features, the machine's
// architecture and CPU features. Compiled code is reused only between equal
// EngineIDs.
func EngineID() (string, error) {
	version := ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == "github.com/tetratelabs/wazero" {
				version = m.Version
				if m.Replace != nil {
					version += "=>" + m.Replace.Path + "@" + m.Replace.Version
				}
			}
		}
	}
	if version == "" || version == "(devel)" {
		// No module version (a test binary, a development build): the
		// binary itself stands in for wazero's version.
		self, err := os.Executable()
		if err != nil {
			return "", fmt.Errorf("identify the engine: %w", err)
		}
		st, err := os.Stat(self)
		if err != nil {
			return "", fmt.Errorf("identify the engine: %w", err)
		}
		version = fmt.Sprintf("in %s (%d bytes, %s)", self, st.Size(), st.ModTime().UTC().Format(time.RFC3339Nano))
	}
	cpu, err := cpuFeatures()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("wazero %s compiler features %#x %s/%s cpu %s", version, uint64(features), goruntime.GOOS, goruntime.GOARCH, cpu), nil
}

// cpuFeatures is a digest of the CPU's feature flags, as /proc/cpuinfo
// lists them for the first CPU ("flags" on x86, "Features" on arm64).
func cpuFeatures() (string, error) {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "", fmt.Errorf("read the CPU's features: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if k = strings.TrimSpace(k); ok && (k == "flags" || k == "Features") {
			sum := sha256.Sum256([]byte(strings.Join(strings.Fields(v), " ")))
			return hex.EncodeToString(sum[:8]), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read the CPU's features: %w", err)
	}
	return "none", nil
}
