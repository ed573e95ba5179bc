package main

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestRun packs a module, an extra file, env, an entrypoint and a command,
// and reads them back from the tarball.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	mod := filepath.Join(dir, "app.wasm")
	extra := filepath.Join(dir, "conf.txt")
	os.WriteFile(mod, []byte("\x00asm\x01\x00\x00\x00"), 0o644)
	os.WriteFile(extra, []byte("conf"), 0o600)
	out := filepath.Join(dir, "img.tar")
	err := run([]string{"-o", out, "-name", "example.local/app:v1", "-wasm", mod,
		"-file", extra + ":/etc/app/conf.txt", "-env", "A=1", "-workdir", "/etc/app",
		"-entrypoint", "/app.wasm#serve", "-entrypoint", "--verbose", "arg one"})
	if err != nil {
		t.Fatal(err)
	}
	blobs := readTar(t, out)
	var index ocispec.Index
	var manifest ocispec.Manifest
	var config ocispec.Image
	json.Unmarshal(blobs["index.json"], &index)
	json.Unmarshal(blobs["blobs/sha256/"+index.Manifests[0].Digest.Encoded()], &manifest)
	json.Unmarshal(blobs["blobs/sha256/"+manifest.Config.Digest.Encoded()], &config)
	c := config.Config
	if !slices.Equal(c.Entrypoint, []string{"/app.wasm#serve", "--verbose"}) || !slices.Equal(c.Cmd, []string{"arg one"}) ||
		!slices.Equal(c.Env, []string{"A=1"}) || c.WorkingDir != "/etc/app" {
		t.Errorf("config %+v", c)
	}
	zr, err := gzip.NewReader(strings.NewReader(string(blobs["blobs/sha256/"+manifest.Layers[0].Digest.Encoded()])))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]int64{}
	lr := tar.NewReader(zr)
	for {
		h, err := lr.Next()
		if err == io.EOF {
			break
		}
		files[h.Name] = h.Mode
	}
	if files["app.wasm"] != 0o755 || files["etc/app/conf.txt"] != 0o600 {
		t.Errorf("layer entries %v", files)
	}
	if err := run([]string{"-o", out}); err == nil {
		t.Error("packed an image without a name")
	}
	if err := run([]string{"-o", out, "-name", "x", "-file", "nocolon"}); err == nil {
		t.Error("accepted -file without IMAGEPATH")
	}
}

// TestMain runs the command itself when the test binary is started as it
// (see TestExitStatus).
func TestMain(m *testing.M) {
	if os.Getenv("WASM_IMAGE_RUN_MAIN") == "1" {
		os.Args = append([]string{"wasm-image"}, os.Args[1:]...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestExitStatus: -h prints the usage and succeeds; a usage error fails
// with the reason.
func TestExitStatus(t *testing.T) {
	for _, tt := range []struct {
		args   []string
		status int
		stderr string
	}{
		{[]string{"-h"}, 0, "-wasm"},
		{[]string{"--help"}, 0, "-name"},
		{nil, 1, "-name, and -o or -push, are required"},
		{[]string{"-bogus"}, 1, "flag provided but not defined"},
		{[]string{"-o", "x.tar", "-name", "n", "-wasm", "/nonexistent.wasm"}, 1, "-wasm: open /nonexistent.wasm"},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			cmd := exec.Command(os.Args[0], tt.args...)
			cmd.Env = append(os.Environ(), "WASM_IMAGE_RUN_MAIN=1")
			cmd.Dir = t.TempDir()
			var stderr strings.Builder
			cmd.Stderr = &stderr
			err := cmd.Run()
			status := 0
			if ee, ok := err.(*exec.ExitError); ok {
				status = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if status != tt.status || !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("exit %d, stderr %q; want %d and %q", status, stderr.String(), tt.status, tt.stderr)
			}
		})
	}
}

// readTar reads a layout tarball's files.
func readTar(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name], _ = io.ReadAll(tr)
	}
}

func blobOf(t *testing.T, files map[string][]byte, d ocispec.Descriptor, v any) []byte {
	t.Helper()
	b, ok := files["blobs/sha256/"+d.Digest.Encoded()]
	if !ok {
		t.Fatalf("blob %s missing", d.Digest)
	}
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

const module = "\x00asm\x01\x00\x00\x00"

// TestFormats: -format artifact packs an OCI Wasm artifact; -native makes
// an image index of the Wasm image (wasip1/wasm) and native ones; -dir and
// -symlink add entries to the rootfs.
func TestFormats(t *testing.T) {
	dir := t.TempDir()
	mod := filepath.Join(dir, "app.wasm")
	native := filepath.Join(dir, "app")
	os.WriteFile(mod, []byte(module), 0o644)
	os.WriteFile(native, []byte("\x7fELF native"), 0o755)

	t.Run("artifact", func(t *testing.T) {
		out := filepath.Join(dir, "artifact.tar")
		if err := run([]string{"-o", out, "-name", "example.local/a:v1", "-format", "artifact", "-wasm", mod, "-env", "A=1", "x"}); err != nil {
			t.Fatal(err)
		}
		files := readTar(t, out)
		var index ocispec.Index
		json.Unmarshal(files["index.json"], &index)
		var m ocispec.Manifest
		blobOf(t, files, index.Manifests[0], &m)
		if m.Config.MediaType != "application/vnd.wasm.config.v0+json" || len(m.Layers) != 1 || m.Layers[0].MediaType != "application/wasm" {
			t.Fatalf("manifest %+v", m)
		}
		if string(blobOf(t, files, m.Layers[0], nil)) != module {
			t.Error("layer is not the module")
		}
		var cfg struct {
			OS     string              `json:"os"`
			Arch   string              `json:"architecture"`
			Config ocispec.ImageConfig `json:"config"`
		}
		blobOf(t, files, m.Config, &cfg)
		if cfg.OS != "wasip1" || cfg.Arch != "wasm" || !slices.Equal(cfg.Config.Entrypoint, []string{"/app.wasm"}) || !slices.Equal(cfg.Config.Cmd, []string{"x"}) || !slices.Equal(cfg.Config.Env, []string{"A=1"}) {
			t.Errorf("config %+v", cfg)
		}
	})

	t.Run("index", func(t *testing.T) {
		out := filepath.Join(dir, "index.tar")
		if err := run([]string{"-o", out, "-name", "example.local/i:v1", "-wasm", mod, "-native", "linux/amd64=" + native, "-native", "linux/arm64=" + native, "-dir", "/data", "-symlink", "/bin/app:/app.wasm"}); err != nil {
			t.Fatal(err)
		}
		files := readTar(t, out)
		var top ocispec.Index
		json.Unmarshal(files["index.json"], &top)
		var idx ocispec.Index
		blobOf(t, files, top.Manifests[0], &idx)
		var platforms []string
		for _, d := range idx.Manifests {
			platforms = append(platforms, d.Platform.OS+"/"+d.Platform.Architecture)
			var m ocispec.Manifest
			blobOf(t, files, d, &m)
			var cfg ocispec.Image
			blobOf(t, files, m.Config, &cfg)
			want := "/app"
			if d.Platform.Architecture == "wasm" {
				want = "/app.wasm"
			}
			if cfg.Config.Entrypoint[0] != want || cfg.OS != d.Platform.OS || cfg.Architecture != d.Platform.Architecture {
				t.Errorf("%s: config %+v", platforms[len(platforms)-1], cfg)
			}
			zr, err := gzip.NewReader(strings.NewReader(string(blobOf(t, files, m.Layers[0], nil))))
			if err != nil {
				t.Fatal(err)
			}
			entries := map[string]byte{}
			lr := tar.NewReader(zr)
			for {
				h, err := lr.Next()
				if err != nil {
					break
				}
				entries[h.Name] = h.Typeflag
			}
			if entries["data/"] != tar.TypeDir || entries["bin/app"] != tar.TypeSymlink || entries[strings.TrimPrefix(want, "/")] != tar.TypeReg {
				t.Errorf("%s: layer entries %v", platforms[len(platforms)-1], entries)
			}
		}
		if !slices.Equal(platforms, []string{"wasip1/wasm", "linux/amd64", "linux/arm64"}) {
			t.Errorf("platforms %v", platforms)
		}
	})

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-format", "tar"}, "want rootfs or artifact"},
		{[]string{"-format", "artifact"}, "needs -wasm"},
		{[]string{"-format", "artifact", "-wasm", mod, "-dir", "/d"}, "holds the module alone"},
		{[]string{"-format", "artifact", "-wasm", mod, "-platform", "linux/amd64"}, "an artifact is wasip1/wasm"},
		{[]string{"-wasm", mod, "-native", "linux"}, "want OS/ARCH=BINARY"},
		{[]string{"-wasm", mod, "-native", "linux=" + native}, "want OS/ARCH"},
		{[]string{"-wasm", mod, "-symlink", "/a"}, "want IMAGEPATH:TARGET"},
		{[]string{"-wasm", mod, "-dir", "rel"}, "absolute"},
		{[]string{"-wasm", mod, "-native", "linux/amd64=" + native, "-native", "linux/amd64=" + native}, "two images for linux/amd64"},
	} {
		args := append([]string{"-o", filepath.Join(dir, "bad.tar"), "-name", "example.local/bad:v1"}, tt.args...)
		if err := run(args); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: error %v, want %q", tt.args, err, tt.want)
		}
	}
}

// TestPush pushes an artifact and an index to a registry served in the
// test, and reads them back with go-containerregistry.
func TestPush(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	dir := t.TempDir()
	mod := filepath.Join(dir, "app.wasm")
	native := filepath.Join(dir, "app")
	os.WriteFile(mod, []byte(module), 0o644)
	os.WriteFile(native, []byte("\x7fELF native"), 0o755)

	ref := host + "/wasm/app:artifact"
	if err := run([]string{"-push", "-insecure", "-name", ref, "-format", "artifact", "-wasm", mod}); err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Get(mustRef(t, ref))
	if err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(desc.Manifest, &m); err != nil || m.Config.MediaType != "application/vnd.wasm.config.v0+json" {
		t.Fatalf("pushed manifest %s: %v", desc.Manifest, err)
	}
	layer, err := remote.Layer(mustRef(t, host+"/wasm/app@"+m.Layers[0].Digest.String()).(name.Digest))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layer.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if string(got) != module {
		t.Errorf("pushed layer %q", got)
	}

	ref = host + "/wasm/app:index"
	if err := run([]string{"-push", "-insecure", "-name", ref, "-wasm", mod, "-native", "linux/amd64=" + native}); err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(mustRef(t, ref))
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil || len(im.Manifests) != 2 || im.Manifests[0].Platform.OS != "wasip1" {
		t.Fatalf("pushed index %+v: %v", im, err)
	}
	for _, d := range im.Manifests {
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		if ls, err := img.Layers(); err != nil || len(ls) != 1 {
			t.Errorf("%s: layers %v, %v", d.Platform, ls, err)
		}
	}
	if err := run([]string{"-push", "-name", "bad ref!", "-wasm", mod}); err == nil {
		t.Error("pushed to a bad reference")
	}
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
