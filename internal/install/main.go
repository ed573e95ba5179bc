package install

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/agent"
)

// command is the installer's command line.
type command struct {
	name                     string // install or uninstall
	root, shim, unit, socket string
	node, saDir              string
	restart, wait, stay      bool
	timeout                  time.Duration
	// The node agent's (the agent command, or install --agent).
	agent, existing bool
	namespace       string
	workers         int
}

// parseCommand parses the installer's arguments (after the binary's name).
func parseCommand(args []string, stderr io.Writer) (*command, error) {
	if len(args) == 0 || args[0] != "install" && args[0] != "uninstall" && args[0] != "agent" {
		return nil, fmt.Errorf("usage: %s install|uninstall [--host-root DIR] [--shim PATH] [--restart] [--wait] [--label-node NODE] [--stay|--agent]\n       %s agent [--host-root DIR] [--containerd-socket PATH] [--namespace NS] [--workers N]", Installer, Installer)
	}
	c := &command{name: args[0]}
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.root, "host-root", "/", "where the node's / is (its host mount, in a pod)")
	fs.StringVar(&c.shim, "shim", "", "the shim binary to install (default: "+ShimName+" beside this binary)")
	fs.BoolVar(&c.restart, "restart", false, "restart containerd (systemctl restart UNIT in the node's root) if anything changed, or (install) if it does not serve the handler yet; then (install) wait until it does")
	fs.StringVar(&c.unit, "containerd-unit", "", "containerd's systemd unit, for --restart (default: containerd, or k3s's or rke2's unit on their nodes)")
	fs.BoolVar(&c.wait, "wait", false, "install: wait until containerd's CRI serves the handler (once containerd was restarted)")
	fs.BoolVar(&c.stay, "stay", false, "once done, stay until terminated (the main process of a DaemonSet's pod)")
	fs.StringVar(&c.socket, "containerd-socket", "", "containerd's socket, for --wait (default: the node's /run/containerd/containerd.sock under --host-root)")
	fs.DurationVar(&c.timeout, "wait-timeout", 2*time.Minute, "how long --wait waits")
	fs.StringVar(&c.node, "label-node", "", "label this node "+NodeLabel+"="+NodeLabelValue+" once installed (and served, with --wait), or take the label off before uninstalling, through the API server as the pod's service account")
	fs.StringVar(&c.saDir, "service-account-dir", "/var/run/secrets/kubernetes.io/serviceaccount", "the pod's service account token and CA, for --label-node")
	fs.BoolVar(&c.agent, "agent", false, "install: once done, run the node agent (as the agent command does) until terminated")
	fs.StringVar(&c.namespace, "namespace", "k8s.io", "agent: the containerd namespace whose pulled images are compiled")
	fs.IntVar(&c.workers, "workers", 1, "agent: images prepared at once")
	fs.BoolVar(&c.existing, "existing", true, "agent: compile the images already pulled too, at start")
	if err := fs.Parse(args[1:]); err != nil {
		return nil, err
	}
	if fs.NArg() != 0 {
		return nil, fmt.Errorf("%s: unexpected arguments %q", c.name, fs.Args())
	}
	return c, nil
}

// Main runs the installer's install and uninstall commands (args after
// the binary's name: "install --host-root DIR ..."), and returns the exit
// status. The shim installed is the one beside the installer's binary,
// unless --shim names another.
func Main(args []string, stdout, stderr io.Writer) int {
	c, err := parseCommand(args, stderr)
	if err != nil {
		if err != flag.ErrHelp {
			fmt.Fprintln(stderr, err)
		}
		return 2
	}
	cmd := c.name
	fail := func(err error) int {
		fmt.Fprintf(stderr, "%s: %v\n", cmd, err)
		return 1
	}
	sock := c.socket
	if sock == "" {
		sock = filepath.Join(c.root, "run", "containerd", "containerd.sock")
	}
	if cmd == "agent" {
		if err := runAgent(c, sock, stdout); err != nil {
			return fail(err)
		}
		return 0
	}
	var api *APIServer
	if c.node != "" {
		var err error
		if api, err = InCluster(c.saDir); err != nil {
			return fail(fmt.Errorf("--label-node: %w", err))
		}
	}
	if c.shim == "" {
		self, err := os.Executable()
		if err != nil {
			return fail(fmt.Errorf("find the shim's binary: %w", err))
		}
		c.shim = filepath.Join(filepath.Dir(self), ShimName)
	}
	o := Options{HostRoot: c.root, Binary: c.shim, Out: stdout}
	if c.unit == "" {
		c.unit = o.RestartUnit()
	}
	ctx := context.Background()
	if cmd == "uninstall" {
		if api != nil {
			if err := api.Label(ctx, c.node, false); err != nil {
				return fail(err)
			}
			fmt.Fprintf(stdout, "took the label %s off node %s\n", NodeLabel, c.node)
		}
		changed, err := Uninstall(o)
		if err != nil {
			return fail(err)
		}
		switch {
		case c.restart && changed:
			if err := Restart(ctx, c.root, c.unit); err != nil {
				return fail(err)
			}
			fmt.Fprintf(stdout, "restarted %s\n", c.unit)
		case !c.restart:
			fmt.Fprintf(stdout, "restart containerd for the %q runtime handler to go\n", Handler)
		}
		if c.stay {
			stayUntilTerminated()
		}
		return 0
	}
	changed, err := Install(o)
	if err != nil {
		return fail(err)
	}
	if !changed {
		fmt.Fprintln(stdout, "already installed: nothing changed")
	}
	served := func(d time.Duration) error {
		wctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		return WaitHandler(wctx, sock, Handler)
	}
	switch {
	case c.restart && (changed || served(2*time.Second) != nil):
		if err := Restart(ctx, c.root, c.unit); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "restarted %s\n", c.unit)
		fallthrough
	case c.restart || c.wait:
		if err := served(c.timeout); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "containerd serves the runtime handler %q\n", Handler)
	default:
		fmt.Fprintf(stdout, "restart containerd for the %q runtime handler to be served\n", Handler)
	}
	if api != nil {
		if err := api.Label(ctx, c.node, true); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "labelled node %s %s=%s\n", c.node, NodeLabel, NodeLabelValue)
	}
	switch {
	case c.agent:
		if err := runAgent(c, sock, stdout); err != nil {
			return fail(err)
		}
	case c.stay:
		stayUntilTerminated()
	}
	return 0
}

// runAgent runs the node agent on containerd at sock until SIGTERM or
// SIGINT: it waits until containerd's CRI serves the handler, then
// compiles the modules of the images pulled into the namespace.
func runAgent(c *command, sock string, out io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	logf := func(format string, a ...any) {
		fmt.Fprintf(out, "%s agent: %s\n", time.Now().UTC().Format(time.RFC3339), fmt.Sprintf(format, a...))
	}
	var h agent.Handler
	for {
		var err error
		if h, err = agent.HandlerFromCRI(ctx, sock, Handler); err == nil {
			break
		}
		logf("waiting for containerd's CRI to serve %q: %v", Handler, err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(5 * time.Second):
		}
	}
	a, err := agent.New(agent.Config{Socket: sock, Namespace: c.namespace, Handler: h, Workers: c.workers, Existing: c.existing, Logf: logf})
	if err != nil {
		return err
	}
	defer a.Close()
	logf("compiling the Wasm modules of images pulled into namespace %s, for runtime handler %q", c.namespace, Handler)
	return a.Run(ctx)
}

// stayUntilTerminated blocks until SIGTERM or SIGINT.
func stayUntilTerminated() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	<-ch
}
