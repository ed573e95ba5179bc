package integration

import (
	"crypto/sha256"
	"debug/buildinfo"
	"debug/elf"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestRelease: make release's program writes static binaries for amd64
// and arm64 (checked here again: the ELF machine, no interpreter, no
// shared library), SHA256SUMS that match, and the installer's image, which
// imports into containerd as one image of both platforms and runs here:
// its shim prints the version stamped into it.
func TestRelease(t *testing.T) {
	out := t.TempDir()
	cmd := exec.Command("go", "run", "./scripts/release", "-out", out, "-image", "example.local/installer")
	cmd.Dir = repoRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("release: %v: %s", err, b)
	}
	sums, err := os.ReadFile(filepath.Join(out, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(sums)), "\n")
	if len(lines) != 7 {
		t.Errorf("SHA256SUMS lists %d files, want 6 binaries and the image", len(lines))
	}
	for _, l := range lines {
		sum, name, _ := strings.Cut(l, "  ")
		data, err := os.ReadFile(filepath.Join(out, name))
		if h := sha256.Sum256(data); err != nil || hex.EncodeToString(h[:]) != sum {
			t.Errorf("%s does not match SHA256SUMS (%v)", name, err)
		}
	}
	machines := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
	var version string
	for arch, machine := range machines {
		for _, cmd := range []string{"containerd-shim-wasm-v1", "containerd-shim-wasm-install", "wasm-image"} {
			p := filepath.Join(out, cmd+"-linux-"+arch)
			f, err := elf.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			libs, _ := f.ImportedLibraries()
			interp := false
			for _, prog := range f.Progs {
				interp = interp || prog.Type == elf.PT_INTERP
			}
			if f.Machine != machine || interp || len(libs) > 0 {
				t.Errorf("%s: machine %s, interpreter %v, libraries %v: want a static %s binary", p, f.Machine, interp, libs, machine)
			}
			f.Close()
		}
	}
	bi, err := buildinfo.ReadFile(filepath.Join(out, "containerd-shim-wasm-v1-linux-amd64"))
	if err != nil {
		t.Fatal(err)
	}
	version = bi.Main.Version
	if version == "" || version == "(devel)" {
		t.Errorf("no version stamped: %q", version)
	}
	tag := strings.ReplaceAll(version, "+", "-")
	if _, stderr, err := e.ctr("images", "import", filepath.Join(out, "installer-image.tar")); err != nil {
		t.Fatalf("import the installer image: %v: %s", err, stderr)
	}
	img := "example.local/installer:" + tag
	defer e.ctr("images", "rm", img)
	if r := runImage(t, img, nil, "/containerd-shim-wasm-v1", "--version"); r.code != 0 || !strings.Contains(r.stdout, version) {
		t.Errorf("the image's shim --version: %+v, want %s", r, version)
	}
	if r := runImage(t, img, nil, "/containerd-shim-wasm-install"); r.code != 2 || !strings.Contains(r.stdout+r.stderr, "usage") {
		t.Errorf("the image's entrypoint, the installer, without arguments: %+v", r)
	}
}
