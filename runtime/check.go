package runtime

import (
	"context"
	"fmt"

	"github.com/tetratelabs/wazero"
)

// Check decodes and validates a module and checks that it exports fn as an
// entry function, without running it. It uses wazero's interpreter, which
// validates as the compiler does but needs no executable memory and less
// time. The shim runs it in a short-lived helper process before the
// container is created, so that a bad module fails Create with wazero's own
// message.
func Check(ctx context.Context, bin []byte, fn string) error {
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer rt.Close(ctx)
	compiled, err := rt.CompileModule(ctx, bin)
	if err != nil {
		return fmt.Errorf("invalid module: %w", err)
	}
	return CheckEntry(compiled, fn)
}
