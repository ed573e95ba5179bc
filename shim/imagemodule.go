package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	goruntime "runtime"
	"sync"

	containersapi "github.com/containerd/containerd/api/services/containers/v1"
	contentapi "github.com/containerd/containerd/api/services/content/v1"
	imagesapi "github.com/containerd/containerd/api/services/images/v1"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/cache"
	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/runner"
	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/wasmmod"
	"github.com/containerd-shim-wasm/containerd-shim-wasm/oci"
	"github.com/containerd-shim-wasm/containerd-shim-wasm/oci/image"
)

// Docker's media types of a manifest and a manifest list.
const (
	dockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	dockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	// maxManifest bounds what is read of a manifest, an index or a config.
	maxManifest = 4 << 20
)

// errNoImageModule says that a container's image has no module in a layer
// of its own: its entrypoint, if any, is a file of its rootfs.
var errNoImageModule = errors.New("the container's image has no Wasm layer")

// errNoVariant is errNoImageModule from a look for a Wasm variant that
// will never find one, whatever is pulled later: a target that is no
// index, or an index whose Wasm platform entries (if any) are all in the
// store and not Wasm. What a target holds cannot change, so it is
// remembered by its digest.
var errNoVariant = fmt.Errorf("%w: no Wasm variant", errNoImageModule)

// imageModules finds the module of a container whose image carries it in
// a layer of its own (an OCI Wasm artifact, or runwasi's layout; see
// image.ModuleLayer) rather than in its rootfs. It reads the container's
// record, its image and the image's blobs from containerd's gRPC API (the
// shim is given containerd's address), and keeps the module in the node's
// module store (cache.Cache.Module).
type imageModules struct {
	// address is containerd's gRPC socket.
	address string
	// namespace is the shim's, for a request that carries none.
	namespace string

	once sync.Once
	conn *grpc.ClientConn
	err  error

	mu sync.Mutex
	// without are the image targets known to have no Wasm variant.
	without map[string]bool
}

// noVariant reports whether target is known to have no Wasm variant; with
// set, it records that it has none.
func (m *imageModules) noVariant(target string, set bool) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if set {
		if m.without == nil || len(m.without) >= 1024 {
			m.without = map[string]bool{}
		}
		m.without[target] = true
	}
	return m.without[target]
}

func (m *imageModules) client() (*grpc.ClientConn, error) {
	m.once.Do(func() {
		if m.address == "" {
			m.err = errors.New("the shim was not given containerd's address")
			return
		}
		m.conn, m.err = grpc.NewClient("unix://"+m.address,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20)))
	})
	return m.conn, m.err
}

// close closes the connection, if one was made.
func (m *imageModules) close() {
	if m.conn != nil {
		m.conn.Close()
	}
}

// containerImage is a container's image, as containerd records it.
type containerImage struct {
	conn   *grpc.ClientConn
	name   string
	target ocispec.Descriptor
}

// image looks up container id's image in containerd: errNoImageModule if
// the container has none; another error if containerd's API could not
// tell. It is one lookup per Create, whatever is asked of the image after.
func (m *imageModules) image(ctx context.Context, id string) (*containerImage, error) {
	conn, err := m.client()
	if err != nil {
		return nil, fmt.Errorf("read the container's image: %w", err)
	}
	cr, err := containersapi.NewContainersClient(conn).Get(ctx, &containersapi.GetContainerRequest{ID: id})
	if err != nil {
		return nil, fmt.Errorf("get container %s from containerd: %w", id, errgrpc.ToNative(err))
	}
	name := cr.GetContainer().GetImage()
	if name == "" {
		return nil, errNoImageModule
	}
	ir, err := imagesapi.NewImagesClient(conn).Get(ctx, &imagesapi.GetImageRequest{Name: name})
	if err != nil {
		return nil, fmt.Errorf("get image %s: %w", name, errgrpc.ToNative(err))
	}
	target := ir.GetImage().GetTarget()
	if target == nil {
		return nil, fmt.Errorf("image %s has no target", name)
	}
	return &containerImage{conn: conn, name: name, target: ocispec.Descriptor{MediaType: target.MediaType, Digest: digest.Digest(target.Digest), Size: target.Size}}, nil
}

// withNamespace gives ctx the shim's namespace if the request carries none.
func (m *imageModules) withNamespace(ctx context.Context) context.Context {
	if _, ok := namespaces.Namespace(ctx); !ok && m.namespace != "" {
		return namespaces.WithNamespace(ctx, m.namespace)
	}
	return ctx
}

// entrypoint returns the entrypoint of a container of img when img holds
// the module in a layer: the module, fetched from containerd's content
// store into the module store and verified against the layer's digest,
// pinned for the container and mounted at runner.ModulePath;
// process.args[0] (with an optional "#func") is only the guest's
// argv[0]. It returns errNoImageModule if img has no Wasm layer.
//
// With variantsOnly, only the Wasm platform entries (wasip1/wasm,
// wasi/wasm) of an image index count, and only those whose content is in
// the store: that is how the same image name runs as Wasm under this
// runtime and natively under runc. It is asked for every container, before
// the rootfs is looked at (an index without Wasm entries is remembered).
func (m *imageModules) entrypoint(ctx context.Context, opts *Options, img *containerImage, spec *specs.Spec, variantsOnly bool) (*oci.Entrypoint, *cache.Pin, error) {
	name, target := img.name, img.target
	cs := contentapi.NewContentClient(img.conn)
	if variantsOnly && m.noVariant(target.Digest.String(), false) {
		return nil, nil, errNoImageModule
	}
	layer, err := moduleLayer(ctx, cs, target, variantsOnly)
	if variantsOnly && errors.Is(err, errNoVariant) {
		m.noVariant(target.Digest.String(), true)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("image %s: %w", name, err)
	}
	c, err := openCache(opts)
	if err != nil {
		return nil, nil, fmt.Errorf("image %s: the module store is unusable: %w", name, err)
	}
	fetch := func(ctx context.Context, w io.Writer) error {
		return readBlob(ctx, cs, layer.Digest, layer.Size, &moduleHeaderCheck{w: w})
	}
	warn := func(err error) { log.G(ctx).WithError(err).Warn("compile cache") }
	pin, err := c.Module(ctx, layer.Digest.Encoded(), layer.Size, fetch, warn)
	switch {
	case errors.Is(err, wasmmod.ErrComponent):
		return nil, nil, fmt.Errorf("image %s: Wasm layer %s: %w: %w", name, layer.Digest, err, errdefs.ErrInvalidArgument)
	case errors.Is(err, cache.ErrDigestMismatch):
		return nil, nil, fmt.Errorf("image %s: Wasm layer %s in containerd's content store: %w: %w", name, layer.Digest, err, errdefs.ErrDataLoss)
	case err != nil:
		return nil, nil, fmt.Errorf("image %s: Wasm layer %s: %w", name, layer.Digest, err)
	}
	ep := layerEntrypoint(spec, pin.Path, layer)
	log.G(ctx).WithFields(log.Fields{"image": name, "layer": layer.Digest, "stored": !pin.Hit}).Debug("module from the image's Wasm layer")
	return ep, pin, nil
}

// layerEntrypoint is the entrypoint of a module stored at host, from
// layer, for spec's process. What it holds was checked as it was stored (no
// component: moduleHeaderCheck); whether it is a module at all, checkEntry
// says next, as for a file of the rootfs.
func layerEntrypoint(spec *specs.Spec, host string, layer ocispec.Descriptor) *oci.Entrypoint {
	arg0, fn := oci.SplitFunc(spec.Process.Args[0])
	if fn == "" {
		fn = oci.DefaultStartFunc
	}
	return &oci.Entrypoint{
		Arg0:     arg0,
		Path:     runner.ModulePath,
		HostPath: host,
		Func:     fn,
		Kind:     oci.Wasm,
		Size:     layer.Size,
		SHA256:   layer.Digest.Encoded(),
		Layer:    layer.Digest.String(),
	}
}

// moduleLayer finds the module's layer from an image's target: a manifest,
// or an index, whose Wasm platforms are tried first, then the others (not
// with variantsOnly), of those whose manifests are in the content store.
func moduleLayer(ctx context.Context, cs contentapi.ContentClient, target ocispec.Descriptor, variantsOnly bool) (ocispec.Descriptor, error) {
	switch target.MediaType {
	case ocispec.MediaTypeImageManifest, dockerManifest:
		if variantsOnly {
			return ocispec.Descriptor{}, errNoVariant
		}
		return manifestModule(ctx, cs, target)
	case ocispec.MediaTypeImageIndex, dockerManifestList:
	default:
		return ocispec.Descriptor{}, fmt.Errorf("target %s of media type %q: %w", target.Digest, target.MediaType, errNoImageModule)
	}
	b, err := readSmallBlob(ctx, cs, target)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("index %s: %w", target.Digest, err)
	}
	var first, rest []ocispec.Descriptor
	for _, d := range idx.Manifests {
		switch {
		case image.WasmPlatform(d.Platform):
			first = append(first, d)
		case d.Platform == nil || d.Platform.Architecture == goruntime.GOARCH:
			rest = append(rest, d)
		}
	}
	if variantsOnly {
		rest = nil
	}
	missing := false // a Wasm entry not pulled (yet)
	for i, d := range append(first, rest...) {
		if d.MediaType != ocispec.MediaTypeImageManifest && d.MediaType != dockerManifest {
			continue
		}
		l, err := manifestModule(ctx, cs, d)
		switch {
		case errors.Is(err, errdefs.ErrNotFound):
			missing = missing || i < len(first)
			continue // a platform that was not pulled
		case errors.Is(err, errNoImageModule):
			continue // not Wasm
		}
		return l, err
	}
	if variantsOnly && !missing {
		return ocispec.Descriptor{}, errNoVariant
	}
	return ocispec.Descriptor{}, errNoImageModule
}

// manifestModule reads a manifest and its config and finds the module's
// layer (image.ModuleLayer).
func manifestModule(ctx context.Context, cs contentapi.ContentClient, d ocispec.Descriptor) (ocispec.Descriptor, error) {
	b, err := readSmallBlob(ctx, cs, d)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("manifest %s: %w", d.Digest, err)
	}
	hasWasm := m.Config.MediaType == image.MediaTypeWasmConfig
	for _, l := range m.Layers {
		hasWasm = hasWasm || image.IsWasmLayer(l.MediaType)
	}
	if !hasWasm {
		return ocispec.Descriptor{}, errNoImageModule // no need for its config
	}
	config, err := readSmallBlob(ctx, cs, m.Config)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	l, err := image.ModuleLayer(m, config)
	switch {
	case errors.Is(err, image.ErrNotWasm):
		return ocispec.Descriptor{}, errNoImageModule
	case errors.Is(err, wasmmod.ErrComponent):
		return ocispec.Descriptor{}, fmt.Errorf("manifest %s: %w: %w", d.Digest, err, errdefs.ErrInvalidArgument)
	case err != nil:
		return ocispec.Descriptor{}, fmt.Errorf("manifest %s: %w: %w", d.Digest, err, errdefs.ErrInvalidArgument)
	}
	return l, nil
}

// readSmallBlob reads a manifest, index or config and checks it against
// its descriptor.
func readSmallBlob(ctx context.Context, cs contentapi.ContentClient, d ocispec.Descriptor) ([]byte, error) {
	if err := d.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("blob digest %q: %w", d.Digest, err)
	}
	if d.Size < 0 || d.Size > maxManifest {
		return nil, fmt.Errorf("blob %s is %d bytes, more than the %d read of a manifest or config", d.Digest, d.Size, maxManifest)
	}
	var buf bytesWriter
	if err := readBlob(ctx, cs, d.Digest, d.Size, &buf); err != nil {
		return nil, err
	}
	if got := digest.FromBytes(buf); got != d.Digest {
		return nil, fmt.Errorf("blob %s in containerd's content store has digest %s: %w", d.Digest, got, errdefs.ErrDataLoss)
	}
	return buf, nil
}

// bytesWriter is a []byte an io.Writer appends to.
type bytesWriter []byte

func (b *bytesWriter) Write(p []byte) (int, error) {
	*b = append(*b, p...)
	return len(p), nil
}

// readBlob copies a blob of the content store to w, in order, failing if
// it is not size bytes.
func readBlob(ctx context.Context, cs contentapi.ContentClient, dgst digest.Digest, size int64, w io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := cs.Read(ctx, &contentapi.ReadContentRequest{Digest: dgst.String()})
	if err != nil {
		return fmt.Errorf("read %s from containerd's content store: %w", dgst, errgrpc.ToNative(err))
	}
	var off int64
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read %s from containerd's content store: %w", dgst, errgrpc.ToNative(err))
		}
		if resp.Offset != off {
			return fmt.Errorf("read %s from containerd's content store: data at offset %d, want %d", dgst, resp.Offset, off)
		}
		if off+int64(len(resp.Data)) > size {
			return fmt.Errorf("blob %s in containerd's content store is larger than its %d bytes: %w", dgst, size, errdefs.ErrDataLoss)
		}
		if _, err := w.Write(resp.Data); err != nil {
			return err
		}
		off += int64(len(resp.Data))
	}
	if off != size {
		return fmt.Errorf("blob %s in containerd's content store is %d bytes, not %d: %w", dgst, off, size, errdefs.ErrDataLoss)
	}
	return nil
}

// moduleHeaderCheck passes a module on to w, failing as soon as its
// preamble shows a component: what cannot run is not stored.
type moduleHeaderCheck struct {
	w    io.Writer
	head []byte
}

func (c *moduleHeaderCheck) Write(p []byte) (int, error) {
	if len(c.head) < wasmmod.HeaderSize {
		c.head = append(c.head, p[:min(len(p), wasmmod.HeaderSize-len(c.head))]...)
		if v, ok := wasmmod.IsComponent(c.head); ok {
			return 0, fmt.Errorf("a WebAssembly component (component binary version %d): %w", v, wasmmod.ErrComponent)
		}
	}
	return c.w.Write(p)
}
