package wasmmod

import (
	"errors"
	"fmt"
)

// ErrUnsupported is in the chain of a FormatError for what ReadExports
// does not read but a compiler may accept: a value type of a proposal
// beyond WebAssembly 2.0 (wazero decodes some of those, such as exnref and
// typed references, whatever features it enables), or a table element type
// that is not a reference. Such a module is left to the compiler to judge.
var ErrUnsupported = errors.New("left to the compiler to judge")

// FormatError is the error ReadExports returns for input it does not
// accept: input that is not a binary module, or a module whose sections up to
// the export section are malformed or larger than MaxSize. An error reading
// the input is returned as it is (wrapped), not as a FormatError.
type FormatError struct {
	// Section names the section at fault ("type", "import", ...); it is
	// empty for the module's header.
	Section string
	// Offset is the position in the module, in bytes, where the problem
	// was found.
	Offset int64
	// Err says what the problem is. A module that ends too early has
	// io.ErrUnexpectedEOF in its chain.
	Err error
}

// Error returns the reason, prefixed with the section and offset at fault
// unless the fault is in the module's header.
func (e *FormatError) Error() string {
	if e.Section == "" {
		return e.Err.Error()
	}
	return fmt.Sprintf("%s section, byte %d: %v", e.Section, e.Offset, e.Err)
}

// Unwrap returns Err.
func (e *FormatError) Unwrap() error { return e.Err }
