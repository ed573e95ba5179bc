// Package image packs files, typically a WebAssembly module, into an OCI
// image layout tarball that `ctr images import` accepts, without Docker or
// a registry: one gzip-compressed layer, an image config, a manifest and an
// index naming the image.
package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	goruntime "runtime"
	"sort"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// File is one entry of the image's layer.
type File struct {
	// Path is the absolute path in the image.
	Path string
	// Data is the content of a regular file.
	Data []byte
	// Mode holds the permission bits (0644 if zero for a file, 0755 for a
	// directory).
	Mode fs.FileMode
	// Type is a tar type flag: tar.TypeReg (the default), tar.TypeDir,
	// tar.TypeSymlink or tar.TypeFifo.
	Type byte
	// Linkname is a symlink's target.
	Linkname string
}

// Image describes an image to pack.
type Image struct {
	// Name is the reference the image is imported as, e.g.
	// "example.local/hello:latest".
	Name       string
	Files      []File
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
	// OS and Architecture of the image's platform; the host's (linux and
	// GOARCH) if empty, which containerd's default platform matcher takes.
	OS, Architecture string
}

type blob struct {
	desc ocispec.Descriptor
	data []byte
}

func newBlob(mediaType string, data []byte) blob {
	return blob{desc: ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}, data: data}
}

// WriteTar writes the image as an OCI image layout tarball.
func (img *Image) WriteTar(w io.Writer) error {
	l, err := NewLayout(img.Name, img)
	if err != nil {
		return err
	}
	return l.WriteTar(w)
}

// Part is one platform's image in an image index: an *Image or an
// *Artifact (whose name is not used).
type Part interface {
	// manifest returns the part's blobs and its manifest's descriptor,
	// with its platform.
	manifest() ([]blob, ocispec.Descriptor, error)
}

// WriteIndexTar writes one image of several platforms (each of imgs) as an
// OCI image layout tarball named name: an image index listing a manifest
// per platform, which containerd imports as one image and runs on the
// platform it matches.
func WriteIndexTar(w io.Writer, name string, imgs []Part) error {
	l, err := NewIndexLayout(name, imgs)
	if err != nil {
		return err
	}
	return l.WriteTar(w)
}

// manifest returns the blobs of the image (config, layer, manifest) and
// the manifest's descriptor, with its platform.
func (img *Image) manifest() ([]blob, ocispec.Descriptor, error) {
	layer, diffID, err := img.layer()
	if err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	osName, arch := img.OS, img.Architecture
	if osName == "" {
		osName = "linux"
	}
	if arch == "" {
		arch = goruntime.GOARCH
	}
	env := img.Env
	if len(env) == 0 {
		env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	}
	cfg := ocispec.Image{
		Platform: ocispec.Platform{OS: osName, Architecture: arch},
		Config: ocispec.ImageConfig{
			Entrypoint: img.Entrypoint,
			Cmd:        img.Cmd,
			Env:        env,
			WorkingDir: img.WorkingDir,
		},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{diffID}},
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return nil, ocispec.Descriptor{}, fmt.Errorf("encode image config: %w", err)
	}
	config := newBlob(ocispec.MediaTypeImageConfig, cfgJSON)
	layerBlob := newBlob(ocispec.MediaTypeImageLayerGzip, layer)
	manifestJSON, err := json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    config.desc,
		Layers:    []ocispec.Descriptor{layerBlob.desc},
	})
	if err != nil {
		return nil, ocispec.Descriptor{}, fmt.Errorf("encode manifest: %w", err)
	}
	manifest := newBlob(ocispec.MediaTypeImageManifest, manifestJSON)
	mdesc := manifest.desc
	mdesc.Platform = &cfg.Platform
	return []blob{config, layerBlob, manifest}, mdesc, nil
}

// writeLayout writes an OCI image layout tarball whose index.json names
// top (a manifest or an image index) name, and holds blobs.
func writeLayout(w io.Writer, name string, top ocispec.Descriptor, blobs []blob) error {
	tw := tar.NewWriter(w)
	add := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := layoutFiles(name, top, blobs, add); err != nil {
		return err
	}
	return tw.Close()
}

// layoutFiles hands add the files of an OCI image layout whose index.json
// names top name, and that holds blobs, in order: oci-layout, index.json,
// the blobs.
func layoutFiles(name string, top ocispec.Descriptor, blobs []blob, add func(name string, data []byte) error) error {
	top.Annotations = map[string]string{
		"io.containerd.image.name": name,
		ocispec.AnnotationRefName:  refName(name),
	}
	indexJSON, err := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{top},
	})
	if err != nil {
		return fmt.Errorf("encode index: %w", err)
	}
	if err := add(ocispec.ImageLayoutFile, []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return fmt.Errorf("write image layout: %w", err)
	}
	if err := add("index.json", indexJSON); err != nil {
		return fmt.Errorf("write index: %w", err)
	}
	for _, b := range blobs {
		if err := add("blobs/sha256/"+b.desc.Digest.Encoded(), b.data); err != nil {
			return fmt.Errorf("write blob: %w", err)
		}
	}
	return nil
}

// Layout is a packed image (an *Image, an *Artifact, or an index of
// several) ready to be written as an OCI image layout.
type Layout struct {
	name  string
	top   ocispec.Descriptor
	blobs []blob
}

// NewLayout packs part as the image name.
func NewLayout(name string, part Part) (*Layout, error) {
	if name == "" {
		return nil, fmt.Errorf("image has no name")
	}
	blobs, top, err := part.manifest()
	if err != nil {
		return nil, err
	}
	if WasmPlatform(top.Platform) {
		// `ctr images import` drops a top descriptor of a platform not the
		// node's ("image might be filtered out"); its config says it.
		top.Platform = nil
	}
	return &Layout{name: name, top: top, blobs: blobs}, nil
}

// NewIndexLayout packs parts as one image name of several platforms: an
// image index listing a manifest per platform.
func NewIndexLayout(name string, parts []Part) (*Layout, error) {
	if name == "" {
		return nil, fmt.Errorf("image has no name")
	}
	if len(parts) == 0 {
		return nil, fmt.Errorf("image %s has no platform", name)
	}
	var all []blob
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex}
	seen := map[string]bool{}
	for _, part := range parts {
		blobs, mdesc, err := part.manifest()
		if err != nil {
			return nil, err
		}
		p := mdesc.Platform.OS + "/" + mdesc.Platform.Architecture
		if seen[p] {
			return nil, fmt.Errorf("image %s: two images for %s", name, p)
		}
		seen[p] = true
		all = append(all, blobs...)
		idx.Manifests = append(idx.Manifests, mdesc)
	}
	indexJSON, err := json.Marshal(idx)
	if err != nil {
		return nil, fmt.Errorf("encode image index: %w", err)
	}
	index := newBlob(ocispec.MediaTypeImageIndex, indexJSON)
	return &Layout{name: name, top: index.desc, blobs: append(all, index)}, nil
}

// Top is the descriptor of the layout's image: a manifest, or an image
// index.
func (l *Layout) Top() ocispec.Descriptor { return l.top }

// WriteTar writes the layout as a tarball, for `ctr images import`.
func (l *Layout) WriteTar(w io.Writer) error { return writeLayout(w, l.name, l.top, l.blobs) }

// WriteDir writes the layout into dir, an OCI image layout directory.
func (l *Layout) WriteDir(dir string) error {
	return layoutFiles(l.name, l.top, l.blobs, func(name string, data []byte) error {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		return os.WriteFile(p, data, 0o644)
	})
}

// refName is the tag of a reference, "latest" if it has none.
func refName(name string) string {
	name, _, _ = strings.Cut(name, "@") // a digest is not a tag
	if i := strings.LastIndexByte(name, ':'); i > strings.LastIndexByte(name, '/') {
		return name[i+1:]
	}
	return "latest"
}

// layer returns the gzip-compressed layer and the digest of its tar.
func (img *Image) layer() ([]byte, digest.Digest, error) {
	entries := map[string]File{}
	for _, f := range img.Files {
		p := path.Clean("/" + f.Path)
		if p == "/" {
			return nil, "", fmt.Errorf("file with empty path")
		}
		entries[p] = f
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if _, ok := entries[d]; !ok {
				entries[d] = File{Path: d, Type: tar.TypeDir}
			}
		}
	}
	names := make([]string, 0, len(entries))
	for p := range entries {
		names = append(names, p)
	}
	sort.Strings(names)

	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	h := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(zw, h))
	for _, p := range names {
		f := entries[p]
		hdr := &tar.Header{Name: strings.TrimPrefix(p, "/"), ModTime: time.Unix(0, 0), Typeflag: f.Type, Mode: int64(f.Mode.Perm())}
		switch f.Type {
		case 0, tar.TypeReg:
			hdr.Typeflag = tar.TypeReg
			hdr.Size = int64(len(f.Data))
			if hdr.Mode == 0 {
				hdr.Mode = 0o644
			}
		case tar.TypeDir:
			hdr.Name += "/"
			if hdr.Mode == 0 {
				hdr.Mode = 0o755
			}
		case tar.TypeSymlink:
			hdr.Linkname = f.Linkname
			hdr.Mode = 0o777
		case tar.TypeFifo:
			if hdr.Mode == 0 {
				hdr.Mode = 0o644
			}
		default:
			return nil, "", fmt.Errorf("%s: unsupported tar type %q", p, f.Type)
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, "", fmt.Errorf("write layer entry %s: %w", p, err)
		}
		if hdr.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.Data); err != nil {
				return nil, "", fmt.Errorf("write layer entry %s: %w", p, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", fmt.Errorf("close layer: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, "", fmt.Errorf("compress layer: %w", err)
	}
	return gz.Bytes(), digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)), nil
}
