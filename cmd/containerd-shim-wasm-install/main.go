// Command containerd-shim-wasm-install installs containerd-shim-wasm-v1 on
// a node and registers its runtime handler with the node's containerd, or
// takes both back (package install):
//
//	containerd-shim-wasm-install install [--host-root DIR] [--wait] [--label-node NODE]
//	containerd-shim-wasm-install uninstall [--host-root DIR] [--label-node NODE]
//
// It is a binary of its own so that what it needs (a CRI client) adds
// nothing to the start of every shim and runner: 0.8 ms of package
// initialization a process.
package main

import (
	"os"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/install"
)

func main() {
	os.Exit(install.Main(os.Args[1:], os.Stdout, os.Stderr))
}
