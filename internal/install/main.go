package install

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// Main runs the installer's install and uninstall commands (args after
// the binary's name: "install --host-root DIR ..."), and returns the exit
// status. The shim installed is the one beside the installer's binary,
// unless --shim names another.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "install" && args[0] != "uninstall" {
		fmt.Fprintf(stderr, "usage: "+Installer+" install|uninstall [--host-root DIR] [--shim PATH] [--wait] [--label-node NODE]\n")
		return 2
	}
	cmd := args[0]
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	root := fs.String("host-root", "/", "where the node's / is (its host mount, in a pod)")
	shim := fs.String("shim", "", "the shim binary to install (default: "+ShimName+" beside this binary)")
	wait := fs.Bool("wait", false, "install: wait until containerd's CRI serves the handler (once containerd was restarted)")
	socket := fs.String("containerd-socket", "", "containerd's socket, for --wait (default: the node's /run/containerd/containerd.sock under --host-root)")
	timeout := fs.Duration("wait-timeout", 2*time.Minute, "how long --wait waits")
	node := fs.String("label-node", "", "label this node "+NodeLabel+"="+NodeLabelValue+" once installed (and served, with --wait), or take the label off before uninstalling, through the API server as the pod's service account")
	saDir := fs.String("service-account-dir", "/var/run/secrets/kubernetes.io/serviceaccount", "the pod's service account token and CA, for --label-node")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "%s: unexpected arguments %q\n", cmd, fs.Args())
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "%s: %v\n", cmd, err)
		return 1
	}
	var api *APIServer
	if *node != "" {
		var err error
		if api, err = InCluster(*saDir); err != nil {
			return fail(fmt.Errorf("--label-node: %w", err))
		}
	}
	if *shim == "" {
		self, err := os.Executable()
		if err != nil {
			return fail(fmt.Errorf("find the shim's binary: %w", err))
		}
		*shim = filepath.Join(filepath.Dir(self), ShimName)
	}
	o := Options{HostRoot: *root, Binary: *shim, Out: stdout}
	ctx := context.Background()
	if cmd == "uninstall" {
		if api != nil {
			if err := api.Label(ctx, *node, false); err != nil {
				return fail(err)
			}
			fmt.Fprintf(stdout, "took the label %s off node %s\n", NodeLabel, *node)
		}
		if err := Uninstall(o); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "restart containerd for the %q runtime handler to go\n", Handler)
		return 0
	}
	if err := Install(o); err != nil {
		return fail(err)
	}
	if !*wait {
		fmt.Fprintf(stdout, "restart containerd for the %q runtime handler to be served\n", Handler)
	} else {
		sock := *socket
		if sock == "" {
			sock = filepath.Join(*root, "run", "containerd", "containerd.sock")
		}
		wctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		if err := WaitHandler(wctx, sock, Handler); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "containerd serves the runtime handler %q\n", Handler)
	}
	if api != nil {
		if err := api.Label(ctx, *node, true); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "labelled node %s %s=%s\n", *node, NodeLabel, NodeLabelValue)
	}
	return 0
}
