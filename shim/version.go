package shim

import (
	"fmt"
	"io"
	"runtime/debug"
	"strings"

	"github.com/containerd/containerd/api/types"
)

// Modules whose versions the shim reports beside its own.
const (
	containerdModule = "github.com/containerd/containerd/v2"
	wazeroModule     = "github.com/tetratelabs/wazero"
)

// buildVersion is what the shim's binary knows of its own build, from the
// build information the Go toolchain stamps into every binary: no flag
// needs to be passed to the build.
type buildVersion struct {
	// version of the shim's module: a release tag for `go install
	// ...@vX.Y.Z`, a pseudo-version derived from the commit for a build in
	// a checkout, "(devel)" without version control information.
	version string
	// revision is the commit built, with "-dirty" if the checkout was
	// modified; "" if unknown.
	revision string
	// goVersion is the Go toolchain that built it.
	goVersion string
	// containerd and wazero are the versions of the containerd packages
	// and of the Wasm engine linked in.
	containerd, wazero string
}

// readBuildVersion reads the binary's build information.
func readBuildVersion() buildVersion {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = &debug.BuildInfo{}
	}
	return versionOf(bi)
}

// versionOf returns what bi tells of the build.
func versionOf(bi *debug.BuildInfo) buildVersion {
	v := buildVersion{version: "unknown", containerd: "unknown", wazero: "unknown"}
	v.goVersion = bi.GoVersion
	if bi.Main.Version != "" {
		v.version = bi.Main.Version
	}
	var modified bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.revision = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if modified && v.revision != "" {
		v.revision += "-dirty"
	}
	for _, d := range bi.Deps {
		if d.Replace != nil {
			d = d.Replace
		}
		switch d.Path {
		case containerdModule:
			v.containerd = d.Version
		case wazeroModule:
			v.wazero = d.Version
		}
	}
	return v
}

// write prints the version as `containerd-shim-wasm-v1 --version` does.
func (v buildVersion) write(w io.Writer, name string) {
	fmt.Fprintf(w, "%s:\n", name)
	fmt.Fprintf(w, "  Version:    %s\n", v.version)
	if v.revision != "" {
		fmt.Fprintf(w, "  Revision:   %s\n", v.revision)
	}
	fmt.Fprintf(w, "  Go:         %s\n", strings.TrimPrefix(v.goVersion, "go"))
	fmt.Fprintf(w, "  containerd: %s (packages)\n", v.containerd)
	fmt.Fprintf(w, "  wazero:     %s\n", v.wazero)
}

// Annotations of the RuntimeInfo that `-info` reports.
const (
	infoContainerdAnnotation = "io.containerd.wasm.v1/containerd-packages"
	infoWazeroAnnotation     = "io.containerd.wasm.v1/wazero"
)

// setInfo puts the version into a RuntimeInfo: the shim's own as its
// version, the others as annotations.
func (v buildVersion) setInfo(info *types.RuntimeInfo) {
	info.Version = &types.RuntimeVersion{Version: v.version, Revision: v.revision}
	if info.Annotations == nil {
		info.Annotations = map[string]string{}
	}
	info.Annotations[infoContainerdAnnotation] = v.containerd
	info.Annotations[infoWazeroAnnotation] = v.wazero
}
