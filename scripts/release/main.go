// Command release writes a release of the project into a directory (make
// release: dist/): the static binaries for linux/amd64 and linux/arm64, the
// installer's image (both platforms, one OCI image index) as an image
// layout tarball, and SHA256SUMS. The version is what the Go toolchain
// stamps into the binaries from the checkout (a tag, or a pseudo-version
// of the commit), which their --version prints.
//
//	go run ./scripts/release [-out dist] [-image ghcr.io/containerd-shim-wasm/installer]
package main

import (
	"bytes"
	"crypto/sha256"
	"debug/buildinfo"
	"debug/elf"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/oci/image"
)

// commands are the binaries of a release.
var commands = []string{"containerd-shim-wasm-v1", "containerd-shim-wasm-install", "wasm-image"}

// arches are the release's platforms (linux), with their ELF machines.
var arches = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

func main() {
	out := flag.String("out", "dist", "the release's directory")
	repo := flag.String("image", "ghcr.io/containerd-shim-wasm/installer", "the installer image's repository")
	flag.Parse()
	if err := release(*out, *repo); err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		os.Exit(1)
	}
}

func release(out, repo string) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	var names []string
	for _, arch := range sortedArches() {
		for _, cmd := range commands {
			name := cmd + "-linux-" + arch
			if err := build(filepath.Join(out, name), "./cmd/"+cmd, arch); err != nil {
				return err
			}
			if err := checkStatic(filepath.Join(out, name), arches[arch]); err != nil {
				return err
			}
			names = append(names, name)
		}
	}
	version, err := versionOf(filepath.Join(out, "containerd-shim-wasm-v1-linux-amd64"))
	if err != nil {
		return err
	}
	var imgs []image.Part
	for _, arch := range sortedArches() {
		read := func(cmd string) []byte {
			data, _ := os.ReadFile(filepath.Join(out, cmd+"-linux-"+arch))
			return data
		}
		imgs = append(imgs, &image.Image{
			Architecture: arch,
			Files: []image.File{
				{Path: "/containerd-shim-wasm-v1", Data: read("containerd-shim-wasm-v1"), Mode: 0o755},
				{Path: "/containerd-shim-wasm-install", Data: read("containerd-shim-wasm-install"), Mode: 0o755},
			},
			Entrypoint: []string{"/containerd-shim-wasm-install"},
		})
	}
	var tarball bytes.Buffer
	ref := repo + ":" + tag(version)
	if err := image.WriteIndexTar(&tarball, ref, imgs); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "installer-image.tar"), tarball.Bytes(), 0o644); err != nil {
		return err
	}
	names = append(names, "installer-image.tar")
	sums, err := checksums(out, names)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "SHA256SUMS"), []byte(sums), 0o644); err != nil {
		return err
	}
	fmt.Printf("release %s in %s: %d files, image %s\n", version, out, len(names), ref)
	// deploy/kubernetes names the image by the repository's :latest; a
	// release is tagged with its version, which the overlay names.
	fmt.Printf("push it, then apply deploy/kubernetes with a kustomize overlay naming it (README: Try it on a cluster):\n"+
		"  images:\n  - name: %s\n    newName: <your registry>/installer\n    newTag: %s\n", shippedImage, tag(version))
	return nil
}

// shippedImage is the installer's image as deploy/kubernetes's manifests
// name it (with the tag latest).
const shippedImage = "ghcr.io/containerd-shim-wasm/installer"

func sortedArches() []string {
	var out []string
	for a := range arches {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

// build builds the static binary pkg for linux/arch into out.
func build(out, pkg, arch string) error {
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=auto", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+arch, "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build %s for %s: %v: %s", pkg, arch, err, b)
	}
	return nil
}

// checkStatic fails unless the ELF file p is for machine and static: no
// program interpreter, no shared library needed.
func checkStatic(p string, machine elf.Machine) error {
	f, err := elf.Open(p)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	defer f.Close()
	if f.Machine != machine {
		return fmt.Errorf("%s is for %s, not %s", p, f.Machine, machine)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked (it has a program interpreter)", p)
		}
	}
	if libs, err := f.ImportedLibraries(); err == nil && len(libs) > 0 {
		return fmt.Errorf("%s needs shared libraries %v", p, libs)
	}
	return nil
}

// versionOf is the module version stamped into the binary p.
func versionOf(p string) (string, error) {
	bi, err := buildinfo.ReadFile(p)
	if err != nil {
		return "", fmt.Errorf("%s: %w", p, err)
	}
	return bi.Main.Version, nil
}

// tag makes a version an image tag ("+" is not allowed in one).
func tag(version string) string {
	t := strings.NewReplacer("+", "-", "(", "", ")", "").Replace(version)
	if t == "" {
		return "latest"
	}
	return t
}

// checksums is a SHA256SUMS file (as sha256sum -c reads it) of names in dir.
func checksums(dir string, names []string) (string, error) {
	var b strings.Builder
	for _, n := range names {
		f, err := os.Open(filepath.Join(dir, n))
		if err != nil {
			return "", err
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "%s  %s\n", hex.EncodeToString(h.Sum(nil)), n)
	}
	return b.String(), nil
}
