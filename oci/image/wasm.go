package image

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/wasmmod"
)

// Media types of Wasm images.
const (
	// MediaTypeWasmConfig is the config of an OCI Wasm artifact (the CNCF
	// TAG Runtime's Wasm OCI artifact layout, as `wkg oci push` writes it).
	MediaTypeWasmConfig = "application/vnd.wasm.config.v0+json"
	// MediaTypeWasmLayer is a layer holding one Wasm binary, a core
	// module or a component, as it is (not a tar).
	MediaTypeWasmLayer = "application/wasm"
	// MediaTypeComponentLayer is the layer type runwasi's oci-tar-builder
	// gave Wasm binaries, modules too, in images of a standard config.
	MediaTypeComponentLayer = "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm"
	// MediaTypeModuleLayer is an older name for a module layer, used by
	// some of runwasi's examples.
	MediaTypeModuleLayer = "application/vnd.w3c.wasm.module.v1+wasm"
)

// IsWasmLayer reports whether a layer's media type is that of a Wasm binary.
func IsWasmLayer(mediaType string) bool {
	switch mediaType {
	case MediaTypeWasmLayer, MediaTypeComponentLayer, MediaTypeModuleLayer:
		return true
	}
	return false
}

// WasmConfig is the config of an OCI Wasm artifact.
type WasmConfig struct {
	Created      string          `json:"created,omitempty"`
	Author       string          `json:"author,omitempty"`
	Architecture string          `json:"architecture"`
	OS           string          `json:"os"`
	LayerDigests []digest.Digest `json:"layerDigests"`
	// Component describes a component's world; it is absent or null for
	// a core module.
	Component *json.RawMessage `json:"component,omitempty"`
	// Config is no part of the artifact layout: wasm-image adds the
	// process fields of an image config (entrypoint, command,
	// environment, working directory), which containerd's CRI reads from
	// any config, so that a pod of the artifact needs no command.
	Config *ocispec.ImageConfig `json:"config,omitempty"`
}

// ErrNotWasm says that a manifest holds no Wasm layer: its image's module,
// if any, is a file in its rootfs.
var ErrNotWasm = errors.New("no Wasm layer")

// ModuleLayer returns the layer holding the module to run of a Wasm image,
// given its manifest and the bytes of its config: the first Wasm layer
// (IsWasmLayer) of an OCI Wasm artifact (config MediaTypeWasmConfig), or of
// an image of a standard config with Wasm layers (runwasi's layout). It
// returns ErrNotWasm for a manifest of a standard config and no Wasm layer,
// an error wrapping wasmmod.ErrComponent for an artifact its config says
// is a component (os wasip2, or a component description), and an error
// for any other manifest it cannot use. The layer's content is not looked
// at: it may still be a component (wasmmod.IsComponent).
func ModuleLayer(m ocispec.Manifest, config []byte) (ocispec.Descriptor, error) {
	var layers []ocispec.Descriptor
	for _, l := range m.Layers {
		if IsWasmLayer(l.MediaType) {
			layers = append(layers, l)
		}
	}
	if m.Config.MediaType == MediaTypeWasmConfig {
		var cfg WasmConfig
		if err := json.Unmarshal(config, &cfg); err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("Wasm artifact config %s: %w", m.Config.Digest, err)
		}
		if cfg.OS == "wasip2" || cfg.Component != nil {
			return ocispec.Descriptor{}, fmt.Errorf("Wasm artifact of os %q is a component: %w", cfg.OS, wasmmod.ErrComponent)
		}
		if len(layers) == 0 {
			return ocispec.Descriptor{}, fmt.Errorf("Wasm artifact has no %s layer", MediaTypeWasmLayer)
		}
	} else if len(layers) == 0 {
		return ocispec.Descriptor{}, ErrNotWasm
	}
	l := layers[0]
	if err := l.Digest.Validate(); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("Wasm layer: digest %q: %w", l.Digest, err)
	}
	if l.Digest.Algorithm() != digest.SHA256 {
		return ocispec.Descriptor{}, fmt.Errorf("Wasm layer %s: only sha256 digests are supported", l.Digest)
	}
	if l.Size <= 0 || l.Size > wasmmod.MaxSize {
		return ocispec.Descriptor{}, fmt.Errorf("Wasm layer %s is %d bytes: a module has 1 to %d", l.Digest, l.Size, wasmmod.MaxSize)
	}
	return l, nil
}

// WasmPlatform reports whether p is a Wasm platform (architecture wasm),
// as in an image index's entry for a Wasm variant.
func WasmPlatform(p *ocispec.Platform) bool {
	return p != nil && p.Architecture == "wasm"
}

// Artifact describes an OCI Wasm artifact to pack: one module, as a layer
// of its own, and a Wasm config.
type Artifact struct {
	// Name is the reference the image is imported as.
	Name string
	// Module is the module's bytes.
	Module []byte
	// The process fields, kept in the config for containerd's CRI (see
	// WasmConfig.Config).
	Entrypoint, Cmd, Env []string
	WorkingDir           string
	// OS is the platform's OS: wasip1 if empty, or wasi.
	OS string
}

// WriteTar writes the artifact as an OCI image layout tarball.
func (a *Artifact) WriteTar(w io.Writer) error {
	l, err := NewLayout(a.Name, a)
	if err != nil {
		return err
	}
	return l.WriteTar(w)
}

func (a *Artifact) manifest() ([]blob, ocispec.Descriptor, error) {
	if _, ok := wasmmod.IsComponent(a.Module); ok {
		return nil, ocispec.Descriptor{}, fmt.Errorf("module: %w", wasmmod.ErrComponent)
	}
	if _, err := wasmmod.ReadExports(bytes.NewReader(a.Module)); err != nil && !errors.Is(err, wasmmod.ErrUnsupported) {
		return nil, ocispec.Descriptor{}, fmt.Errorf("module: %w", err)
	}
	layer := newBlob(MediaTypeWasmLayer, a.Module)
	osName := a.OS
	if osName == "" {
		osName = "wasip1"
	}
	cfg := WasmConfig{
		Architecture: "wasm",
		OS:           osName,
		LayerDigests: []digest.Digest{layer.desc.Digest},
	}
	if len(a.Entrypoint)+len(a.Cmd)+len(a.Env) > 0 || a.WorkingDir != "" {
		cfg.Config = &ocispec.ImageConfig{Entrypoint: a.Entrypoint, Cmd: a.Cmd, Env: a.Env, WorkingDir: a.WorkingDir}
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return nil, ocispec.Descriptor{}, fmt.Errorf("encode Wasm config: %w", err)
	}
	config := newBlob(MediaTypeWasmConfig, cfgJSON)
	manifestJSON, err := json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    config.desc,
		Layers:    []ocispec.Descriptor{layer.desc},
	})
	if err != nil {
		return nil, ocispec.Descriptor{}, fmt.Errorf("encode manifest: %w", err)
	}
	manifest := newBlob(ocispec.MediaTypeImageManifest, manifestJSON)
	mdesc := manifest.desc
	mdesc.Platform = &ocispec.Platform{OS: cfg.OS, Architecture: cfg.Architecture}
	return []blob{config, layer, manifest}, mdesc, nil
}
