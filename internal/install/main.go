package install

import (
	"flag"
	"fmt"
	"io"
	"os"
)

// Main runs the shim's install and uninstall commands (args after the
// binary's name: "install --host-root DIR"), and returns the exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "install" && args[0] != "uninstall" {
		fmt.Fprintf(stderr, "usage: %s install|uninstall [--host-root DIR]\n", ShimName)
		return 2
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	root := fs.String("host-root", "/", "where the node's / is (its host mount, in a pod)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "%s: unexpected arguments %q\n", args[0], fs.Args())
		return 2
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "%s: find the shim's binary: %v\n", args[0], err)
		return 1
	}
	o := Options{HostRoot: *root, Binary: self, Out: stdout}
	run := Install
	if args[0] == "uninstall" {
		run = Uninstall
	}
	if err := run(o); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", args[0], err)
		return 1
	}
	if args[0] == "install" {
		fmt.Fprintf(stdout, "restart containerd for the %q runtime handler to be served\n", Handler)
	} else {
		fmt.Fprintf(stdout, "restart containerd for the %q runtime handler to go\n", Handler)
	}
	return 0
}
