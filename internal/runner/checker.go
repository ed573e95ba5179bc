package runner

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/wasmmod"
	"github.com/tetratelabs/wazero"
)

// CheckerName is the argv[0] under which the shim starts its own binary as
// the module checker (see CheckMain).
const CheckerName = "containerd-shim-wasm-check"

// CheckMain is the module checker's entry point: it reads a module from
// stdin, checks that os.Args[1] is an entry function of it (see Check), and
// returns 0, or ExitCannotRun with the reason on stderr.
func CheckMain() int {
	if len(os.Args) != 2 {
		fmt.Fprintf(os.Stderr, "usage: %s FUNC < MODULE\n", CheckerName)
		return ExitRunner
	}
	bin, status := readStdinModule()
	if bin == nil {
		return status
	}
	if err := Check(context.Background(), bin, os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return ExitCannotRun
	}
	return 0
}

// readStdinModule reads a helper's module from stdin; on failure it
// returns nil and the helper's exit status, with the reason on stderr.
func readStdinModule() ([]byte, int) {
	bin, err := io.ReadAll(io.LimitReader(os.Stdin, wasmmod.MaxSize+1))
	if err != nil {
		fmt.Fprintf(os.Stderr, "read module: %v\n", err)
		return nil, ExitRunner
	}
	if len(bin) > wasmmod.MaxSize {
		fmt.Fprintf(os.Stderr, "module is larger than %d bytes\n", wasmmod.MaxSize)
		return nil, ExitCannotRun
	}
	return bin, 0
}

// Check decodes and validates a module and checks that it exports fn as an
// entry function, without running it. It uses wazero's interpreter, which
// validates as the compiler does but needs no executable memory and less
// time. The shim runs it in a short-lived helper process before the
// container is created, so that a bad module fails Create with wazero's own
// message.
func Check(ctx context.Context, bin []byte, fn string) error {
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer rt.Close(ctx)
	compiled, err := rt.CompileModule(ctx, bin)
	if err != nil {
		return fmt.Errorf("invalid module: %w", err)
	}
	return CheckEntry(compiled, fn)
}
