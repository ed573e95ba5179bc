// Command wasm-image packs a WebAssembly module, and optionally other files,
// into an OCI image: a tarball for `ctr images import`, or pushed to a
// registry.
//
//	wasm-image -name REF -wasm hello.wasm (-o hello.tar | -push) \
//	    [-format rootfs|artifact] [-platform OS/ARCH] [-native OS/ARCH=BINARY]... \
//	    [-file HOST:/IMAGE/PATH]... [-dir /IMAGE/PATH]... [-symlink /IMAGE/PATH:TARGET]... \
//	    [-env KEY=value]... [-workdir /dir] [-entrypoint /path[#func]]... [ARGS...]
//
// Formats:
//   - rootfs (the default): an ordinary image whose one layer holds the
//     module at /<basename of -wasm> and the other files; the module is
//     the entrypoint unless -entrypoint (repeatable: one argument each)
//     says otherwise; ARGS become its default command.
//   - artifact: an OCI Wasm artifact (config
//     application/vnd.wasm.config.v0+json, the module as its one
//     application/wasm layer), with the process fields in its config for
//     containerd's CRI. It has no files.
//
// Platforms: the Wasm image's platform is the host's (linux/GOARCH) for a
// single rootfs image, which every containerd runs, and wasip1/wasm for an
// artifact or in an index; -platform sets it. Each -native OS/ARCH=BINARY
// adds an ordinary image of that platform running BINARY (placed at
// /<basename>, with the same files, environment and command), making the
// result an image index: the same name runs natively under runc and as
// Wasm under the wasm handler.
//
// -push pushes to the registry -name names, with the credentials of
// Docker's config; -insecure allows plain HTTP.
package main

import (
	"archive/tar"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/oci/image"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	err := run(os.Args[1:])
	switch {
	case errors.Is(err, flag.ErrHelp): // -h: the usage was asked for, and printed
	case err != nil:
		fmt.Fprintf(os.Stderr, "wasm-image: %v\n", err)
		os.Exit(1)
	}
}

// options are the command line's.
type options struct {
	out, name, wasm, workdir, format, platform string
	push, insecure                             bool
	files, dirs, symlinks, env, entrypoint     list
	natives                                    list
	args                                       []string
}

func parse(args []string) (*options, error) {
	o := &options{}
	flags := flag.NewFlagSet("wasm-image", flag.ContinueOnError)
	flags.StringVar(&o.out, "o", "", "output tarball (for ctr images import)")
	flags.BoolVar(&o.push, "push", false, "push the image to the registry -name names")
	flags.BoolVar(&o.insecure, "insecure", false, "with -push: allow a registry over plain HTTP")
	flags.StringVar(&o.name, "name", "", "image reference, e.g. example.local/hello:latest (required)")
	flags.StringVar(&o.wasm, "wasm", "", "the module; placed at /<basename> and used as the entrypoint")
	flags.StringVar(&o.format, "format", "rootfs", "rootfs (an image with the module in its root file system) or artifact (an OCI Wasm artifact)")
	flags.StringVar(&o.platform, "platform", "", "the Wasm image's platform (default: the host's for a single rootfs image, else wasip1/wasm)")
	flags.StringVar(&o.workdir, "workdir", "", "working directory")
	flags.Var(&o.files, "file", "extra file as HOST:IMAGEPATH (repeatable)")
	flags.Var(&o.dirs, "dir", "directory IMAGEPATH (repeatable)")
	flags.Var(&o.symlinks, "symlink", "symlink as IMAGEPATH:TARGET (repeatable)")
	flags.Var(&o.env, "env", "environment variable KEY=value (repeatable)")
	flags.Var(&o.entrypoint, "entrypoint", "entrypoint argument, e.g. /app.wasm#run (repeatable; default: the -wasm module)")
	flags.Var(&o.natives, "native", "a native variant as OS/ARCH=BINARY, making an image index (repeatable)")
	if err := flags.Parse(args); err != nil {
		return nil, err
	}
	o.args = flags.Args()
	switch {
	case o.out == "" && !o.push || o.name == "":
		flags.Usage()
		return nil, fmt.Errorf("-name, and -o or -push, are required")
	case o.format != "rootfs" && o.format != "artifact":
		return nil, fmt.Errorf("-format %q: want rootfs or artifact", o.format)
	case o.format == "artifact" && o.wasm == "":
		return nil, fmt.Errorf("-format artifact needs -wasm")
	case o.format == "artifact" && len(o.files)+len(o.dirs)+len(o.symlinks) > 0:
		return nil, fmt.Errorf("an artifact holds the module alone: -file, -dir and -symlink need -format rootfs")
	}
	return o, nil
}

func run(args []string) error {
	o, err := parse(args)
	if err != nil {
		return err
	}
	l, err := o.layout()
	if err != nil {
		return err
	}
	if o.out != "" {
		w, err := os.Create(o.out)
		if err != nil {
			return err
		}
		if err := l.WriteTar(w); err != nil {
			w.Close()
			return fmt.Errorf("write %s: %w", o.out, err)
		}
		if err := w.Close(); err != nil {
			return err
		}
	}
	if o.push {
		if err := push(l, o.name, o.insecure); err != nil {
			return fmt.Errorf("push %s: %w", o.name, err)
		}
	}
	return nil
}

// layout packs the image the options describe.
func (o *options) layout() (*image.Layout, error) {
	files, err := o.rootFiles()
	if err != nil {
		return nil, err
	}
	var module []byte
	var entry []string
	modulePath := "/" + filepath.Base(o.wasm)
	if o.wasm != "" {
		if module, err = os.ReadFile(o.wasm); err != nil {
			return nil, fmt.Errorf("-wasm: %w", err)
		}
		entry = []string{modulePath}
	}
	if len(o.entrypoint) > 0 {
		entry = o.entrypoint
	}
	var wasmPart image.Part
	platform := o.platform
	if o.format == "artifact" {
		if platform == "" {
			platform = "wasip1/wasm"
		}
		os, arch, err := splitPlatform(platform)
		if err != nil {
			return nil, err
		}
		if os != "wasip1" && os != "wasi" || arch != "wasm" {
			return nil, fmt.Errorf("-platform %s: an artifact is wasip1/wasm or wasi/wasm", platform)
		}
		wasmPart = &image.Artifact{Module: module, Entrypoint: entry, Cmd: o.args, Env: o.env, WorkingDir: o.workdir, OS: os}
	} else {
		img := &image.Image{Files: files, Entrypoint: entry, Cmd: o.args, Env: o.env, WorkingDir: o.workdir}
		if module != nil {
			img.Files = append(img.Files, image.File{Path: modulePath, Data: module, Mode: 0o755})
		}
		if platform == "" && len(o.natives) > 0 {
			platform = "wasip1/wasm"
		}
		if platform != "" {
			if img.OS, img.Architecture, err = splitPlatform(platform); err != nil {
				return nil, err
			}
		}
		wasmPart = img
	}
	if len(o.natives) == 0 {
		return image.NewLayout(o.name, wasmPart)
	}
	parts := []image.Part{wasmPart}
	for _, n := range o.natives {
		p, bin, ok := strings.Cut(n, "=")
		if !ok {
			return nil, fmt.Errorf("-native %q: want OS/ARCH=BINARY", n)
		}
		osName, arch, err := splitPlatform(p)
		if err != nil {
			return nil, err
		}
		data, err := os.ReadFile(bin)
		if err != nil {
			return nil, fmt.Errorf("-native: %w", err)
		}
		at := "/" + filepath.Base(bin)
		parts = append(parts, &image.Image{
			Files:      append(append([]image.File(nil), files...), image.File{Path: at, Data: data, Mode: 0o755}),
			Entrypoint: []string{at}, Cmd: o.args, Env: o.env, WorkingDir: o.workdir,
			OS: osName, Architecture: arch,
		})
	}
	return image.NewIndexLayout(o.name, parts)
}

func splitPlatform(p string) (string, string, error) {
	osName, arch, ok := strings.Cut(p, "/")
	if !ok || osName == "" || arch == "" || strings.Contains(arch, "/") {
		return "", "", fmt.Errorf("platform %q: want OS/ARCH", p)
	}
	return osName, arch, nil
}

// rootFiles are the -file, -dir and -symlink entries.
func (o *options) rootFiles() ([]image.File, error) {
	var files []image.File
	for _, f := range o.files {
		src, dst, ok := strings.Cut(f, ":")
		if !ok {
			return nil, fmt.Errorf("-file %q: want HOST:IMAGEPATH", f)
		}
		data, err := os.ReadFile(src)
		if err != nil {
			return nil, err
		}
		fi, err := os.Stat(src)
		if err != nil {
			return nil, err
		}
		files = append(files, image.File{Path: dst, Data: data, Mode: fi.Mode().Perm()})
	}
	for _, d := range o.dirs {
		if !strings.HasPrefix(d, "/") {
			return nil, fmt.Errorf("-dir %q: want an absolute image path", d)
		}
		files = append(files, image.File{Path: d, Type: tar.TypeDir})
	}
	for _, s := range o.symlinks {
		p, target, ok := strings.Cut(s, ":")
		if !ok || !strings.HasPrefix(p, "/") || target == "" {
			return nil, fmt.Errorf("-symlink %q: want IMAGEPATH:TARGET", s)
		}
		files = append(files, image.File{Path: p, Type: tar.TypeSymlink, Linkname: target})
	}
	return files, nil
}

// push pushes the layout's image to ref's registry.
func push(l *image.Layout, ref string, insecure bool) error {
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	r, err := name.ParseReference(ref, opts...)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "wasm-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := l.WriteDir(dir); err != nil {
		return err
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		return err
	}
	ii, err := p.ImageIndex()
	if err != nil {
		return err
	}
	h, err := v1.NewHash(l.Top().Digest.String())
	if err != nil {
		return err
	}
	auth := remote.WithAuthFromKeychain(authn.DefaultKeychain)
	if l.Top().MediaType == ocispec.MediaTypeImageIndex {
		idx, err := ii.ImageIndex(h)
		if err != nil {
			return err
		}
		return remote.WriteIndex(r, idx, auth)
	}
	img, err := ii.Image(h)
	if err != nil {
		return err
	}
	return remote.Write(r, img, auth)
}
