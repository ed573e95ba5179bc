package shim

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/containerd/containerd/api/types"
	"github.com/containerd/errdefs"
)

// TestCheckStatic: a dynamically linked binary is refused with the fix
// named; a static one is not.
func TestCheckStatic(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	os.WriteFile(src, []byte("package main\nfunc main() {}\n"), 0o644)
	static := filepath.Join(dir, "static")
	cmd := exec.Command("go", "build", "-o", static, src)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build a static binary: %v: %s", err, out)
	}
	if err := checkStatic(static); err != nil {
		t.Errorf("a static binary was refused: %v", err)
	}
	dynamic, err := exec.LookPath("true")
	if err != nil {
		t.Fatal(err)
	}
	err = checkStatic(dynamic)
	if err == nil || !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("%s (dynamically linked) was accepted: %v", dynamic, err)
	}
	for _, want := range []string{dynamic, "dynamically linked", "ld-linux", "CGO_ENABLED=0", "make build"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	text := filepath.Join(dir, "text")
	os.WriteFile(text, []byte("#!/bin/sh\n"), 0o755)
	if err := checkStatic(text); err == nil || !strings.Contains(err.Error(), text) {
		t.Errorf("a non-ELF file: %v", err)
	}
}

// TestBuildVersion: the shim reports its own build beside the versions of
// the containerd packages and of wazero that it links.
func TestBuildVersion(t *testing.T) {
	deps := []*debug.Module{
		{Path: containerdModule, Version: "v2.4.2"},
		{Path: wazeroModule, Version: "v1.11.0", Replace: &debug.Module{Path: wazeroModule, Version: "v1.12.0"}},
		{Path: "golang.org/x/sys", Version: "v0.48.0"},
	}
	for _, tt := range []struct {
		name string
		bi   debug.BuildInfo
		want buildVersion
	}{
		{"release", debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.0.0"}, Deps: deps},
			buildVersion{version: "v1.0.0", goVersion: "go1.26.8", containerd: "v2.4.2", wazero: "v1.12.0"}},
		{"checkout", debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261203-abc+dirty"}, Deps: deps,
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc"}, {Key: "vcs.modified", Value: "true"}}},
			buildVersion{version: "v0.0.0-20261203-abc+dirty", revision: "abc-dirty", goVersion: "go1.26.8", containerd: "v2.4.2", wazero: "v1.12.0"}},
		{"nothing known", debug.BuildInfo{},
			buildVersion{version: "unknown", containerd: "unknown", wazero: "unknown"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v := versionOf(&tt.bi)
			if v != tt.want {
				t.Errorf("got %+v, want %+v", v, tt.want)
			}
			var b strings.Builder
			v.write(&b, "containerd-shim-wasm-v1")
			for _, want := range []string{"containerd-shim-wasm-v1:\n", "Version:    " + v.version, "containerd: " + v.containerd, "wazero:     " + v.wazero} {
				if !strings.Contains(b.String(), want) {
					t.Errorf("--version output lacks %q:\n%s", want, b.String())
				}
			}
			info := &types.RuntimeInfo{}
			v.setInfo(info)
			if info.Version.GetVersion() != v.version || info.Version.GetRevision() != v.revision ||
				info.Annotations[infoWazeroAnnotation] != v.wazero || info.Annotations[infoContainerdAnnotation] != v.containerd {
				t.Errorf("RuntimeInfo %+v", info)
			}
		})
	}
}
