package shim

import (
	"testing"

	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/anypb"
)

// TestDecodeProcess: an exec's process spec that is not one, or has no
// args, is refused with InvalidArgument.
func TestDecodeProcess(t *testing.T) {
	encode := func(p *specs.Process) *anypb.Any {
		a, err := typeurl.MarshalAnyToProto(p)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	tests := []struct {
		name string
		spec *anypb.Any
		ok   bool
	}{
		{"process", encode(&specs.Process{Args: []string{"/app.wasm", "x"}}), true},
		{"no args", encode(&specs.Process{Cwd: "/"}), false},
		{"garbage", &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: []byte("{nope")}, false},
		{"another type", encodeSpec(t), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := decodeProcess(tt.spec)
			if tt.ok && (err != nil || p.Args[0] != "/app.wasm") {
				t.Errorf("decodeProcess: %+v, %v", p, err)
			}
			if !tt.ok && !errdefs.IsInvalidArgument(err) {
				t.Errorf("decodeProcess: %v, want InvalidArgument", err)
			}
		})
	}
}

// encodeSpec encodes a runtime spec: not a process.
func encodeSpec(t *testing.T) *anypb.Any {
	a, err := typeurl.MarshalAnyToProto(&specs.Spec{Version: "1.0.2"})
	if err != nil {
		t.Fatal(err)
	}
	return a
}
