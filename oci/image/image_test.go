package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func readTar(t *testing.T, r io.Reader) map[string]*tar.Header {
	t.Helper()
	out := map[string]*tar.Header{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = h
	}
}

func TestWriteTar(t *testing.T) {
	img := &Image{
		Name:       "localhost:5000/demo/hello",
		Entrypoint: []string{"/hello.wasm"},
		Env:        []string{"A=1"},
		WorkingDir: "/work",
		Files: []File{
			{Path: "/hello.wasm", Data: []byte("\x00asm\x01\x00\x00\x00"), Mode: 0o755},
			{Path: "/etc/greeting.txt", Data: []byte("hi")},
			{Path: "/link", Type: tar.TypeSymlink, Linkname: "/hello.wasm"},
			{Path: "/fifo", Type: tar.TypeFifo},
		},
	}
	var a, b bytes.Buffer
	if err := img.WriteTar(&a); err != nil {
		t.Fatal(err)
	}
	if err := img.WriteTar(&b); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("the same image packs to different bytes")
	}

	blobs := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(a.Bytes()))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		blobs[h.Name] = data
	}
	for name, data := range blobs {
		if len(name) > 13 && name[:13] == "blobs/sha256/" {
			sum := sha256.Sum256(data)
			if hex.EncodeToString(sum[:]) != name[13:] {
				t.Errorf("blob %s does not match its digest", name)
			}
		}
	}
	var index ocispec.Index
	if err := json.Unmarshal(blobs["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index: %v %+v", err, index)
	}
	md := index.Manifests[0]
	if md.Annotations["io.containerd.image.name"] != img.Name || md.Annotations[ocispec.AnnotationRefName] != "latest" {
		t.Errorf("annotations %v", md.Annotations)
	}
	var manifest ocispec.Manifest
	if err := json.Unmarshal(blobs["blobs/sha256/"+md.Digest.Encoded()], &manifest); err != nil {
		t.Fatal(err)
	}
	var config ocispec.Image
	if err := json.Unmarshal(blobs["blobs/sha256/"+manifest.Config.Digest.Encoded()], &config); err != nil {
		t.Fatal(err)
	}
	if config.Config.Entrypoint[0] != "/hello.wasm" || config.Config.Env[0] != "A=1" || config.Config.WorkingDir != "/work" || config.OS != "linux" {
		t.Errorf("config %+v", config)
	}
	zr, err := gzip.NewReader(bytes.NewReader(blobs["blobs/sha256/"+manifest.Layers[0].Digest.Encoded()]))
	if err != nil {
		t.Fatal(err)
	}
	layer, _ := io.ReadAll(zr)
	if sum := sha256.Sum256(layer); "sha256:"+hex.EncodeToString(sum[:]) != config.RootFS.DiffIDs[0].String() {
		t.Error("diff_id is not the digest of the uncompressed layer")
	}
	entries := readTar(t, bytes.NewReader(layer))
	for name, want := range map[string]struct {
		typ  byte
		mode int64
	}{
		"hello.wasm": {tar.TypeReg, 0o755}, "etc/": {tar.TypeDir, 0o755}, "etc/greeting.txt": {tar.TypeReg, 0o644},
		"link": {tar.TypeSymlink, 0o777}, "fifo": {tar.TypeFifo, 0o644},
	} {
		h, ok := entries[name]
		if !ok || h.Typeflag != want.typ || h.Mode != want.mode {
			t.Errorf("layer entry %s: %+v, want type %c mode %o", name, h, want.typ, want.mode)
		}
	}
	if err := (&Image{}).WriteTar(io.Discard); err == nil {
		t.Error("an image without a name was packed")
	}
	for name, want := range map[string]string{"a/b:v1": "v1", "localhost:5000/x": "latest", "x": "latest"} {
		if got := refName(name); got != want {
			t.Errorf("refName(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestRefNameDigest(t *testing.T) {
	if got := refName("example.local/x@sha256:0123abcd"); got != "latest" {
		t.Errorf("refName of a digest reference = %q, want latest", got)
	}
	if got := refName("example.local/x:v2@sha256:0123abcd"); got != "v2" {
		t.Errorf("refName of a tagged digest reference = %q, want v2", got)
	}
}
