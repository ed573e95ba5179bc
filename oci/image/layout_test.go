package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"path"
	goruntime "runtime"
	"slices"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

type tarEntry struct {
	hdr  *tar.Header
	data []byte
}

// untar reads every entry of a tar stream, in order.
func untar(t *testing.T, b []byte) []tarEntry {
	t.Helper()
	var out []tarEntry
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("read tar: %v", err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("read tar entry %s: %v", h.Name, err)
		}
		out = append(out, tarEntry{h, data})
	}
}

// layout is an OCI image layout tarball, read back and checked.
type layout struct {
	files    map[string][]byte
	index    ocispec.Index
	manifest ocispec.Manifest
	config   ocispec.Image
	layer    []tarEntry // the uncompressed layer's entries
	layerTar []byte
}

// layoutBlobs reads a layout tarball's files, and returns them with a
// function that gives a descriptor's blob, checked against it.
func layoutBlobs(t *testing.T, tarball []byte) (map[string][]byte, func(ocispec.Descriptor) []byte) {
	t.Helper()
	files := map[string][]byte{}
	for _, e := range untar(t, tarball) {
		files[e.hdr.Name] = e.data
	}
	return files, func(d ocispec.Descriptor) []byte {
		t.Helper()
		data, ok := files["blobs/sha256/"+d.Digest.Encoded()]
		if !ok || digest.FromBytes(data) != d.Digest || int64(len(data)) != d.Size {
			t.Fatalf("blob %s missing or not matching its descriptor", d.Digest)
		}
		return data
	}
}

// readLayout checks the structure of an image layout tarball: every blob
// named by its digest, every descriptor matching its blob, and no blob that
// nothing refers to.
func readLayout(t *testing.T, b []byte) *layout {
	t.Helper()
	l := &layout{files: map[string][]byte{}}
	entries := untar(t, b)
	for _, e := range entries {
		if e.hdr.Typeflag != tar.TypeReg {
			t.Errorf("layout entry %s has type %c, want a regular file", e.hdr.Name, e.hdr.Typeflag)
		}
		if _, dup := l.files[e.hdr.Name]; dup {
			t.Errorf("layout entry %s appears twice", e.hdr.Name)
		}
		l.files[e.hdr.Name] = e.data
	}
	if len(entries) == 0 || entries[0].hdr.Name != ocispec.ImageLayoutFile {
		t.Errorf("the first entry is not %s", ocispec.ImageLayoutFile)
	}
	var lay ocispec.ImageLayout
	if err := json.Unmarshal(l.files[ocispec.ImageLayoutFile], &lay); err != nil || lay.Version != ocispec.ImageLayoutVersion {
		t.Errorf("%s = %q (%v), want version %s", ocispec.ImageLayoutFile, l.files[ocispec.ImageLayoutFile], err, ocispec.ImageLayoutVersion)
	}
	blobs := 0
	for name, data := range l.files {
		enc, ok := strings.CutPrefix(name, "blobs/sha256/")
		if !ok {
			if name != ocispec.ImageLayoutFile && name != "index.json" {
				t.Errorf("unexpected layout entry %s", name)
			}
			continue
		}
		blobs++
		sum := sha256.Sum256(data)
		if got := hex.EncodeToString(sum[:]); got != enc {
			t.Errorf("blob %s has sha256 %s", name, got)
		}
	}
	if blobs != 3 {
		t.Errorf("%d blobs, want 3 (manifest, config, layer)", blobs)
	}

	blob := func(what string, d ocispec.Descriptor, mediaType string) []byte {
		t.Helper()
		if d.MediaType != mediaType {
			t.Errorf("%s media type %q, want %q", what, d.MediaType, mediaType)
		}
		if d.Digest.Algorithm() != digest.SHA256 {
			t.Fatalf("%s digest %q is not sha256", what, d.Digest)
		}
		data, ok := l.files["blobs/sha256/"+d.Digest.Encoded()]
		if !ok {
			t.Fatalf("%s blob %s is missing", what, d.Digest)
		}
		if int64(len(data)) != d.Size {
			t.Errorf("%s size %d, blob has %d bytes", what, d.Size, len(data))
		}
		return data
	}
	if err := json.Unmarshal(l.files["index.json"], &l.index); err != nil {
		t.Fatalf("index.json: %v", err)
	}
	if l.index.SchemaVersion != 2 || l.index.MediaType != ocispec.MediaTypeImageIndex {
		t.Errorf("index schema %d, media type %q", l.index.SchemaVersion, l.index.MediaType)
	}
	if len(l.index.Manifests) != 1 {
		t.Fatalf("index has %d manifests, want 1", len(l.index.Manifests))
	}
	if err := json.Unmarshal(blob("manifest", l.index.Manifests[0], ocispec.MediaTypeImageManifest), &l.manifest); err != nil {
		t.Fatalf("manifest: %v", err)
	}
	if l.manifest.SchemaVersion != 2 || l.manifest.MediaType != ocispec.MediaTypeImageManifest {
		t.Errorf("manifest schema %d, media type %q", l.manifest.SchemaVersion, l.manifest.MediaType)
	}
	if err := json.Unmarshal(blob("config", l.manifest.Config, ocispec.MediaTypeImageConfig), &l.config); err != nil {
		t.Fatalf("config: %v", err)
	}
	if len(l.manifest.Layers) != 1 {
		t.Fatalf("manifest has %d layers, want 1", len(l.manifest.Layers))
	}
	zr, err := gzip.NewReader(bytes.NewReader(blob("layer", l.manifest.Layers[0], ocispec.MediaTypeImageLayerGzip)))
	if err != nil {
		t.Fatalf("layer is not gzip: %v", err)
	}
	if l.layerTar, err = io.ReadAll(zr); err != nil {
		t.Fatalf("decompress layer: %v", err)
	}
	if l.config.RootFS.Type != "layers" || len(l.config.RootFS.DiffIDs) != 1 {
		t.Fatalf("config rootfs = %+v, want one layer", l.config.RootFS)
	}
	if want := digest.FromBytes(l.layerTar); l.config.RootFS.DiffIDs[0] != want {
		t.Errorf("diff_ids[0] = %s, want %s (the sha256 of the uncompressed layer)", l.config.RootFS.DiffIDs[0], want)
	}
	if l.config.RootFS.DiffIDs[0] == l.manifest.Layers[0].Digest {
		t.Error("diff_id is the digest of the compressed layer")
	}
	l.layer = untar(t, l.layerTar)
	return l
}

func TestImageLayoutNames(t *testing.T) {
	tests := []struct {
		name, ref string
	}{
		{"example.local/hello:latest", "latest"},
		{"example.local/hello:v1.2", "v1.2"},
		{"example.local/hello", "latest"},
		{"hello", "latest"},
		{"hello:1", "1"},
		{"localhost:5000/x", "latest"},
		{"localhost:5000/x:v2", "v2"},
		{"localhost:5000/a/b/c", "latest"},
		{"registry.example:443/team/app:2024-01-01", "2024-01-01"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := &Image{Name: tt.name, Files: []File{{Path: "/m.wasm", Data: []byte("\x00asm\x01\x00\x00\x00")}}}
			var buf bytes.Buffer
			if err := img.WriteTar(&buf); err != nil {
				t.Fatal(err)
			}
			l := readLayout(t, buf.Bytes())
			a := l.index.Manifests[0].Annotations
			if a["io.containerd.image.name"] != tt.name {
				t.Errorf("io.containerd.image.name = %q, want %q", a["io.containerd.image.name"], tt.name)
			}
			if a[ocispec.AnnotationRefName] != tt.ref {
				t.Errorf("%s = %q, want %q", ocispec.AnnotationRefName, a[ocispec.AnnotationRefName], tt.ref)
			}
			if got := refName(tt.name); got != tt.ref {
				t.Errorf("refName(%q) = %q, want %q", tt.name, got, tt.ref)
			}
		})
	}
}

func TestImageLayoutContent(t *testing.T) {
	wasm := []byte("\x00asm\x01\x00\x00\x00payload")
	img := &Image{
		Name:       "example.local/demo:v1",
		Entrypoint: []string{"/app/demo.wasm", "--flag"},
		Cmd:        []string{"arg"},
		Env:        []string{"A=1", "PATH=/app"},
		WorkingDir: "/work",
		Files: []File{
			{Path: "/app/demo.wasm", Data: wasm, Mode: 0o755},
			{Path: "etc/config/app.conf", Data: []byte("key=value\n")}, // relative: taken from /
			{Path: "/app/lib/../data.txt", Data: []byte("data"), Mode: 0o600},
			{Path: "/bin/demo", Type: tar.TypeSymlink, Linkname: "/app/demo.wasm", Mode: 0o644},
			{Path: "/run/pipe", Type: tar.TypeFifo},
			{Path: "/run/pipe2", Type: tar.TypeFifo, Mode: 0o600},
			{Path: "/private", Type: tar.TypeDir, Mode: 0o700},
			{Path: "/private/empty", Type: tar.TypeReg},
			{Path: "/work", Type: tar.TypeDir},
		},
	}
	var buf bytes.Buffer
	if err := img.WriteTar(&buf); err != nil {
		t.Fatal(err)
	}
	l := readLayout(t, buf.Bytes())

	md := l.index.Manifests[0]
	if md.Platform == nil || md.Platform.OS != "linux" || md.Platform.Architecture != goruntime.GOARCH {
		t.Errorf("manifest platform = %+v, want linux/%s", md.Platform, goruntime.GOARCH)
	}
	c := l.config
	if c.OS != "linux" || c.Architecture != goruntime.GOARCH {
		t.Errorf("config platform %s/%s", c.OS, c.Architecture)
	}
	if !slices.Equal(c.Config.Entrypoint, img.Entrypoint) || !slices.Equal(c.Config.Cmd, img.Cmd) ||
		!slices.Equal(c.Config.Env, img.Env) || c.Config.WorkingDir != "/work" {
		t.Errorf("config = %+v, want entrypoint %q, cmd %q, env %q, workdir /work", c.Config, img.Entrypoint, img.Cmd, img.Env)
	}

	type want struct {
		typ      byte
		mode     int64
		data     string
		linkname string
	}
	wantEntries := map[string]want{
		"app/":                {typ: tar.TypeDir, mode: 0o755},
		"app/data.txt":        {typ: tar.TypeReg, mode: 0o600, data: "data"},
		"app/demo.wasm":       {typ: tar.TypeReg, mode: 0o755, data: string(wasm)},
		"bin/":                {typ: tar.TypeDir, mode: 0o755},
		"bin/demo":            {typ: tar.TypeSymlink, mode: 0o777, linkname: "/app/demo.wasm"},
		"etc/":                {typ: tar.TypeDir, mode: 0o755},
		"etc/config/":         {typ: tar.TypeDir, mode: 0o755},
		"etc/config/app.conf": {typ: tar.TypeReg, mode: 0o644, data: "key=value\n"},
		"private/":            {typ: tar.TypeDir, mode: 0o700},
		"private/empty":       {typ: tar.TypeReg, mode: 0o644},
		"run/":                {typ: tar.TypeDir, mode: 0o755},
		"run/pipe":            {typ: tar.TypeFifo, mode: 0o644},
		"run/pipe2":           {typ: tar.TypeFifo, mode: 0o600},
		"work/":               {typ: tar.TypeDir, mode: 0o755},
	}
	var names []string
	for _, e := range l.layer {
		h := e.hdr
		names = append(names, h.Name)
		w, ok := wantEntries[h.Name]
		if !ok {
			t.Errorf("unexpected layer entry %q", h.Name)
			continue
		}
		if h.Typeflag != w.typ || h.Mode != w.mode || string(e.data) != w.data || h.Linkname != w.linkname {
			t.Errorf("layer entry %s: type %c mode %04o data %q link %q; want %c %04o %q %q",
				h.Name, h.Typeflag, h.Mode, e.data, h.Linkname, w.typ, w.mode, w.data, w.linkname)
		}
		if !h.ModTime.Equal(l.layer[0].hdr.ModTime) || h.ModTime.Unix() != 0 {
			t.Errorf("layer entry %s has mtime %v, want the epoch", h.Name, h.ModTime)
		}
		if h.Uid != 0 || h.Gid != 0 {
			t.Errorf("layer entry %s owned by %d:%d, want root", h.Name, h.Uid, h.Gid)
		}
		if strings.HasPrefix(h.Name, "/") || strings.Contains(h.Name, "..") {
			t.Errorf("layer entry name %q is not a clean relative path", h.Name)
		}
	}
	if len(names) != len(wantEntries) {
		t.Errorf("layer has %d entries %q, want %d", len(names), names, len(wantEntries))
	}
	// Every directory comes before what it holds.
	seen := map[string]bool{}
	for _, n := range names {
		for d := path.Dir(strings.TrimSuffix(n, "/")); d != "."; d = path.Dir(d) {
			if !seen[d+"/"] {
				t.Errorf("layer entry %s comes before its directory %s/", n, d)
			}
		}
		seen[n] = true
	}
}

func TestImageLayoutDefaults(t *testing.T) {
	img := &Image{Name: "x", OS: "wasip1", Architecture: "wasm"}
	var buf bytes.Buffer
	if err := img.WriteTar(&buf); err != nil {
		t.Fatal(err)
	}
	l := readLayout(t, buf.Bytes())
	if l.config.OS != "wasip1" || l.config.Architecture != "wasm" {
		t.Errorf("config platform %s/%s, want wasip1/wasm", l.config.OS, l.config.Architecture)
	}
	// The config says it; index.json does not, or `ctr images import`
	// would filter the image out on any node.
	if p := l.index.Manifests[0].Platform; p != nil {
		t.Errorf("index.json names platform %+v for a single Wasm image", p)
	}
	if len(l.config.Config.Env) != 1 || !strings.HasPrefix(l.config.Config.Env[0], "PATH=/") {
		t.Errorf("default env %q, want a PATH", l.config.Config.Env)
	}
	if len(l.layer) != 0 {
		t.Errorf("an image without files has %d layer entries", len(l.layer))
	}
}

func TestImageLayoutDeterministic(t *testing.T) {
	files := []File{
		{Path: "/b/two", Data: []byte("2")},
		{Path: "/a/one", Data: []byte("1"), Mode: 0o755},
		{Path: "/c", Type: tar.TypeSymlink, Linkname: "a/one"},
		{Path: "/d", Type: tar.TypeFifo},
	}
	write := func(files []File) []byte {
		t.Helper()
		img := &Image{Name: "example.local/det:1", Files: files, Entrypoint: []string{"/a/one"}}
		var buf bytes.Buffer
		if err := img.WriteTar(&buf); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	first := write(files)
	if second := write(files); !bytes.Equal(first, second) {
		t.Error("writing the same image twice gives different bytes")
	}
	reversed := slices.Clone(files)
	slices.Reverse(reversed)
	if got := write(reversed); !bytes.Equal(first, got) {
		t.Error("the order of Files changes the image")
	}
	changed := slices.Clone(files)
	changed[0].Data = []byte("3")
	if got := write(changed); bytes.Equal(first, got) {
		t.Error("different content gives the same image")
	}
}

func TestImageLayoutErrors(t *testing.T) {
	tests := []struct {
		name string
		img  Image
		want string
	}{
		{"no name", Image{Files: []File{{Path: "/a", Data: []byte("a")}}}, "no name"},
		{"empty path", Image{Name: "x", Files: []File{{Path: "", Data: []byte("a")}}}, "empty path"},
		{"root path", Image{Name: "x", Files: []File{{Path: "/", Type: tar.TypeDir}}}, "empty path"},
		{"dot path", Image{Name: "x", Files: []File{{Path: "/./", Type: tar.TypeDir}}}, "empty path"},
		{"device", Image{Name: "x", Files: []File{{Path: "/dev/null", Type: tar.TypeChar}}}, "unsupported tar type"},
		{"hard link", Image{Name: "x", Files: []File{{Path: "/h", Type: tar.TypeLink, Linkname: "a"}}}, "unsupported tar type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := tt.img.WriteTar(&buf)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("WriteTar error = %v, want one mentioning %q", err, tt.want)
			}
			if buf.Len() != 0 {
				t.Errorf("WriteTar wrote %d bytes before failing", buf.Len())
			}
		})
	}
}

// TestImageIndexLayout: an image of two platforms is one image index,
// named, listing a manifest per platform, each with its own config and
// layer; every blob is there under its digest; two images of one
// platform are refused.
func TestImageIndexLayout(t *testing.T) {
	imgs := []Part{
		&Image{Architecture: "amd64", Files: []File{{Path: "/bin/tool", Data: []byte("amd64 tool"), Mode: 0o755}}, Entrypoint: []string{"/bin/tool"}},
		&Image{Architecture: "arm64", Files: []File{{Path: "/bin/tool", Data: []byte("arm64 tool"), Mode: 0o755}}, Entrypoint: []string{"/bin/tool"}},
	}
	var buf bytes.Buffer
	if err := WriteIndexTar(&buf, "example.local/tool:v1", imgs); err != nil {
		t.Fatal(err)
	}
	files, blob := layoutBlobs(t, buf.Bytes())
	var top ocispec.Index
	json.Unmarshal(files["index.json"], &top)
	if len(top.Manifests) != 1 || top.Manifests[0].MediaType != ocispec.MediaTypeImageIndex || top.Manifests[0].Annotations["io.containerd.image.name"] != "example.local/tool:v1" || top.Manifests[0].Annotations[ocispec.AnnotationRefName] != "v1" {
		t.Fatalf("index.json %s", files["index.json"])
	}
	var idx ocispec.Index
	if err := json.Unmarshal(blob(top.Manifests[0]), &idx); err != nil || len(idx.Manifests) != 2 {
		t.Fatalf("image index %+v: %v", idx, err)
	}
	for i, m := range idx.Manifests {
		if m.Platform == nil || m.Platform.OS != "linux" || m.Platform.Architecture != imgs[i].(*Image).Architecture {
			t.Errorf("manifest %d platform %+v", i, m.Platform)
		}
		var man ocispec.Manifest
		json.Unmarshal(blob(m), &man)
		var cfg ocispec.Image
		json.Unmarshal(blob(man.Config), &cfg)
		if cfg.Architecture != imgs[i].(*Image).Architecture || len(man.Layers) != 1 {
			t.Errorf("manifest %d: config %+v, %d layers", i, cfg.Platform, len(man.Layers))
		}
		zr, err := gzip.NewReader(bytes.NewReader(blob(man.Layers[0])))
		if err != nil {
			t.Fatal(err)
		}
		layer, _ := io.ReadAll(zr)
		if !bytes.Contains(layer, []byte(imgs[i].(*Image).Architecture+" tool")) {
			t.Errorf("manifest %d's layer lacks its tool", i)
		}
	}
	if err := WriteIndexTar(io.Discard, "x", []Part{&Image{Architecture: "arm64"}, &Image{Architecture: "arm64"}}); err == nil {
		t.Error("two images of one platform were accepted")
	}
}
