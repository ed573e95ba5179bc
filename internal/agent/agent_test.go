package agent

import (
	"strings"
	"testing"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/shim"
)

// TestCompileOnlyAnnotation: the agent asks for what the shim does.
func TestCompileOnlyAnnotation(t *testing.T) {
	if CompileOnlyAnnotation != shim.CompileOnlyAnnotation {
		t.Fatalf("agent's annotation %q, shim's %q", CompileOnlyAnnotation, shim.CompileOnlyAnnotation)
	}
}

func TestHandlerFromConfig(t *testing.T) {
	config := `{"containerd":{"snapshotter":"overlayfs","runtimes":{
		"runc":{"runtimeType":"io.containerd.runc.v2","options":{"Root":"/run/runc"}},
		"wasm":{"runtimeType":"io.containerd.wasm.v1","runtimePath":"/usr/local/bin/containerd-shim-wasm-v1",
		        "options":{"CacheRoot":"/var/lib/x","CompileMemoryLimit":1073741824,"SystemdCgroup":true}},
		"wasm-native":{"runtimeType":"io.containerd.wasm.v1","snapshotter":"native","options":null}}}}`
	tests := []struct {
		name, handler string
		want          Handler
		options       []string
		err           string
	}{
		{name: "handler", handler: "wasm", want: Handler{RuntimeType: "io.containerd.wasm.v1", RuntimePath: "/usr/local/bin/containerd-shim-wasm-v1", Snapshotter: "overlayfs"},
			options: []string{"CacheRoot = '/var/lib/x'", "CompileMemoryLimit = 1073741824", "SystemdCgroup = true"}},
		{name: "its own snapshotter, no options", handler: "wasm-native", want: Handler{RuntimeType: "io.containerd.wasm.v1", Snapshotter: "native"}},
		{name: "unknown handler", handler: "nope", err: `no runtime handler "nope"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := handlerFromConfig([]byte(config), tt.handler)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			opts := string(h.Options)
			h.Options = nil
			if h.RuntimeType != tt.want.RuntimeType || h.RuntimePath != tt.want.RuntimePath || h.Snapshotter != tt.want.Snapshotter {
				t.Errorf("handler %+v, want %+v", h, tt.want)
			}
			for _, o := range tt.options {
				if !strings.Contains(opts, o) {
					t.Errorf("options %q lack %q", opts, o)
				}
			}
		})
	}
	if _, err := handlerFromConfig([]byte("{"), "wasm"); err == nil {
		t.Error("a bad config was read")
	}
}
