package image

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/wasmmod"
)

// emptyModule is the smallest core module: its preamble.
const emptyModule = "\x00asm\x01\x00\x00\x00"

func layerOf(mediaType, data string) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromString(data), Size: int64(len(data))}
}

func TestModuleLayer(t *testing.T) {
	module := layerOf(MediaTypeWasmLayer, emptyModule)
	second := layerOf(MediaTypeWasmLayer, emptyModule+"\x00\x00")
	tarLayer := layerOf(ocispec.MediaTypeImageLayerGzip, "tar")
	wasmConfig := ocispec.Descriptor{MediaType: MediaTypeWasmConfig}
	imageConfig := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig}
	artifact := `{"architecture":"wasm","os":"wasip1","layerDigests":["` + module.Digest.String() + `"],"component":null}`
	tests := []struct {
		name     string
		manifest ocispec.Manifest
		config   string
		want     ocispec.Descriptor
		err      string
		errIs    error
	}{
		{"artifact", ocispec.Manifest{Config: wasmConfig, Layers: []ocispec.Descriptor{module}}, artifact, module, "", nil},
		{"artifact, first of two modules", ocispec.Manifest{Config: wasmConfig, Layers: []ocispec.Descriptor{module, second}}, artifact, module, "", nil},
		{"runwasi's layer type, standard config", ocispec.Manifest{Config: imageConfig, Layers: []ocispec.Descriptor{tarLayer, layerOf(MediaTypeComponentLayer, emptyModule)}}, `{}`, layerOf(MediaTypeComponentLayer, emptyModule), "", nil},
		{"old module layer type", ocispec.Manifest{Config: imageConfig, Layers: []ocispec.Descriptor{layerOf(MediaTypeModuleLayer, emptyModule)}}, `{}`, layerOf(MediaTypeModuleLayer, emptyModule), "", nil},
		{"rootfs image", ocispec.Manifest{Config: imageConfig, Layers: []ocispec.Descriptor{tarLayer}}, `{}`, ocispec.Descriptor{}, "", ErrNotWasm},
		{"component by os", ocispec.Manifest{Config: wasmConfig, Layers: []ocispec.Descriptor{module}}, `{"architecture":"wasm","os":"wasip2"}`, ocispec.Descriptor{}, "component", wasmmod.ErrComponent},
		{"component by description", ocispec.Manifest{Config: wasmConfig, Layers: []ocispec.Descriptor{module}}, `{"architecture":"wasm","os":"wasip1","component":{"exports":["wasi:cli/run@0.2.0"]}}`, ocispec.Descriptor{}, "component", wasmmod.ErrComponent},
		{"artifact without a Wasm layer", ocispec.Manifest{Config: wasmConfig, Layers: []ocispec.Descriptor{tarLayer}}, artifact, ocispec.Descriptor{}, "no application/wasm layer", nil},
		{"bad config", ocispec.Manifest{Config: wasmConfig, Layers: []ocispec.Descriptor{module}}, `{"os":`, ocispec.Descriptor{}, "Wasm artifact config", nil},
		{"bad digest", ocispec.Manifest{Config: wasmConfig, Layers: []ocispec.Descriptor{{MediaType: MediaTypeWasmLayer, Digest: "sha256:xyz", Size: 8}}}, artifact, ocispec.Descriptor{}, "digest", nil},
		{"sha512", ocispec.Manifest{Config: wasmConfig, Layers: []ocispec.Descriptor{{MediaType: MediaTypeWasmLayer, Digest: digest.Digest("sha512:" + strings.Repeat("ab", 64)), Size: 8}}}, artifact, ocispec.Descriptor{}, "digest", nil},
		{"empty layer", ocispec.Manifest{Config: wasmConfig, Layers: []ocispec.Descriptor{{MediaType: MediaTypeWasmLayer, Digest: digest.FromString(""), Size: 0}}}, artifact, ocispec.Descriptor{}, "is 0 bytes", nil},
		{"huge layer", ocispec.Manifest{Config: wasmConfig, Layers: []ocispec.Descriptor{{MediaType: MediaTypeWasmLayer, Digest: module.Digest, Size: wasmmod.MaxSize + 1}}}, artifact, ocispec.Descriptor{}, "bytes: a module has", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ModuleLayer(tt.manifest, []byte(tt.config))
			switch {
			case tt.err == "" && tt.errIs == nil:
				if err != nil || got.Digest != tt.want.Digest || got.MediaType != tt.want.MediaType {
					t.Fatalf("ModuleLayer = %+v, %v; want %+v", got, err, tt.want)
				}
			case err == nil:
				t.Fatalf("ModuleLayer = %+v, want an error", got)
			case tt.errIs != nil && !errors.Is(err, tt.errIs):
				t.Errorf("error %v is not %v", err, tt.errIs)
			case !strings.Contains(err.Error(), tt.err):
				t.Errorf("error %q does not mention %q", err, tt.err)
			}
		})
	}
}

// TestArtifactLayout: an artifact is the published layout (a Wasm config
// listing the one application/wasm layer, which is the module as it is),
// with the process fields for CRI, and ModuleLayer finds the module in it.
func TestArtifactLayout(t *testing.T) {
	a := &Artifact{Name: "example.local/hello:v1", Module: []byte(emptyModule), Entrypoint: []string{"/hello.wasm"}, Cmd: []string{"a"}, Env: []string{"K=v"}}
	var buf bytes.Buffer
	if err := a.WriteTar(&buf); err != nil {
		t.Fatal(err)
	}
	files, blob := layoutBlobs(t, buf.Bytes())
	var top ocispec.Index
	if err := json.Unmarshal(files["index.json"], &top); err != nil || len(top.Manifests) != 1 {
		t.Fatalf("index.json %s: %v", files["index.json"], err)
	}
	if p := top.Manifests[0].Platform; p != nil {
		t.Errorf("index.json names platform %+v: ctr images import would filter the artifact out", p)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(blob(top.Manifests[0]), &m); err != nil {
		t.Fatal(err)
	}
	if m.MediaType != ocispec.MediaTypeImageManifest || m.Config.MediaType != MediaTypeWasmConfig || len(m.Layers) != 1 || m.Layers[0].MediaType != MediaTypeWasmLayer {
		t.Fatalf("manifest %+v is not an OCI Wasm artifact", m)
	}
	if string(blob(m.Layers[0])) != emptyModule {
		t.Error("the layer is not the module as it is")
	}
	cfgBytes := blob(m.Config)
	var cfg WasmConfig
	if err := json.Unmarshal(cfgBytes, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.OS != "wasip1" || cfg.Architecture != "wasm" || len(cfg.LayerDigests) != 1 || cfg.LayerDigests[0] != m.Layers[0].Digest || cfg.Component != nil {
		t.Errorf("config %s", cfgBytes)
	}
	if cfg.Config == nil || cfg.Config.Entrypoint[0] != "/hello.wasm" || cfg.Config.Cmd[0] != "a" || cfg.Config.Env[0] != "K=v" {
		t.Errorf("config %s lacks the process fields", cfgBytes)
	}
	// containerd's CRI reads any config as an image config.
	var asImage ocispec.Image
	if err := json.Unmarshal(cfgBytes, &asImage); err != nil || asImage.Config.Entrypoint[0] != "/hello.wasm" {
		t.Errorf("config as an image config: %+v, %v", asImage.Config, err)
	}
	if l, err := ModuleLayer(m, cfgBytes); err != nil || l.Digest != m.Layers[0].Digest {
		t.Errorf("ModuleLayer = %v, %v", l, err)
	}

	for name, module := range map[string]string{"component": "\x00asm\x0d\x00\x01\x00", "not a module": "text"} {
		a := &Artifact{Name: "x", Module: []byte(module)}
		if err := a.WriteTar(&bytes.Buffer{}); err == nil {
			t.Errorf("%s: packed", name)
		}
	}
}

// FuzzModuleLayer: any manifest and config, as a registry may serve them,
// give a layer that passes the checks, or an error; never a panic.
func FuzzModuleLayer(f *testing.F) {
	f.Add([]byte(`{"config":{"mediaType":"application/vnd.wasm.config.v0+json"},"layers":[{"mediaType":"application/wasm","digest":"sha256:`+strings.Repeat("a", 64)+`","size":8}]}`), []byte(`{"os":"wasip1","component":null}`))
	f.Add([]byte(`{"config":{"mediaType":"application/vnd.oci.image.config.v1+json"},"layers":[]}`), []byte(`{}`))
	f.Add([]byte(`{"config":{"mediaType":"application/vnd.wasm.config.v0+json"},"layers":[]}`), []byte(`{"component":{}}`))
	f.Fuzz(func(t *testing.T, manifest, config []byte) {
		var m ocispec.Manifest
		if json.Unmarshal(manifest, &m) != nil {
			return
		}
		l, err := ModuleLayer(m, config)
		if err != nil {
			return
		}
		if !IsWasmLayer(l.MediaType) || l.Digest.Validate() != nil || l.Digest.Algorithm() != digest.SHA256 || l.Size <= 0 || l.Size > wasmmod.MaxSize {
			t.Fatalf("ModuleLayer returned %+v", l)
		}
	})
}
