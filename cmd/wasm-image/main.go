// Command wasm-image packs a WebAssembly module, and optionally other files,
// into an OCI image tarball for `ctr images import`:
//
//	wasm-image -o hello.tar -name example.local/hello:latest -wasm hello.wasm \
//	    [-file host/path:/image/path]... [-env KEY=value]... [-workdir /dir] \
//	    [-entrypoint /path[#func]]... [ARGS...]
//
// The module is placed at /<basename of -wasm> and is the image's
// entrypoint unless -entrypoint (repeatable: one argument each) says
// otherwise; ARGS become its default command.
package main

import (
	"errors"
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
	err := run(os.Args[1:])
	switch {
	case errors.Is(err, flag.ErrHelp): // -h: the usage was asked for, and printed
	case err != nil:
		fmt.Fprintf(os.Stderr, "wasm-image: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	var files, env, entrypoint list
	flags := flag.NewFlagSet("wasm-image", flag.ContinueOnError)
	out := flags.String("o", "", "output tarball (required)")
	name := flags.String("name", "", "image reference, e.g. example.local/hello:latest (required)")
	wasm := flags.String("wasm", "", "the module; placed at /<basename> and used as the entrypoint")
	workdir := flags.String("workdir", "", "working directory")
	flags.Var(&files, "file", "extra file as HOST:IMAGEPATH (repeatable)")
	flags.Var(&env, "env", "environment variable KEY=value (repeatable)")
	flags.Var(&entrypoint, "entrypoint", "entrypoint argument, e.g. /app.wasm#run (repeatable; default: the -wasm module)")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if *out == "" || *name == "" {
		flags.Usage()
		return fmt.Errorf("-o and -name are required")
	}
	img := &image.Image{Name: *name, Env: env, WorkingDir: *workdir, Cmd: flags.Args()}
	if *wasm != "" {
		data, err := os.ReadFile(*wasm)
		if err != nil {
			return fmt.Errorf("-wasm: %w", err)
		}
		p := "/" + filepath.Base(*wasm)
		img.Files = append(img.Files, image.File{Path: p, Data: data, Mode: 0o755})
		img.Entrypoint = []string{p}
	}
	if len(entrypoint) > 0 {
		img.Entrypoint = entrypoint
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
		return fmt.Errorf("write %s: %w", *out, err)
	}
	return w.Close()
}
