package shim

import (
	"context"
	"errors"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/cache"
)

// TestModuleFailure: a compile failed for the module's sake carries its
// errdefs class and, for the cache, a Failure of its kind whose reason is
// the message without the class; its chain has one branch (containerd
// sends each branch to the client as a line of its own).
func TestModuleFailure(t *testing.T) {
	tests := []struct {
		kind  string
		class error
	}{
		{"invalid", errdefs.ErrInvalidArgument},
		{"memory", errdefs.ErrResourceExhausted},
		{"timeout", context.DeadlineExceeded},
		{"other", errdefs.ErrFailedPrecondition},
	}
	for _, tt := range tests {
		t.Run(tt.kind, func(t *testing.T) {
			err := moduleFailure(tt.kind, errors.New("compile module /m.wasm: why"))
			if !errors.Is(err, tt.class) {
				t.Errorf("%v is not %v", err, tt.class)
			}
			var f *cache.Failure
			if !errors.As(err, &f) || f.Kind != tt.kind || f.Reason != "compile module /m.wasm: why" {
				t.Errorf("Failure %+v", f)
			}
			for e := err; e != nil; e = errors.Unwrap(e) {
				if _, ok := e.(interface{ Unwrap() []error }); ok {
					t.Errorf("%T in the chain has branches", e)
				}
			}
		})
	}
}
