// Command wasm-image packs a WebAssembly module, and optionally other files,
// into an OCI image tarball for `ctr images import`:
//
//	wasm-image -o hello.tar -name example.local/hello:latest -wasm hello.wasm \
//	    [-file host/path:/image/path]... [-env KEY=value]... [-workdir /dir] [ARGS...]
//
// The module is placed at /<basename of -wasm> and is the image's
// entrypoint; ARGS become its default command.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/oci/image"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "wasm-image: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	var files, env list
	out := flag.String("o", "", "output tarball (required)")
	name := flag.String("name", "", "image reference, e.g. example.local/hello:latest (required)")
	wasm := flag.String("wasm", "", "the module; placed at /<basename> and used as the entrypoint")
	workdir := flag.String("workdir", "", "working directory")
	flag.Var(&files, "file", "extra file as HOST:IMAGEPATH (repeatable)")
	flag.Var(&env, "env", "environment variable KEY=value (repeatable)")
	flag.Parse()
	if *out == "" || *name == "" {
		flag.Usage()
		return fmt.Errorf("-o and -name are required")
	}
	img := &image.Image{Name: *name, Env: env, WorkingDir: *workdir, Cmd: flag.Args()}
	if *wasm != "" {
		data, err := os.ReadFile(*wasm)
		if err != nil {
			return err
		}
		p := "/" + filepath.Base(*wasm)
		img.Files = append(img.Files, image.File{Path: p, Data: data, Mode: 0o755})
		img.Entrypoint = []string{p}
	}
	for _, f := range files {
		src, dst, ok := strings.Cut(f, ":")
		if !ok {
			return fmt.Errorf("-file %q: want HOST:IMAGEPATH", f)
		}
		data, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		fi, err := os.Stat(src)
		if err != nil {
			return err
		}
		img.Files = append(img.Files, image.File{Path: dst, Data: data, Mode: fi.Mode().Perm()})
	}
	w, err := os.Create(*out)
	if err != nil {
		return err
	}
	if err := img.WriteTar(w); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}
