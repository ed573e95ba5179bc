package wasmmod

import "fmt"

// ValType is a WebAssembly value type, as it is encoded in the binary format.
type ValType byte

// The value types ReadExports knows: those of WebAssembly 2.0 (numbers,
// vectors and the two reference types).
const (
	I32       ValType = 0x7F
	I64       ValType = 0x7E
	F32       ValType = 0x7D
	F64       ValType = 0x7C
	V128      ValType = 0x7B
	FuncRef   ValType = 0x70
	ExternRef ValType = 0x6F
)

// String returns the type's name in the text format: "i32", "funcref", ...;
// or "ValType(0x..)" for a byte that is not a known value type.
func (v ValType) String() string {
	switch v {
	case I32:
		return "i32"
	case I64:
		return "i64"
	case F32:
		return "f32"
	case F64:
		return "f64"
	case V128:
		return "v128"
	case FuncRef:
		return "funcref"
	case ExternRef:
		return "externref"
	}
	return fmt.Sprintf("ValType(%#02x)", byte(v))
}

// known reports whether v is one of the value types above.
func (v ValType) known() bool {
	switch v {
	case I32, I64, F32, F64, V128, FuncRef, ExternRef:
		return true
	}
	return false
}

// isRef reports whether v is a reference type, the only types a table holds.
func (v ValType) isRef() bool {
	return v == FuncRef || v == ExternRef
}
