package shim

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"github.com/containerd/containerd/v2/pkg/shim"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// maxBootstrapInput bounds what `start` reads from its standard input, as
// pkg/shim does.
const maxBootstrapInput = 10 << 20

// Run serves one invocation of the shim binary by containerd, whichever
// containerd version made it, and does not return on failure.
//
// Only `start` differs between versions. containerd 2.3 and newer write a
// BootstrapParams message on its standard input and read a BootstrapResult;
// that is pkg/shim's protocol, served by pkg/shim. containerd 2.0 to 2.2
// (and 1.7) write the runtime options there, raw, and read a JSON reply: a
// thin front end of ours (legacyStart) answers them with the same manager.
// What is on standard input decides, as pkg/shim itself decides it; nothing
// is for the user to set. The long-running server, `delete` and `-info` are
// the same for every version. -v and -version print the shim's own
// version (pkg/shim would print containerd's).
func Run(ctx context.Context) {
	m := NewManager()
	inv, ok := parseInvocation(os.Args[1:])
	if ok && inv.version {
		readBuildVersion().write(os.Stdout, os.Args[0])
		return
	}
	if !ok || inv.action != "start" {
		shim.RunShim(ctx, m)
		return
	}
	input, err := io.ReadAll(io.LimitReader(os.Stdin, maxBootstrapInput))
	if err != nil {
		fail(fmt.Errorf("read the bootstrap input: %w", err))
	}
	if isBootstrapParams(input, inv.id, inv.namespace) {
		if err := replayStdin(input); err != nil {
			fail(err)
		}
		shim.RunShim(ctx, m)
		return
	}
	if err := legacyStart(ctx, m, inv, input, os.Stdout); err != nil {
		fail(err)
	}
}

// fail ends the process as pkg/shim does on an error: the message on
// standard error, which containerd reports, and status 1.
func fail(err error) {
	fmt.Fprintf(os.Stderr, "%s: %s", RuntimeName, err)
	os.Exit(1)
}

// invocation is what containerd's command line tells the shim binary.
type invocation struct {
	id, namespace string
	// address is containerd's gRPC socket.
	address string
	debug   bool
	// version asks for the shim's version (-v, -version).
	version bool
	// action is "start", "delete" or "" (the long-running server, -info,
	// -version).
	action string
}

// parseInvocation reads the command line as pkg/shim does (the same
// flags); ok is false if it does not parse, which pkg/shim then reports.
func parseInvocation(args []string) (invocation, bool) {
	var inv invocation
	fs := flag.NewFlagSet("containerd-shim-wasm-v1", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.BoolVar(&inv.debug, "debug", false, "")
	fs.BoolVar(&inv.version, "v", false, "")
	fs.BoolVar(&inv.version, "version", false, "")
	fs.Bool("info", false, "")
	fs.StringVar(&inv.namespace, "namespace", "", "")
	fs.StringVar(&inv.id, "id", "", "")
	fs.String("socket", "", "")
	fs.String("debug-socket", "", "")
	fs.String("bundle", "", "")
	fs.StringVar(&inv.address, "address", "", "")
	fs.String("publish-binary", "", "")
	if err := fs.Parse(args); err != nil {
		return invocation{}, false
	}
	inv.action = fs.Arg(0)
	return inv, true
}

// isBootstrapParams tells whether input is the BootstrapParams message of
// containerd 2.3 or newer for this shim. Runtime options, which older
// containerd writes instead, may decode as BootstrapParams too; they do not
// carry the id and namespace of the command line.
func isBootstrapParams(input []byte, id, namespace string) bool {
	if len(input) == 0 {
		return false
	}
	var p bootapi.BootstrapParams
	if err := proto.Unmarshal(input, &p); err != nil {
		return false
	}
	return p.GetInstanceID() == id && p.GetNamespace() == namespace
}

// replayStdin makes input the process's standard input again, from its
// start, for pkg/shim to read.
func replayStdin(input []byte) error {
	fd, err := unix.MemfdCreate("bootstrap-params", unix.MFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("replay the bootstrap input: %w", err)
	}
	f := os.NewFile(uintptr(fd), "bootstrap-params")
	defer f.Close()
	if _, err := f.Write(input); err != nil {
		return fmt.Errorf("replay the bootstrap input: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("replay the bootstrap input: %w", err)
	}
	if err := unix.Dup3(fd, 0, 0); err != nil {
		return fmt.Errorf("replay the bootstrap input: %w", err)
	}
	return nil
}
