package runtime

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// CompilerName is the argv[0] under which the shim starts its own binary as
// the compile helper (see CompileMain).
const CompilerName = "containerd-shim-wasm-compile"

// Exports maps a module's exported functions to their parameter types:
// enough to check an entry function without the module.
type Exports map[string][]string

// CheckExport reports whether exports has fn as an entry function, with
// the same errors as CheckEntry.
func (e Exports) CheckExport(fn string) error {
	params, ok := e[fn]
	if !ok {
		return fmt.Errorf("no exported function %q", fn)
	}
	if len(params) != 0 {
		return fmt.Errorf("exported function %q takes %d parameters (%s); an entry function takes none", fn, len(params), strings.Join(params, ", "))
	}
	return nil
}

// Compile compiles a module with the runner's engine, storing the compiled
// code under cacheDir in wazero's cache layout, and returns its exported
// functions.
func Compile(ctx context.Context, bin []byte, cacheDir string) (Exports, error) {
	rt, err := newRuntime(ctx, cacheDir)
	if err != nil {
		return nil, err
	}
	defer rt.Close(ctx)
	compiled, err := rt.CompileModule(ctx, bin)
	if err != nil {
		return nil, fmt.Errorf("invalid module: %w", err)
	}
	exports := Exports{}
	for name, def := range compiled.ExportedFunctions() {
		exports[name] = typeNames(def.ParamTypes())
	}
	return exports, nil
}

// CompileMain is the compile helper's entry point: it reads a module from
// stdin, compiles it into the directory os.Args[1] (see Compile), writes
// its Exports to stdout as JSON and returns 0; or ExitCannotRun with the
// reason on stderr if the module is invalid.
func CompileMain() int {
	if len(os.Args) != 2 {
		fmt.Fprintf(os.Stderr, "usage: %s DIR < MODULE\n", CompilerName)
		return ExitRunner
	}
	bin, status := readStdinModule()
	if bin == nil {
		return status
	}
	exports, err := Compile(context.Background(), bin, os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return ExitCannotRun
	}
	if err := json.NewEncoder(os.Stdout).Encode(exports); err != nil {
		fmt.Fprintf(os.Stderr, "write exports: %v\n", err)
		return ExitRunner
	}
	return 0
}
