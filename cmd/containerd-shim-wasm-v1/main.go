// Command containerd-shim-wasm-v1 is the containerd shim for the runtime
// type io.containerd.wasm.v1. The same binary is also the Wasm runner inside
// containers, the module compiler and the module checker: which one runs is chosen by argv[0]
// before anything else happens.
// (Installing it on a node is cmd/containerd-shim-wasm-install's job.)
package main

import (
	"context"
	"os"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/runner"
	wasmshim "github.com/containerd-shim-wasm/containerd-shim-wasm/shim"
)

func main() {
	switch os.Args[0] {
	case runner.Path:
		os.Exit(runner.Main())
	case runner.CheckerName:
		os.Exit(runner.CheckMain())
	case runner.CompilerName:
		os.Exit(runner.CompileMain())
	}
	wasmshim.Run(context.Background())
}
