package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/oci/image"
)

// exportBomb is a module of about 190 KB that exports one function of 1,000
// parameters under 20,000 names, beside a _start that returns.
func exportBomb(t *testing.T) []byte {
	t.Helper()
	var b strings.Builder
	b.WriteString("(module\n  (func $f (param")
	for range 1000 {
		b.WriteString(" i32")
	}
	b.WriteString("))\n  (func (export \"_start\"))\n")
	for i := range 20000 {
		fmt.Fprintf(&b, "  (export \"f%05d\" (func $f))\n", i)
	}
	b.WriteString(")\n")
	dir := t.TempDir()
	wat, wasm := filepath.Join(dir, "bomb.wat"), filepath.Join(dir, "bomb.wasm")
	if err := os.WriteFile(wat, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("wat2wasm", wat, "-o", wasm).CombinedOutput(); err != nil {
		t.Fatalf("wat2wasm: %v: %s", err, out)
	}
	data, err := os.ReadFile(wasm)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestExportBombShimMemory: a module with a huge export section does not
// grow the pod's shim: creating it (a compile, then a cache hit) raises
// the shim's peak RSS by less than 8 MiB, and its cache record stays small.
func TestExportBombShimMemory(t *testing.T) {
	c := startCRI(t)
	bomb := exportBomb(t)
	const name = "example.local/export-bomb:latest"
	tar := filepath.Join(t.TempDir(), "bomb.tar")
	f, err := os.Create(tar)
	if err != nil {
		t.Fatal(err)
	}
	if err := (&image.Image{Name: name, Files: []image.File{{Path: "/bomb.wasm", Data: bomb}}, Entrypoint: []string{"/bomb.wasm"}}).WriteTar(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	c.importImage(t, tar, name)

	podID, podCfg := c.pod(t, "bomb", "wasm")
	sleeper := c.container(t, podID, podCfg, "sleeper", "/probe.wasm", "sleep")
	shim := parentPid(c.containerPid(t, sleeper))
	for i, what := range []string{"compiled", "from the cache"} {
		before := procStatus(shim, "VmHWM")
		if before == 0 {
			t.Fatalf("no shim process %d", shim)
		}
		id := c.containerConfig(t, podID, podCfg, &cri.ContainerConfig{
			Metadata: &cri.ContainerMetadata{Name: "bomb-" + strconv.Itoa(i)},
			Image:    &cri.ImageSpec{Image: name},
			LogPath:  fmt.Sprintf("bomb-%d.log", i),
		})
		if st := c.waitExit(t, id); st.ExitCode != 0 {
			t.Fatalf("the export bomb (%s) exited %d", what, st.ExitCode)
		}
		grew := procStatus(shim, "VmHWM") - before
		t.Logf("export bomb (%s): the shim's peak RSS %d KiB, grew %d KiB", what, (before+grew)>>10, grew>>10)
		if grew > 8*mib {
			t.Errorf("creating the export bomb (%s) grew the shim's peak RSS by %d MiB", what, grew/mib)
		}
	}
	records, _ := filepath.Glob(filepath.Join(e.cacheRoot, "*", "index", "*"))
	records2, _ := filepath.Glob(filepath.Join(e.cacheRoot, "index", "*"))
	records = append(records, records2...)
	if len(records) == 0 {
		t.Fatalf("no cache records under %s", e.cacheRoot)
	}
	for _, r := range records {
		if st, err := os.Stat(r); err == nil && st.Size() > 4096 {
			t.Errorf("cache record %s is %d bytes", r, st.Size())
		}
	}
}
