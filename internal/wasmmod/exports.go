package wasmmod

import (
	"bytes"
	"fmt"
	"iter"
	"slices"
	"strings"
)

// Exports is what ReadExports found: the module's exported functions and
// their signatures.
//
// It keeps the sections it needs as they are encoded (with an index), which
// takes a fraction of the memory of decoded Go values: a module's sections
// may hold millions of entries. Its methods decode what they are asked for.
// The zero Exports, like a nil *Exports, has no exports.
type Exports struct {
	types    table    // the type section
	imported []uint32 // the type index of each imported function
	defined  table    // the function section: the type index of each function defined
	body     []byte   // the export section
	exports  []uint32 // the position in body of each export, sorted by name
	funcs    int      // the number of function exports
	memPages uint64   // the declared minimum of every memory, imported or defined, in pages
}

// PageSize is the size of a WebAssembly page.
const PageSize = 64 << 10

// InitialMemory is what the module's memories, imported or defined,
// exported or not, take at instantiation: the sum of their declared
// minimums, in bytes.
func (e *Exports) InitialMemory() uint64 { return e.memPages * PageSize }

// export is an entry of the export section.
type export struct {
	name  []byte
	kind  byte
	index uint32
}

// export decodes the export at position pos of the export section.
func (e *Exports) export(pos uint32) export {
	d := decoder{b: e.body, pos: int(pos)}
	n, _ := d.u32()
	name, _ := d.bytes(n)
	kind, _ := d.byte()
	index, _ := d.u32()
	return export{name, kind, index}
}

// find returns the export named name, and whether there is one.
func (e *Exports) find(name string) (export, bool) {
	if e == nil {
		return export{}, false
	}
	key := []byte(name)
	i, ok := slices.BinarySearchFunc(e.exports, key, func(pos uint32, key []byte) int {
		return bytes.Compare(e.export(pos).name, key)
	})
	if !ok {
		return export{}, false
	}
	return e.export(e.exports[i]), true
}

// signature returns the parameter and result types, as encoded, of the
// function of index f in the function index space (imported functions, then
// those the module defines).
func (e *Exports) signature(f uint32) (params, results []byte) {
	var t uint32
	if f < uint32(len(e.imported)) {
		t = e.imported[f]
	} else {
		d := e.defined.seek(f-uint32(len(e.imported)), skipU32)
		t, _ = d.u32()
	}
	d := e.types.seek(t, skipFuncType)
	return readFuncType(&d)
}

// funcType returns the signature of the function of index f.
func (e *Exports) funcType(f uint32) FuncType {
	params, results := e.signature(f)
	return FuncType{Params: valTypes(params), Results: valTypes(results)}
}

// valTypes converts encoded value types to a slice of ValType, nil if
// there are none.
func valTypes(b []byte) []ValType {
	if len(b) == 0 {
		return nil
	}
	v := make([]ValType, len(b))
	for i, c := range b {
		v[i] = ValType(c)
	}
	return v
}

// NumFuncs returns the number of exported functions.
func (e *Exports) NumFuncs() int {
	if e == nil {
		return 0
	}
	return e.funcs
}

// Func returns the signature of the function exported as name, and whether
// the module exports a function of that name.
func (e *Exports) Func(name string) (FuncType, bool) {
	x, ok := e.find(name)
	if !ok || x.kind != kindFunc {
		return FuncType{}, false
	}
	return e.funcType(x.index), true
}

// Funcs returns an iterator over the exported functions, by name in
// lexical (byte) order, and their signatures.
func (e *Exports) Funcs() iter.Seq2[string, FuncType] {
	return func(yield func(string, FuncType) bool) {
		if e == nil {
			return
		}
		for _, pos := range e.exports {
			if x := e.export(pos); x.kind == kindFunc && !yield(string(x.name), e.funcType(x.index)) {
				return
			}
		}
	}
}

// maxSuggested is how many exported functions CheckEntry lists when the
// function it is asked for is missing.
const maxSuggested = 5

// CheckEntry reports whether fn is exported as a function that takes no
// parameters, as an entry function such as WASI's "_start" must: the runner
// calls it with none. (What it returns is dropped, as the runner drops it.)
// Its errors say what is wrong:
//
//	no exported function "_start" (exports: main, foo)
//	exported function "_start" takes 2 parameters (i32, i32); an entry function takes none
//
// where the first lists the first few exported functions by name, if there
// are any.
func (e *Exports) CheckEntry(fn string) error {
	x, ok := e.find(fn)
	if ok && x.kind != kindFunc {
		return fmt.Errorf("no exported function %q (it is a %s export)", fn, kindName(x.kind))
	}
	if !ok {
		if e.NumFuncs() == 0 {
			return fmt.Errorf("no exported function %q (the module exports no functions)", fn)
		}
		return fmt.Errorf("no exported function %q (exports: %s)", fn, e.suggestions())
	}
	if params, results := e.signature(x.index); len(params) > 0 || len(results) > 0 {
		return fmt.Errorf("exported function %q has type %s; an entry function takes no parameters and returns nothing, as WASI's _start", fn, funcTypeString(params, results))
	}
	return nil
}

// suggestions lists the names of the first maxSuggested exported functions,
// and how many more there are.
func (e *Exports) suggestions() string {
	var names []string
	for _, pos := range e.exports {
		if len(names) == maxSuggested {
			break
		}
		if x := e.export(pos); x.kind == kindFunc {
			names = append(names, listName(x.name))
		}
	}
	if more := e.funcs - len(names); more > 0 {
		names = append(names, fmt.Sprintf("and %d more", more))
	}
	return strings.Join(names, ", ")
}

// plural returns n and noun, in the plural unless n is 1.
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
