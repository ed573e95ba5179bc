package runner

import (
	"context"
	"fmt"
	"os"
)

// CompilerName is the argv[0] under which the shim starts its own binary as
// the compile helper (see CompileMain).
const CompilerName = "containerd-shim-wasm-compile"

// Compile compiles a module with the runner's engine, storing the compiled
// code under cacheDir in wazero's cache layout.
func Compile(ctx context.Context, bin []byte, cacheDir string) error {
	rt, err := newRuntime(ctx, cacheDir)
	if err != nil {
		return err
	}
	defer rt.Close(ctx)
	if _, err := rt.CompileModule(ctx, bin); err != nil {
		return fmt.Errorf("invalid module: %w", err)
	}
	return nil
}

// CompileMain is the compile helper's entry point: it reads a module from
// stdin, compiles it into the directory os.Args[1] (see Compile) and
// returns 0; or ExitCannotRun with the reason on stderr if the module is
// invalid.
func CompileMain() int {
	if len(os.Args) != 2 {
		fmt.Fprintf(os.Stderr, "usage: %s DIR < MODULE\n", CompilerName)
		return ExitRunner
	}
	bin, status := readStdinModule()
	if bin == nil {
		return status
	}
	if err := Compile(context.Background(), bin, os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return ExitCannotRun
	}
	return 0
}
