package runtime

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/wasmmod"
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
