package shim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	goruntime "runtime"
	"strings"
	"testing"

	contentapi "github.com/containerd/containerd/api/services/content/v1"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/wasmmod"
	"github.com/containerd-shim-wasm/containerd-shim-wasm/oci/image"
)

// fakeContent is a content store in memory, read in chunks of 3 bytes.
type fakeContent struct {
	contentapi.ContentClient
	blobs map[digest.Digest][]byte
	// badOffset has the stream report wrong offsets after the first.
	badOffset bool
}

type fakeRead struct {
	grpc.ClientStream
	data      []byte
	off       int
	badOffset bool
}

func (r *fakeRead) Recv() (*contentapi.ReadContentResponse, error) {
	if r.off >= len(r.data) {
		return nil, io.EOF
	}
	end := min(r.off+3, len(r.data))
	resp := &contentapi.ReadContentResponse{Offset: int64(r.off), Data: r.data[r.off:end]}
	if r.badOffset && r.off > 0 {
		resp.Offset++
	}
	r.off = end
	return resp, nil
}

func (f *fakeContent) Read(ctx context.Context, in *contentapi.ReadContentRequest, _ ...grpc.CallOption) (contentapi.Content_ReadClient, error) {
	b, ok := f.blobs[digest.Digest(in.Digest)]
	if !ok {
		return nil, errgrpc.ToGRPC(errdefs.ErrNotFound)
	}
	return &fakeRead{data: b, badOffset: f.badOffset}, nil
}

// add stores a blob and returns its descriptor.
func (f *fakeContent) add(mediaType string, data []byte, platform *ocispec.Platform) ocispec.Descriptor {
	d := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data)), Platform: platform}
	f.blobs[d.Digest] = data
	return d
}

func (f *fakeContent) manifest(config ocispec.Descriptor, layers ...ocispec.Descriptor) []byte {
	b, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: config, Layers: layers})
	return b
}

func TestModuleLayerFromStore(t *testing.T) {
	f := &fakeContent{blobs: map[digest.Digest][]byte{}}
	module := f.add(image.MediaTypeWasmLayer, []byte("\x00asm\x01\x00\x00\x00"), nil)
	wasmCfg := f.add(image.MediaTypeWasmConfig, []byte(`{"architecture":"wasm","os":"wasip1"}`), nil)
	p2Cfg := f.add(image.MediaTypeWasmConfig, []byte(`{"architecture":"wasm","os":"wasip2"}`), nil)
	imgCfg := f.add(ocispec.MediaTypeImageConfig, []byte(`{"architecture":"amd64","os":"linux"}`), nil)
	tarLayer := f.add(ocispec.MediaTypeImageLayerGzip, []byte("tar"), nil)

	host := &ocispec.Platform{OS: "linux", Architecture: goruntime.GOARCH}
	wasm := &ocispec.Platform{OS: "wasip1", Architecture: "wasm"}
	artifact := f.add(ocispec.MediaTypeImageManifest, f.manifest(wasmCfg, module), nil)
	component := f.add(ocispec.MediaTypeImageManifest, f.manifest(p2Cfg, module), nil)
	rootfs := f.add(ocispec.MediaTypeImageManifest, f.manifest(imgCfg, tarLayer), nil)
	runwasi := f.add(ocispec.MediaTypeImageManifest, f.manifest(imgCfg, tarLayer, module), nil)
	missing := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("not pulled"), Size: 10, Platform: wasm}
	index := func(ms ...ocispec.Descriptor) ocispec.Descriptor {
		b, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: ms})
		return f.add(ocispec.MediaTypeImageIndex, b, nil)
	}
	on := func(d ocispec.Descriptor, p *ocispec.Platform) ocispec.Descriptor { d.Platform = p; return d }
	tampered := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("the manifest as pulled"), Size: int64(len(f.manifest(wasmCfg, module)))}
	f.blobs[tampered.Digest] = f.manifest(wasmCfg, module)

	tests := []struct {
		name         string
		target       ocispec.Descriptor
		variantsOnly bool
		want         digest.Digest
		err          error
		// never: the error says no variant will ever be found.
		never bool
	}{
		{"artifact", artifact, false, module.Digest, nil, false},
		{"rootfs image", rootfs, false, "", errNoImageModule, false},
		{"runwasi's layout", runwasi, false, module.Digest, nil, false},
		{"a manifest is no variant", artifact, true, "", errNoImageModule, true},
		{"index: the Wasm entry", index(on(rootfs, host), on(artifact, wasm)), false, module.Digest, nil, false},
		{"index: the Wasm entry, as a variant", index(on(rootfs, host), on(artifact, wasm)), true, module.Digest, nil, false},
		{"index: the Wasm entry not pulled, host entry rootfs", index(on(rootfs, host), missing), false, "", errNoImageModule, false},
		{"index: the Wasm entry not pulled, as a variant", index(on(rootfs, host), missing), true, "", errNoImageModule, false},
		{"index: host entry in runwasi's layout", index(on(runwasi, host)), false, module.Digest, nil, false},
		{"index: host entry is no variant", index(on(runwasi, host)), true, "", errNoImageModule, true},
		{"index: a Wasm entry that is no artifact", index(on(rootfs, host), on(rootfs, wasm)), true, "", errNoImageModule, true},
		{"component", component, false, "", wasmmod.ErrComponent, false},
		{"tampered manifest", tampered, false, "", errdefs.ErrDataLoss, false},
		{"not pulled", missing, false, "", errdefs.ErrNotFound, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := moduleLayer(context.Background(), f, tt.target, tt.variantsOnly)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("moduleLayer = %v, %v; want %v", l.Digest, err, tt.err)
				}
				// Only what no later pull can change is remembered.
				if never := errors.Is(err, errNoVariant); never != tt.never {
					t.Errorf("moduleLayer = %v: no variant ever %v, want %v", err, never, tt.never)
				}
				return
			}
			if err != nil || l.Digest != tt.want {
				t.Fatalf("moduleLayer = %v, %v; want %v", l.Digest, err, tt.want)
			}
		})
	}
}

func TestReadBlob(t *testing.T) {
	data := []byte("0123456789")
	f := &fakeContent{blobs: map[digest.Digest][]byte{digest.FromBytes(data): data}}
	var buf bytes.Buffer
	if err := readBlob(context.Background(), f, digest.FromBytes(data), 10, &buf); err != nil || buf.String() != string(data) {
		t.Fatalf("readBlob = %q, %v", buf.String(), err)
	}
	for _, tt := range []struct {
		name string
		size int64
		bad  bool
		want string
	}{
		{"shorter than said", 11, false, "is 10 bytes, not 11"},
		{"longer than said", 9, false, "larger than its 9 bytes"},
		{"out of order", 10, true, "offset"},
	} {
		f.badOffset = tt.bad
		err := readBlob(context.Background(), f, digest.FromBytes(data), tt.size, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want %q", tt.name, err, tt.want)
		}
	}
}

// TestModuleHeaderCheck: a component is refused as soon as its preamble
// is through, however the stream is cut; a module passes whole.
func TestModuleHeaderCheck(t *testing.T) {
	for _, tt := range []struct {
		data      string
		component bool
	}{
		{"\x00asm\x01\x00\x00\x00 module", false},
		{"\x00asm\x0d\x00\x01\x00 component", true},
		{"\x00as", false},
	} {
		for _, chunk := range []int{1, 3, 8, 64} {
			var out bytes.Buffer
			w := &moduleHeaderCheck{w: &out}
			var err error
			for i := 0; i < len(tt.data) && err == nil; i += chunk {
				_, err = w.Write([]byte(tt.data[i:min(i+chunk, len(tt.data))]))
			}
			if errors.Is(err, wasmmod.ErrComponent) != tt.component || !tt.component && out.String() != tt.data {
				t.Errorf("%q in chunks of %d: %v, passed %q", tt.data, chunk, err, out.String())
			}
		}
	}
}

// TestVariantLookupErrors: a shim that cannot reach containerd's API
// leaves the entrypoint to the rootfs; a variant that cannot run fails the
// Create.
func TestVariantLookupErrors(t *testing.T) {
	m := &imageModules{} // no address
	_, err := m.image(context.Background(), "c")
	if err == nil || errors.Is(err, errNoImageModule) || variantUnusable(err) {
		t.Errorf("unreachable API: %v (unusable %v), want a lookup error", err, variantUnusable(err))
	}
	f := &fakeContent{blobs: map[digest.Digest][]byte{}}
	module := f.add(image.MediaTypeWasmLayer, []byte("\x00asm\x01\x00\x00\x00"), nil)
	p2 := f.add(image.MediaTypeWasmConfig, []byte(`{"os":"wasip2"}`), nil)
	component := f.add(ocispec.MediaTypeImageManifest, f.manifest(p2, module), nil)
	if _, err := moduleLayer(context.Background(), f, component, false); !variantUnusable(err) {
		t.Errorf("a component: %v, want it unusable", err)
	}
	tampered := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("x"), Size: 3}
	f.blobs[tampered.Digest] = []byte("abc")
	if _, err := moduleLayer(context.Background(), f, tampered, false); !variantUnusable(err) {
		t.Errorf("a tampered manifest: %v, want it unusable", err)
	}
	missing := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("y"), Size: 3}
	if _, err := moduleLayer(context.Background(), f, missing, false); variantUnusable(err) {
		t.Errorf("a manifest not in the store: %v, want a lookup error", err)
	}
}
