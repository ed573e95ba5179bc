package main

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"os/exec"
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
		{nil, 1, "-o and -name are required"},
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
