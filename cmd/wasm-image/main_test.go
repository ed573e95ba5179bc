package main

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

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
	blobs := map[string][]byte{}
	f, _ := os.Open(out)
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		blobs[h.Name], _ = io.ReadAll(tr)
	}
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
