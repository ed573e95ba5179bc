package wasmmod

import "strings"

// FuncType is a function's signature: the types of its parameters and of its
// results.
type FuncType struct {
	Params  []ValType
	Results []ValType
}

// String returns the signature as "(i32, i32) -> (i64)".
func (t FuncType) String() string {
	return funcTypeString(t.Params, t.Results)
}

// funcTypeString returns a signature as "(i32, i32) -> (i64)", listing at
// most maxListed types on either side.
func funcTypeString[T ~byte](params, results []T) string {
	return "(" + typeList(params) + ") -> (" + typeList(results) + ")"
}

// maxListed bounds how many value types a message lists: a function may
// declare millions of parameters.
const maxListed = 10

// typeList returns the names of types, comma separated, listing at most
// maxListed of them.
func typeList[T ~byte](types []T) string {
	var b strings.Builder
	for i, t := range types[:min(len(types), maxListed)] {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(ValType(t).String())
	}
	if len(types) > maxListed {
		b.WriteString(", …")
	}
	return b.String()
}
