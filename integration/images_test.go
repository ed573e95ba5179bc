package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// startRegistry serves an OCI registry (go-containerregistry's) on
// 127.0.0.1 for the test, and returns its host:port.
func startRegistry(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// wasmImage builds cmd/wasm-image once, and runs it with args.
func wasmImage(t *testing.T, args ...string) {
	t.Helper()
	bin := filepath.Join(e.fixtures, "wasm-image")
	if _, err := os.Stat(bin); err != nil {
		if err := goBuild(bin, "./cmd/wasm-image", "CGO_ENABLED=0"); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
		t.Fatalf("wasm-image %v: %v\n%s", args, err, out)
	}
}

// rawLayer is one blob of a hand-made image.
type rawLayer struct {
	mediaType string
	data      []byte
}

// pushRaw pushes a manifest of a config and layers as they are, the way
// tools the project has never seen lay images out.
func pushRaw(t *testing.T, ref string, config rawLayer, layers ...rawLayer) {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	desc := func(l rawLayer) ocispec.Descriptor {
		return ocispec.Descriptor{MediaType: l.mediaType, Digest: digest.FromBytes(l.data), Size: int64(len(l.data))}
	}
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: desc(config)}
	for _, l := range append([]rawLayer{config}, layers...) {
		if err := remote.WriteLayer(r.Context(), static.NewLayer(l.data, types.MediaType(l.mediaType))); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range layers {
		m.Layers = append(m.Layers, desc(l))
	}
	b, _ := json.Marshal(m)
	if err := remote.Put(r, rawManifest{b, types.OCIManifestSchema1}); err != nil {
		t.Fatal(err)
	}
}

type rawManifest struct {
	b  []byte
	mt types.MediaType
}

func (m rawManifest) RawManifest() ([]byte, error)        { return m.b, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return m.mt, nil }

// pull pulls an image through CRI and returns its id.
func (c *criEnv) pull(t *testing.T, ref string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := c.images.PullImage(ctx, &cri.PullImageRequest{Image: &cri.ImageSpec{Image: ref}})
	if err != nil {
		t.Fatalf("PullImage(%s): %v", ref, err)
	}
	return resp.ImageRef
}

// runToEnd creates and starts a container of image in a pod (with cmd, if
// any), waits for it to exit and returns its exit code and stdout lines.
func (c *criEnv) runToEnd(t *testing.T, podID string, podCfg *cri.PodSandboxConfig, name, image string, cmd ...string) (int32, []string) {
	t.Helper()
	cfg := &cri.ContainerConfig{Metadata: &cri.ContainerMetadata{Name: name}, Image: &cri.ImageSpec{Image: image}, LogPath: name + ".log"}
	if len(cmd) > 0 {
		cfg.Command, cfg.Args = cmd[:1], cmd[1:]
	}
	id := c.containerConfig(t, podID, podCfg, cfg)
	st := c.waitExit(t, id)
	return st.ExitCode, logLines(t, filepath.Join(podCfg.LogDirectory, cfg.LogPath), "stdout")
}

// createError creates and starts a container of image in a pod, and
// returns the error StartContainer gives (the shim's Create runs then).
func (c *criEnv) createError(t *testing.T, podID string, podCfg *cri.PodSandboxConfig, name, image string, cmd ...string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := &cri.ContainerConfig{Metadata: &cri.ContainerMetadata{Name: name}, Image: &cri.ImageSpec{Image: image}, LogPath: name + ".log", Command: cmd}
	resp, err := c.rt.CreateContainer(ctx, &cri.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: podCfg})
	if err != nil {
		t.Fatalf("CreateContainer(%s): %v", name, err)
	}
	defer c.rt.RemoveContainer(ctx, &cri.RemoveContainerRequest{ContainerId: resp.ContainerId})
	if _, err := c.rt.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: resp.ContainerId}); err != nil {
		return err
	}
	return fmt.Errorf("started")
}

// withCustomSection returns a module that differs from m by a custom
// section named name: a module of its own digest.
func withCustomSection(m []byte, name string) []byte {
	payload := append([]byte{byte(len(name))}, name...)
	return append(append(append([]byte(nil), m...), 0x00, byte(len(payload))), payload...)
}

// TestWasmImagesCRI: each kind of Wasm image, pushed to a registry the test
// serves and pulled through CRI, runs in a pod on the handler wasm: an OCI
// Wasm artifact packed by wasm-image (no command needed), one laid out as
// other tools do (a command needed, as CRI wants one), runwasi's layout (a
// Wasm layer beside a standard config), and a rootfs image. A component
// is refused at Create, saying why, and so is a layer whose content in
// containerd's store does not match its digest; the pod serves on.
func TestWasmImagesCRI(t *testing.T) {
	host := startRegistry(t)
	c := startCRI(t)
	probe, err := os.ReadFile(filepath.Join(e.fixtures, "probe.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	mod := filepath.Join(t.TempDir(), "probe.wasm")
	os.WriteFile(mod, probe, 0o644)

	artifact := host + "/wasm/probe:artifact"
	wasmImage(t, "-push", "-insecure", "-name", artifact, "-format", "artifact", "-wasm", mod, "-env", "FROM_IMAGE=artifact", "env")
	rootfs := host + "/wasm/probe:rootfs"
	wasmImage(t, "-push", "-insecure", "-name", rootfs, "-wasm", mod, "-dir", "/data", "-symlink", "/bin/probe:/probe.wasm", "echo", "from the rootfs image")

	// An artifact as wkg lays it out: the published config alone.
	foreign := host + "/wasm/probe:foreign"
	other := withCustomSection(probe, "foreign")
	cfg := fmt.Sprintf(`{"created":"2026-12-01T00:00:00Z","architecture":"wasm","os":"wasip1","layerDigests":[%q],"component":null}`, digest.FromBytes(other))
	pushRaw(t, foreign, rawLayer{"application/vnd.wasm.config.v0+json", []byte(cfg)}, rawLayer{"application/wasm", other})
	// runwasi's layout: a standard config, the module in a layer of its own.
	runwasi := host + "/wasm/probe:runwasi"
	third := withCustomSection(probe, "runwasi")
	pushRaw(t, runwasi,
		rawLayer{ocispec.MediaTypeImageConfig, []byte(`{"architecture":"wasm","os":"wasip1","config":{"Entrypoint":["/probe.wasm","echo","runwasi layout"]},"rootfs":{"type":"layers","diff_ids":[]}}`)},
		rawLayer{"application/vnd.bytecodealliance.wasm.component.layer.v0+wasm", third})
	// A component in an artifact whose config does not say so.
	component := host + "/wasm/component:v1"
	comp := []byte("\x00asm\x0d\x00\x01\x00\x07\x10\x01\x00\x00")
	pushRaw(t, component, rawLayer{"application/vnd.wasm.config.v0+json", []byte(fmt.Sprintf(`{"architecture":"wasm","os":"wasip1","layerDigests":[%q]}`, digest.FromBytes(comp)))}, rawLayer{"application/wasm", comp})
	// One whose config says so.
	p2 := host + "/wasm/component:p2"
	pushRaw(t, p2, rawLayer{"application/vnd.wasm.config.v0+json", []byte(fmt.Sprintf(`{"architecture":"wasm","os":"wasip2","layerDigests":[%q],"component":{"exports":["wasi:cli/run@0.2.0"]}}`, digest.FromBytes(probe)))}, rawLayer{"application/wasm", probe})
	// A "module" that is text.
	text := host + "/wasm/text:v1"
	textLayer := []byte("just some text, not a module\n")
	pushRaw(t, text, rawLayer{"application/vnd.wasm.config.v0+json", []byte(fmt.Sprintf(`{"architecture":"wasm","os":"wasip1","layerDigests":[%q]}`, digest.FromBytes(textLayer)))}, rawLayer{"application/wasm", textLayer})
	// A module whose layer is altered in containerd's store after the pull.
	tampered := host + "/wasm/probe:tampered"
	fourth := withCustomSection(probe, "tampered")
	wasmImage(t, "-push", "-insecure", "-name", tampered, "-format", "artifact", "-wasm", writeTemp(t, fourth), "echo", "x")

	for _, ref := range []string{artifact, rootfs, foreign, runwasi, component, p2, text, tampered} {
		c.pull(t, ref)
	}
	blob := filepath.Join(c.dir, "root", "io.containerd.content.v1.content", "blobs", "sha256", digest.FromBytes(fourth).Encoded())
	altered := append([]byte(nil), fourth...)
	altered[len(altered)-1] ^= 0xff
	if err := os.WriteFile(blob, altered, 0o444); err != nil {
		t.Fatal(err)
	}

	podID, podCfg := c.pod(t, "images", "wasm")
	code, out := c.runToEnd(t, podID, podCfg, "artifact", artifact)
	if code != 0 || !slices.Contains(out, "FROM_IMAGE=artifact") {
		t.Errorf("artifact: exit %d, stdout %q", code, out)
	}
	code, out = c.runToEnd(t, podID, podCfg, "artifact-args", artifact, "/probe.wasm", "echo", "given by the pod")
	if code != 0 || !slices.Equal(out, []string{"[given by the pod]"}) {
		t.Errorf("artifact with the pod's command: exit %d, stdout %q", code, out)
	}
	// The module is mounted for the runner, and denied to the guest.
	code, out = c.runToEnd(t, podID, podCfg, "artifact-module", artifact, "/probe.wasm", "cat", "/dev/.containerd-shim-wasm-module")
	stderr := strings.Join(logLines(t, filepath.Join(podCfg.LogDirectory, "artifact-module.log"), "stderr"), "\n")
	if code == 0 || len(out) != 0 || !strings.Contains(strings.ToLower(stderr), "permission denied") {
		t.Errorf("the guest read its module's mount: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	code, out = c.runToEnd(t, podID, podCfg, "foreign", foreign, "app", "echo", "foreign artifact")
	if code != 0 || !slices.Equal(out, []string{"[foreign artifact]"}) {
		t.Errorf("foreign artifact: exit %d, stdout %q", code, out)
	}
	code, out = c.runToEnd(t, podID, podCfg, "runwasi", runwasi)
	if code != 0 || !slices.Equal(out, []string{"[runwasi layout]"}) {
		t.Errorf("runwasi layout: exit %d, stdout %q", code, out)
	}
	code, out = c.runToEnd(t, podID, podCfg, "rootfs", rootfs)
	if code != 0 || !slices.Equal(out, []string{"[from the rootfs image]"}) {
		t.Errorf("rootfs image: exit %d, stdout %q", code, out)
	}
	for _, tt := range []struct{ name, image, want string }{
		{"component", component, "WASI preview 2 components are not supported"},
		{"p2", p2, "WASI preview 2 components are not supported"},
		{"tampered", tampered, "does not match its digest"},
		{"text", text, "invalid module"},
	} {
		err := c.createError(t, podID, podCfg, tt.name, tt.image, "/app.wasm")
		t.Logf("%s: %v", tt.name, err)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: StartContainer error %v, want %q", tt.name, err, tt.want)
		}
	}
	// An artifact imported from a tarball, as on a node without a registry.
	imported := "example.local/artifact:imported"
	tarball := filepath.Join(t.TempDir(), "artifact.tar")
	wasmImage(t, "-o", tarball, "-name", imported, "-format", "artifact", "-wasm", writeTemp(t, withCustomSection(probe, "imported")), "echo", "imported")
	c.importImage(t, tarball, imported)
	code, out = c.runToEnd(t, podID, podCfg, "imported", imported)
	if code != 0 || !slices.Equal(out, []string{"[imported]"}) {
		t.Errorf("imported artifact: exit %d, stdout %q", code, out)
	}
	// The pod's shim serves on.
	code, out = c.runToEnd(t, podID, podCfg, "after", artifact, "/probe.wasm", "echo", "still serving")
	if code != 0 || !slices.Equal(out, []string{"[still serving]"}) {
		t.Errorf("after the refusals: exit %d, stdout %q", code, out)
	}
	// Nothing of the refused modules was kept, and no pin is left.
	for _, m := range [][]byte{comp, fourth} {
		if _, err := os.Stat(filepath.Join(e.cacheRoot, "v1", "modules", digest.FromBytes(m).Encoded())); !os.IsNotExist(err) {
			t.Errorf("module %s stored: %v", digest.FromBytes(m), err)
		}
	}
	if n := dirLen(t, filepath.Join(e.cacheRoot, "v1", "pins")); n != 0 {
		t.Errorf("%d pins left", n)
	}
}

func writeTemp(t *testing.T, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "module.wasm")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestWasmLayerCtr: ctr runs an image of runwasi's layout (a standard
// config, the module in a Wasm layer of its own, an empty rootfs) pulled
// from a registry, with the module from containerd's content store, and
// leaves nothing behind. (ctr itself refuses to run an OCI Wasm artifact,
// before any runtime is asked: its spec options accept image configs
// only.)
func TestWasmLayerCtr(t *testing.T) {
	host := startRegistry(t)
	probe, err := os.ReadFile(filepath.Join(e.fixtures, "probe.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	ref := host + "/wasm/probe:ctr"
	pushRaw(t, ref,
		rawLayer{ocispec.MediaTypeImageConfig, []byte(`{"architecture":"wasm","os":"wasip1","config":{"Entrypoint":["/probe.wasm"],"Cmd":["echo","default"]},"rootfs":{"type":"layers","diff_ids":[]}}`)},
		rawLayer{"application/wasm", withCustomSection(probe, "ctr")})
	if _, stderr, err := e.ctr("images", "pull", "--plain-http", ref); err != nil {
		t.Fatalf("pull %s: %v: %s", ref, err, stderr)
	}
	defer e.ctr("images", "rm", ref)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, "[default]\n"},
		{[]string{"/probe.wasm", "echo", "given"}, "[given]\n"},
	} {
		id := newID(t)
		stdout, stderr, err := e.ctr(ctrRunImageArgs(ref, id, nil, tt.args)...)
		r := resultOf(t, stdout, stderr, err)
		if r.code != 0 || r.stdout != tt.want {
			t.Errorf("ctr run %v: %+v", tt.args, r)
		}
		assertClean(t, id)
	}
}

// TestWasmVariantCRI: one image name, an index of a native linux entry and
// a Wasm artifact entry, pulled with every platform (as
// `ctr -n k8s.io images pull --all-platforms` does on a node): a pod on
// runc runs the native program, a pod on wasm the module.
func TestWasmVariantCRI(t *testing.T) {
	host := startRegistry(t)
	c := startCRI(t)
	probe, err := os.ReadFile(filepath.Join(e.fixtures, "probe.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	ref := host + "/wasm/variants:v1"
	wasmImage(t, "-push", "-insecure", "-name", ref, "-format", "artifact", "-wasm", writeTemp(t, withCustomSection(probe, "variant")),
		"-native", "linux/"+goruntime.GOARCH+"="+filepath.Join(e.fixtures, "native"), "echo", "variant")
	if _, stderr, err := e.ctrAt(c.address, "-n", "k8s.io", "images", "pull", "--plain-http", "--all-platforms", ref); err != nil {
		t.Fatalf("pull --all-platforms: %v: %s", err, stderr)
	}
	for _, tt := range []struct{ handler, want string }{
		{"runc", `native hello, args ["echo" "variant"]`},
		{"wasm", "[variant]"},
	} {
		podID, podCfg := c.pod(t, "variant-"+tt.handler, tt.handler)
		code, out := c.runToEnd(t, podID, podCfg, "variant", ref)
		if code != 0 || !slices.Equal(out, []string{tt.want}) {
			t.Errorf("pod on %s: exit %d, stdout %q, want %q", tt.handler, code, out, tt.want)
		}
	}
	// Pulled as kubelet does, for the node's platform only, the index has
	// no Wasm entry in the store: the wasm handler runs the native entry.
	other := host + "/wasm/variants:host-only"
	wasmImage(t, "-push", "-insecure", "-name", other, "-format", "artifact", "-wasm", writeTemp(t, withCustomSection(probe, "variant-host")),
		"-native", "linux/"+goruntime.GOARCH+"="+filepath.Join(e.fixtures, "native"), "echo", "host")
	c.pull(t, other)
	podID, podCfg := c.pod(t, "variant-host-only", "wasm")
	if code, out := c.runToEnd(t, podID, podCfg, "host-only", other); code != 0 || !slices.Equal(out, []string{`native hello, args ["echo" "host"]`}) {
		t.Errorf("host-only pull on wasm: exit %d, stdout %q", code, out)
	}
	// Its Wasm entry pulled since, the pod's next container runs it: the
	// pod's shim did not take the missing entry for none.
	if _, stderr, err := e.ctrAt(c.address, "-n", "k8s.io", "images", "pull", "--plain-http", "--all-platforms", other); err != nil {
		t.Fatalf("pull --all-platforms: %v: %s", err, stderr)
	}
	if code, out := c.runToEnd(t, podID, podCfg, "all-platforms", other); code != 0 || !slices.Equal(out, []string{"[host]"}) {
		t.Errorf("after pulling every platform, on wasm: exit %d, stdout %q", code, out)
	}
}
