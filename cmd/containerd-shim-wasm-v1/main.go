// Command containerd-shim-wasm-v1 is the containerd shim for the runtime
// type io.containerd.wasm.v1. The same binary is also the Wasm runner inside
// containers, the module compiler and the module checker: which one runs is chosen by argv[0]
// before anything else happens. Run as `containerd-shim-wasm-v1 install` (or
// uninstall), it installs itself on the node (package install).
package main

import (
	"context"
	"os"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/install"
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
	if len(os.Args) > 1 && (os.Args[1] == "install" || os.Args[1] == "uninstall") {
		os.Exit(install.Main(os.Args[1:], os.Stdout, os.Stderr))
	}
	wasmshim.Run(context.Background())
}
