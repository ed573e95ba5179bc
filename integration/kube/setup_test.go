package kube

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/oci/image"
)

// The images the lane imports into the node's containerd (k8s.io): no
// registry is reachable.
const (
	pauseImage   = "example.local/pause:lane"
	busyboxImage = "busybox:1.36" // the manifests' native sidecar: Debian's busybox-static
	testImage    = "example.local/lane:test"
	// installerRepo is the installer image's repository in the lane: the
	// release is built with it, the overlay's images entry names it.
	installerRepo = "example.local/installer"
	// shippedInstaller is the image deploy/kubernetes/installer.yaml names.
	shippedInstaller = "ghcr.io/containerd-shim-wasm/installer"
)

// busyboxApplets are the commands the images' busybox answers to.
var busyboxApplets = []string{"sh", "wget", "sleep", "cat", "echo", "id", "ls", "stat", "test", "true", "false", "grep", "head", "env", "touch", "mkdir", "printf", "hostname", "ps", "yes", "dd", "seq", "rm"}

// fixtures are the programs the lane built.
type fixtures struct {
	dir       string
	probe     []byte // integration/testdata/probe, GOOS=wasip1
	server    []byte // examples/http-server
	fresh     []byte // the probe with a custom section of this run's: in no cache
	busybox   []byte
	wasmImage string // the project's wasm-image
}

func (l *lane) buildFixtures() (*fixtures, error) {
	f := &fixtures{dir: filepath.Join(l.dir, "fixtures")}
	if err := os.MkdirAll(f.dir, 0o755); err != nil {
		return nil, err
	}
	builds := []struct {
		out, pkg string
		env      []string
	}{
		{"probe.wasm", "./integration/testdata/probe", []string{"GOOS=wasip1", "GOARCH=wasm"}},
		{"http-server.wasm", "./examples/http-server", []string{"GOOS=wasip1", "GOARCH=wasm"}},
		{"hello.wasm", "./examples/hello", []string{"GOOS=wasip1", "GOARCH=wasm"}},
		{"pause", "./integration/testdata/pause", []string{"CGO_ENABLED=0"}},
		{"wasm-image", "./cmd/wasm-image", []string{"CGO_ENABLED=0"}},
	}
	for _, b := range builds {
		if err := goBuild(filepath.Join(f.dir, b.out), b.pkg, b.env...); err != nil {
			return nil, err
		}
	}
	var err error
	if f.probe, err = os.ReadFile(filepath.Join(f.dir, "probe.wasm")); err != nil {
		return nil, err
	}
	if f.server, err = os.ReadFile(filepath.Join(f.dir, "http-server.wasm")); err != nil {
		return nil, err
	}
	f.fresh = withCustomSection(f.probe, "fresh "+time.Now().String())
	if f.busybox, err = os.ReadFile("/bin/busybox"); err != nil {
		return nil, fmt.Errorf("Debian's busybox-static (make packages installs it): %w", err)
	}
	f.wasmImage = filepath.Join(f.dir, "wasm-image")
	return f, nil
}

// busyboxFiles are /bin/busybox and its applets' links.
func (f *fixtures) busyboxFiles() []image.File {
	files := []image.File{{Path: "/bin/busybox", Data: f.busybox, Mode: 0o755}, {Path: "/tmp", Type: tar.TypeDir, Mode: 0o777}}
	for _, a := range busyboxApplets {
		files = append(files, image.File{Path: "/bin/" + a, Type: tar.TypeSymlink, Linkname: "busybox"})
	}
	return files
}

// importImage writes img as a tarball and imports it into k8s.io.
func (l *lane) importImage(img *image.Image) error {
	var buf bytes.Buffer
	if err := img.WriteTar(&buf); err != nil {
		return err
	}
	p := filepath.Join(l.dir, "fixtures", strings.NewReplacer("/", "_", ":", "_").Replace(img.Name)+".tar")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		return err
	}
	_, err := l.ctr("images", "import", p)
	return err
}

// images imports the pause image, busybox, the lane's test image (the
// probe module, the HTTP server and busybox in one image: Wasm and native
// containers, and native execs in Wasm containers) and the examples'
// images, built with wasm-image as deploy/kubernetes's comments say.
func (l *lane) images(f *fixtures) error {
	pause, err := os.ReadFile(filepath.Join(f.dir, "pause"))
	if err != nil {
		return err
	}
	imgs := []*image.Image{
		{Name: pauseImage, Files: []image.File{{Path: "/pause", Data: pause, Mode: 0o755}}, Entrypoint: []string{"/pause"}},
		{Name: "docker.io/library/" + busyboxImage, Files: f.busyboxFiles(), Cmd: []string{"sh"}},
		{Name: testImage, Files: append(f.busyboxFiles(),
			image.File{Path: "/probe.wasm", Data: f.probe, Mode: 0o644},
			image.File{Path: "/server.wasm", Data: f.server, Mode: 0o644},
			// Run by no container: TestExec's exec compiles it.
			image.File{Path: "/fresh.wasm", Data: f.fresh, Mode: 0o644},
			image.File{Path: "/data", Type: tar.TypeDir, Mode: 0o755},
		), Entrypoint: []string{"/probe.wasm"}},
	}
	for _, img := range imgs {
		if err := l.importImage(img); err != nil {
			return err
		}
	}
	for _, args := range [][]string{
		{"-name", "example.local/http-server:latest", "-wasm", filepath.Join(f.dir, "http-server.wasm")},
		{"-name", "example.local/hello:latest", "-wasm", filepath.Join(f.dir, "hello.wasm"), "-file", filepath.Join(l.repo, "examples/hello/greeting.txt") + ":/etc/greeting.txt"},
	} {
		tar := filepath.Join(f.dir, "example.tar")
		if _, err := run(f.wasmImage, append([]string{"-o", tar}, args...)...); err != nil {
			return err
		}
		if _, err := l.ctr("images", "import", tar); err != nil {
			return err
		}
	}
	return nil
}

var releaseLine = regexp.MustCompile(`image (\S+)\n`)

// installerImage builds the release (make release's program) with the
// lane's image repository, imports its installer image and returns its
// tag.
func (l *lane) installerImage() (string, error) {
	out := filepath.Join(l.dir, "release")
	cmd := exec.Command("go", "run", "./scripts/release", "-out", out, "-image", installerRepo)
	cmd.Dir = l.repo
	b, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("release: %v: %s", err, b)
	}
	m := releaseLine.FindSubmatch(b)
	if m == nil {
		return "", fmt.Errorf("release printed no image: %s", b)
	}
	ref := string(m[1])
	if _, err := l.ctr("images", "import", filepath.Join(out, "installer-image.tar")); err != nil {
		return "", err
	}
	return strings.TrimPrefix(ref, installerRepo+":"), nil
}

// overlay writes the lane's kustomize overlay of deploy/kubernetes (the
// installer and the RuntimeClass, as shipped): the release's image, the
// node root's hostPath, and the API server's address in the installer's
// environment (the lane has no kube-proxy to serve the kubernetes
// Service's address). Returns its directory.
func (l *lane) overlay(tag string) (string, error) {
	dir := filepath.Join(l.dir, "overlay")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	base, err := filepath.Rel(dir, filepath.Join(l.repo, "deploy", "kubernetes"))
	if err != nil {
		return "", err
	}
	k := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - %s
images:
  - name: %s
    newName: %s
    newTag: %s
patches:
  - target: {kind: DaemonSet, name: installer}
    patch: |-
      - op: replace
        path: /spec/template/spec/volumes/0/hostPath/path
        value: %s
      - op: add
        path: /spec/template/spec/containers/0/env/-
        value: {name: KUBERNETES_SERVICE_HOST, value: "%s"}
      - op: add
        path: /spec/template/spec/containers/0/env/-
        value: {name: KUBERNETES_SERVICE_PORT, value: "%d"}
`, base, shippedInstaller, installerRepo, tag, l.node, gateway, l.apiPort)
	return dir, os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644)
}

// install applies the overlay and waits until the installer labelled the
// node (it restarted containerd, through the node's systemctl, and saw
// the handler served).
func (l *lane) install(f *fixtures) error {
	tag, err := l.installerImage()
	if err != nil {
		return err
	}
	dir, err := l.overlay(tag)
	if err != nil {
		return err
	}
	if _, err := l.kubectl(context.Background(), nil, "apply", "-k", dir); err != nil {
		return err
	}
	return waitFor(5*time.Minute, nil, "the installer labels the node", func() error {
		out, err := l.kubectl(context.Background(), nil, "get", "node", nodeName, "-o", `jsonpath={.metadata.labels.containerd-shim-wasm\.io/handler}`)
		if err == nil && out != "wasm" {
			pods, _ := l.kubectl(context.Background(), nil, "get", "pods", "-n", "containerd-shim-wasm", "-o", "wide")
			err = fmt.Errorf("label %q; installer pods:\n%s", out, pods)
		}
		return err
	})
}
