package integration

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/oci/image"
)

// hostSecret is a file on the host, outside every container, that no guest
// may read.
const hostSecretName = "host-secret.txt"

// buildImage builds the test modules and programs and imports one image
// holding all of them.
func (e *env) buildImage() error {
	probe := filepath.Join(e.fixtures, "probe.wasm")
	if err := goBuild(probe, "./integration/testdata/probe", "GOOS=wasip1", "GOARCH=wasm"); err != nil {
		return err
	}
	native := filepath.Join(e.fixtures, "native")
	if err := goBuild(native, "./integration/testdata/native", "CGO_ENABLED=0", "GOOS=linux"); err != nil {
		return err
	}
	server := filepath.Join(e.fixtures, "http-server.wasm")
	if err := goBuild(server, "./examples/http-server", "GOOS=wasip1", "GOARCH=wasm"); err != nil {
		return err
	}
	httpget := filepath.Join(e.fixtures, "httpget")
	if err := goBuild(httpget, "./integration/testdata/httpget", "CGO_ENABLED=0", "GOOS=linux"); err != nil {
		return err
	}
	pause := filepath.Join(e.fixtures, "pause")
	if err := goBuild(pause, "./integration/testdata/pause", "CGO_ENABLED=0", "GOOS=linux"); err != nil {
		return err
	}
	read := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			panic(err)
		}
		return b
	}
	img := &image.Image{
		Name: e.imageName,
		Files: []image.File{
			{Path: "/probe.wasm", Data: read(probe), Mode: 0o644}, // a module runs whatever its mode bits
			{Path: "/usr/bin/probe", Type: tar.TypeSymlink, Linkname: "../../probe.wasm"},
			{Path: "/link.wasm", Type: tar.TypeSymlink, Linkname: "/probe.wasm"},
			{Path: "/bin/native", Data: read(native), Mode: 0o755},
			{Path: "/bin/httpget", Data: read(httpget), Mode: 0o755},
			{Path: "/http-server.wasm", Data: read(server), Mode: 0o644},
			{Path: "/text.txt", Data: []byte("just some text\n"), Mode: 0o755},
			{Path: "/fifo", Type: tar.TypeFifo, Mode: 0o644},
			{Path: "/corrupt.wasm", Data: []byte("\x00asm\x01\x00\x00\x00\x01\xff\xff\xff\xff garbage"), Mode: 0o644},
			{Path: "/empty.wasm", Data: []byte("\x00asm"), Mode: 0o644},
			{Path: "/data/hello.txt", Data: []byte("hello from the image\n"), Mode: 0o644},
			{Path: "/work/rel.txt", Data: []byte("relative to the working directory\n"), Mode: 0o644},
			{Path: "/mem-link", Type: tar.TypeSymlink, Linkname: "/proc/self/mem"},
			{Path: "/fd-link", Type: tar.TypeSymlink, Linkname: "../proc/self/fd"},
			{Path: "/escape-link", Type: tar.TypeSymlink, Linkname: "../../../../../../.." + filepath.Join(e.dir, hostSecretName)},
			{Path: "/escape-dir", Type: tar.TypeSymlink, Linkname: "../../../../../../.." + e.dir},
			{Path: "/tmp/.keep", Data: nil, Mode: 0o644},
		},
	}
	if err := os.WriteFile(filepath.Join(e.dir, hostSecretName), []byte("HOST SECRET\n"), 0o644); err != nil {
		return err
	}
	wats, err := filepath.Glob(filepath.Join(repoRoot(), "integration", "testdata", "*.wat"))
	if err != nil {
		return err
	}
	for _, wat := range wats {
		name := strings.TrimSuffix(filepath.Base(wat), ".wat") + ".wasm"
		out := filepath.Join(e.fixtures, name)
		if b, err := exec.Command("wat2wasm", wat, "-o", out).CombinedOutput(); err != nil {
			return fmt.Errorf("wat2wasm %s (install Debian's wabt): %v\n%s", wat, err, b)
		}
		img.Files = append(img.Files, image.File{Path: "/" + name, Data: read(out), Mode: 0o644})
	}
	var buf bytes.Buffer
	if err := img.WriteTar(&buf); err != nil {
		return err
	}
	var pauseTar bytes.Buffer
	pauseImg := &image.Image{Name: "example.local/pause:test", Files: []image.File{{Path: "/pause", Data: read(pause), Mode: 0o755}}, Entrypoint: []string{"/pause"}}
	if err := pauseImg.WriteTar(&pauseTar); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(e.fixtures, "pause.tar"), pauseTar.Bytes(), 0o644); err != nil {
		return err
	}
	tarPath := filepath.Join(e.fixtures, "image.tar")
	if err := os.WriteFile(tarPath, buf.Bytes(), 0o644); err != nil {
		return err
	}
	if _, stderr, err := e.ctr("images", "import", tarPath); err != nil {
		return fmt.Errorf("import test image: %v: %s", err, stderr)
	}
	return nil
}
