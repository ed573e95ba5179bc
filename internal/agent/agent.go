// Package agent is the node agent that compiles the Wasm modules of the
// images containerd pulls, before their first container: it watches
// containerd's image events in one namespace (k8s.io, CRI's) and, for each
// new image, has the shim do what a Create does up to runc, with the
// handler's own runtime options, through a container it deletes at once
// (see CompileOnlyAnnotation). The compile so runs as every compile does:
// in the shim's limited compile cgroup, within the node's compile slots,
// into the node's cache. Pulls never wait for it.
package agent

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/api/types/runtimeoptions/v1"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/oci/image"
)

// CompileOnlyAnnotation is the shim's annotation that has a Create compile
// and go no further (shim.CompileOnlyAnnotation; a test keeps the two
// equal, so that the installer need not link the shim).
const CompileOnlyAnnotation = "containerd-shim-wasm.io/compile-only"

// containerPrefix begins the ids of the agent's short-lived containers.
const containerPrefix = "containerd-shim-wasm-compile-"

// Handler is the runtime handler whose Creates the agent makes: as CRI
// would for a pod on it.
type Handler struct {
	// RuntimeType is the runtime, e.g. io.containerd.wasm.v1.
	RuntimeType string
	// RuntimePath is the shim's binary, if the handler names one.
	RuntimePath string
	// Options is the handler's runtime options, as TOML.
	Options []byte
	// Snapshotter is the snapshotter images are unpacked with; containerd's
	// default if empty.
	Snapshotter string
}

// Config configures the agent.
type Config struct {
	// Socket is containerd's gRPC socket.
	Socket string
	// Namespace is the namespace whose images are compiled (k8s.io).
	Namespace string
	Handler   Handler
	// Workers bounds the images prepared at once (1 if 0); the node's
	// compile slots bound the compiles of every shim together.
	Workers int
	// Existing has the images already in the namespace at start prepared
	// too.
	Existing bool
	// Logf reports what the agent does.
	Logf func(format string, a ...any)
}

// Agent compiles the modules of pulled images.
type Agent struct {
	cfg    Config
	client *containerd.Client
	queue  chan string

	mu sync.Mutex
	// done are the targets (manifest or index digests) prepared: an image
	// pulled under several names is prepared once.
	done map[string]bool
}

// maxQueued bounds the images waiting; more are dropped (and logged): their
// first containers compile as without the agent.
const maxQueued = 1024

// New connects to containerd.
func New(cfg Config) (*Agent, error) {
	if cfg.Workers <= 0 {
		cfg.Workers = 1
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	client, err := containerd.New(cfg.Socket, containerd.WithDefaultNamespace(cfg.Namespace), containerd.WithTimeout(10*time.Second))
	if err != nil {
		return nil, fmt.Errorf("connect to containerd at %s: %w", cfg.Socket, err)
	}
	return &Agent{cfg: cfg, client: client, queue: make(chan string, maxQueued), done: map[string]bool{}}, nil
}

// Close closes the connection to containerd.
func (a *Agent) Close() error { return a.client.Close() }

// Run watches the namespace's image events and prepares each image, until
// ctx ends. A lost event stream is subscribed to again.
func (a *Agent) Run(ctx context.Context) error {
	a.removeLeftovers(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	for range a.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case name := <-a.queue:
					a.prepareLogged(ctx, name)
				}
			}
		}()
	}
	first := true
	for ctx.Err() == nil {
		err := a.watch(ctx, first)
		first = false
		if ctx.Err() != nil {
			break
		}
		a.cfg.Logf("containerd's events: %v; subscribing again", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return nil
}

// removeLeftovers deletes the containers (and their snapshots) an agent
// that was killed mid-compile left behind: it deletes its own as soon as
// the shim has answered.
func (a *Agent) removeLeftovers(ctx context.Context) {
	ctx = namespaces.WithNamespace(ctx, a.cfg.Namespace)
	cs, err := a.client.Containers(ctx, fmt.Sprintf(`id~=%q`, "^"+containerPrefix))
	if err != nil {
		a.cfg.Logf("list containers left by an earlier agent: %v", err)
		return
	}
	for _, c := range cs {
		if task, err := c.Task(ctx, nil); err == nil {
			task.Delete(ctx, containerd.WithProcessKill)
		}
		if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
			a.cfg.Logf("delete container %s left by an earlier agent: %v", c.ID(), err)
			continue
		}
		a.cfg.Logf("deleted container %s, left by an earlier agent", c.ID())
	}
}

// watch subscribes to the namespace's image events (then, if existing,
// queues the images already there) and queues each image created or
// updated, until the stream fails or ctx ends.
func (a *Agent) watch(ctx context.Context, existing bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ns := a.cfg.Namespace
	evs, errs := a.client.Subscribe(ctx,
		fmt.Sprintf(`namespace==%q,topic=="/images/create"`, ns),
		fmt.Sprintf(`namespace==%q,topic=="/images/update"`, ns))
	if existing && a.cfg.Existing {
		imgs, err := a.client.ImageService().List(ctx)
		if err != nil {
			return fmt.Errorf("list images: %w", err)
		}
		for _, img := range imgs {
			a.enqueue(img.Name)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errs:
			return err
		case ev := <-evs:
			v, err := typeurl.UnmarshalAny(ev.Event)
			if err != nil {
				continue
			}
			switch e := v.(type) {
			case *eventstypes.ImageCreate:
				a.enqueue(e.Name)
			case *eventstypes.ImageUpdate:
				a.enqueue(e.Name)
			}
		}
	}
}

func (a *Agent) enqueue(name string) {
	select {
	case a.queue <- name:
	default:
		a.cfg.Logf("image %s: %d images wait already; not compiled ahead", name, maxQueued)
	}
}

func (a *Agent) prepareLogged(ctx context.Context, name string) {
	start := time.Now()
	msg, err := a.Prepare(ctx, name)
	switch {
	case err != nil:
		// containerd adds each wrapped error of the shim's as a line more.
		first, _, _ := strings.Cut(err.Error(), "\n")
		a.cfg.Logf("image %s: %s", name, first)
	case msg != "":
		a.cfg.Logf("image %s: %s (%s)", name, msg, time.Since(start).Round(time.Millisecond))
	}
}

// Prepare has the shim compile the module of image name, if it has one,
// and says what was done ("" for an image prepared before under another
// name). An error says why it could not: the image's first container
// then compiles it, or fails as it would have.
func (a *Agent) Prepare(ctx context.Context, name string) (string, error) {
	ctx = namespaces.WithNamespace(ctx, a.cfg.Namespace)
	img, err := a.client.GetImage(ctx, name)
	if err != nil {
		return "", fmt.Errorf("get image: %w", err)
	}
	target := img.Target().Digest.String()
	if !a.claim(target) {
		return "", nil
	}
	process, err := imageProcess(ctx, img)
	if err != nil {
		a.unclaim(target)
		return "", err
	}
	if process == nil {
		return "no entrypoint: nothing to compile", nil
	}
	return a.compile(ctx, img, process)
}

// claim reports whether target is yet to be prepared, and marks it.
func (a *Agent) claim(target string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.done[target] {
		return false
	}
	if len(a.done) >= 4096 {
		clear(a.done) // a bound on memory: a target seen again is only prepared again
	}
	a.done[target] = true
	return true
}

func (a *Agent) unclaim(target string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.done, target)
}

// process is what a container of an image runs, as CRI makes it of the
// image's config when the pod gives no command: its args, environment and
// working directory. The user is left out: finding the entrypoint does not
// depend on it, and reading it (oci.WithImageConfig) mounts the image's
// snapshot at containerd's own paths, which the agent's pod does not have.
type process struct {
	args, env []string
	cwd       string
}

// placeholderArg0 stands for a command a Wasm image's config lacks: the
// module of a layer runs whatever argv[0] is.
const placeholderArg0 = "module.wasm"

// imageProcess reads what a container of img runs; nil if the image names
// nothing to run (its pods give the command).
func imageProcess(ctx context.Context, img containerd.Image) (*process, error) {
	desc, err := img.Config(ctx)
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	if desc.Size > 4<<20 {
		return nil, fmt.Errorf("image config is %d bytes", desc.Size)
	}
	b, err := content.ReadBlob(ctx, img.ContentStore(), desc)
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	switch {
	case images.IsConfigType(desc.MediaType):
		var c ocispec.Image
		if err := json.Unmarshal(b, &c); err != nil {
			return nil, fmt.Errorf("image config: %w", err)
		}
		args := append(append([]string(nil), c.Config.Entrypoint...), c.Config.Cmd...)
		if len(args) == 0 {
			if !hasWasmLayer(ctx, img) {
				return nil, nil
			}
			args = []string{placeholderArg0}
		}
		return &process{args: args, env: c.Config.Env, cwd: cmp.Or(c.Config.WorkingDir, "/")}, nil
	case desc.MediaType == image.MediaTypeWasmConfig:
		var c image.WasmConfig
		if err := json.Unmarshal(b, &c); err != nil {
			return nil, fmt.Errorf("Wasm config: %w", err)
		}
		p := &process{args: []string{placeholderArg0}, cwd: "/"}
		if c.Config != nil {
			if args := append(append([]string(nil), c.Config.Entrypoint...), c.Config.Cmd...); len(args) > 0 {
				p.args = args
			}
			p.env = c.Config.Env
			if c.Config.WorkingDir != "" {
				p.cwd = c.Config.WorkingDir
			}
		}
		return p, nil
	}
	return nil, nil // not an image a container runs
}

// hasWasmLayer reports whether img's manifest has a Wasm layer.
func hasWasmLayer(ctx context.Context, img containerd.Image) bool {
	m, err := images.Manifest(ctx, img.ContentStore(), img.Target(), img.Platform())
	if err != nil {
		return false
	}
	for _, l := range m.Layers {
		if image.IsWasmLayer(l.MediaType) {
			return true
		}
	}
	return false
}

// compile creates a container of img on the handler with
// CompileOnlyAnnotation, and deletes it.
func (a *Agent) compile(ctx context.Context, img containerd.Image, p *process) (string, error) {
	var b [6]byte
	rand.Read(b[:])
	id := containerPrefix + hex.EncodeToString(b[:])
	h := a.cfg.Handler
	specOpts := []oci.SpecOpts{
		oci.WithEnv(p.env), oci.WithProcessCwd(p.cwd), oci.WithProcessArgs(p.args...),
		oci.WithAnnotations(map[string]string{CompileOnlyAnnotation: "true"}),
	}
	opts := []containerd.NewContainerOpts{containerd.WithImage(img)}
	if h.Snapshotter != "" {
		opts = append(opts, containerd.WithSnapshotter(h.Snapshotter))
	}
	opts = append(opts,
		containerd.WithNewSnapshotView(id, img),
		containerd.WithRuntime(h.RuntimeType, &runtimeoptions.Options{ConfigBody: h.Options}),
		containerd.WithNewSpec(specOpts...),
	)
	c, err := a.client.NewContainer(ctx, id, opts...)
	if errdefs.IsNotFound(err) {
		// Not unpacked (yet): `ctr images import` creates the image, then
		// unpacks it. Unpack it, as the first container would need.
		if uerr := img.Unpack(ctx, h.Snapshotter); uerr != nil && !errdefs.IsAlreadyExists(uerr) {
			return "", fmt.Errorf("unpack the image: %w", uerr)
		}
		c, err = a.client.NewContainer(ctx, id, opts...)
	}
	if err != nil {
		return "", fmt.Errorf("container to compile in: %w", err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := c.Delete(dctx, containerd.WithSnapshotCleanup); err != nil {
			a.cfg.Logf("delete container %s: %v", id, err)
		}
	}()
	var taskOpts []containerd.NewTaskOpts
	if h.RuntimePath != "" {
		taskOpts = append(taskOpts, containerd.WithRuntimePath(h.RuntimePath))
	}
	task, err := c.NewTask(ctx, cio.NullIO, taskOpts...)
	if err == nil {
		// A shim that does not know the annotation created the task:
		// the compile happened, and the task goes.
		task.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill)
		return "compiled (the runtime created the task)", nil
	}
	// containerd 2.x passes the shim's Aborted on; 1.7 knows no such code
	// and makes it Unknown: the message says it either way.
	msg, _, _ := strings.Cut(err.Error(), "\n")
	if _, done, ok := strings.Cut(msg, "compile only: "); ok && (errdefs.IsAborted(err) || errdefs.IsUnknown(err)) {
		done = strings.TrimSuffix(done, ": unknown")
		return strings.TrimSuffix(done, ": "+errdefs.ErrAborted.Error()), nil
	}
	return "", err
}
