package install

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
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
	restart := fs.Bool("restart", false, "restart containerd (systemctl restart UNIT in the node's root) if anything changed, or if it does not serve the handler yet; then wait until it does")
	unit := fs.String("containerd-unit", "containerd", "containerd's systemd unit, for --restart")
	wait := fs.Bool("wait", false, "install: wait until containerd's CRI serves the handler (once containerd was restarted)")
	stay := fs.Bool("stay", false, "once done, stay until terminated (the main process of a DaemonSet's pod)")
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
	changes := &countingWriter{w: stdout}
	o.Out = changes
	if err := Install(o); err != nil {
		return fail(err)
	}
	if changes.lines == 0 {
		fmt.Fprintln(stdout, "already installed: nothing changed")
	}
	sock := *socket
	if sock == "" {
		sock = filepath.Join(*root, "run", "containerd", "containerd.sock")
	}
	served := func(d time.Duration) error {
		wctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		return WaitHandler(wctx, sock, Handler)
	}
	switch {
	case *restart && (changes.lines > 0 || served(2*time.Second) != nil):
		if err := Restart(ctx, *root, *unit); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "restarted %s\n", *unit)
		fallthrough
	case *restart || *wait:
		if err := served(*timeout); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "containerd serves the runtime handler %q\n", Handler)
	default:
		fmt.Fprintf(stdout, "restart containerd for the %q runtime handler to be served\n", Handler)
	}
	if api != nil {
		if err := api.Label(ctx, *node, true); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "labelled node %s %s=%s\n", *node, NodeLabel, NodeLabelValue)
	}
	if *stay {
		stayUntilTerminated()
	}
	return 0
}

// countingWriter counts the lines written through it: Install writes one
// per change.
type countingWriter struct {
	w     io.Writer
	lines int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.lines += bytes.Count(p, []byte("\n"))
	return c.w.Write(p)
}

// stayUntilTerminated blocks until SIGTERM or SIGINT.
func stayUntilTerminated() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	<-ch
}
