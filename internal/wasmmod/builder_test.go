package wasmmod

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// This file assembles modules for the tests, and checks ReadExports against
// wazero.

// leb encodes v as an unsigned LEB128 integer.
func leb(v uint32) []byte {
	var b []byte
	for {
		c := byte(v & 0x7F)
		v >>= 7
		if v == 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

// cat concatenates byte slices.
func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// vec encodes a vector of already encoded items.
func vec(items ...[]byte) []byte { return cat(leb(uint32(len(items))), cat(items...)) }

// str encodes a name.
func str(s string) []byte { return cat(leb(uint32(len(s))), []byte(s)) }

// section encodes a section of id whose body is the concatenation of body.
func section(id byte, body ...[]byte) []byte {
	b := cat(body...)
	return cat([]byte{id}, leb(uint32(len(b))), b)
}

// header is that of every binary module.
const header = "\x00asm\x01\x00\x00\x00"

// module encodes a module of the given sections.
func module(sections ...[]byte) []byte { return cat([]byte(header), cat(sections...)) }

// vals encodes value types.
func vals(types ...ValType) []byte {
	b := make([]byte, len(types))
	for i, t := range types {
		b[i] = byte(t)
	}
	return vec(splitBytes(b)...)
}

// splitBytes returns b as one-byte slices, for vec.
func splitBytes(b []byte) [][]byte {
	var s [][]byte
	for i := range b {
		s = append(s, b[i:i+1])
	}
	return s
}

// fn encodes a function type.
func fn(params []ValType, results ...ValType) []byte {
	return cat([]byte{0x60}, vals(params...), vals(results...))
}

// types encodes a type section.
func types(funcTypes ...[]byte) []byte { return section(secType, vec(funcTypes...)) }

// imports encodes an import section.
func imports(entries ...[]byte) []byte { return section(secImport, vec(entries...)) }

// importFunc encodes a function import.
func importFunc(module, name string, typ uint32) []byte {
	return cat(str(module), str(name), []byte{kindFunc}, leb(typ))
}

// funcs encodes a function section.
func funcs(typeIndices ...uint32) []byte {
	var items [][]byte
	for _, t := range typeIndices {
		items = append(items, leb(t))
	}
	return section(secFunction, vec(items...))
}

// exports encodes an export section.
func exports(entries ...[]byte) []byte { return section(secExport, vec(entries...)) }

// exp encodes an export.
func exp(name string, kind byte, index uint32) []byte {
	return cat(str(name), []byte{kind}, leb(index))
}

// code encodes a code section of n functions that trap, which is valid
// whatever their signature.
func code(n int) []byte {
	var bodies [][]byte
	for range n {
		bodies = append(bodies, []byte{3, 0, 0x00, 0x0B}) // size, no locals, unreachable, end
	}
	return section(secCode, vec(bodies...))
}

// custom encodes a custom section.
func custom(name string, data ...byte) []byte { return section(secCustom, str(name), data) }

// sectionEnds returns the offset of the end of each section of a
// well-formed module.
func sectionEnds(t testing.TB, bin []byte) []int {
	t.Helper()
	var ends []int
	for pos := len(header); pos < len(bin); {
		size, n, err := decodeU32(bin[pos+1:])
		if err != nil {
			t.Fatalf("section at %d: %v", pos, err)
		}
		pos += 1 + n + int(size)
		ends = append(ends, pos)
	}
	return ends
}

// exportEnd returns the offset of the end of the export section of a
// well-formed module, or -1.
func exportEnd(t testing.TB, bin []byte) int {
	t.Helper()
	start := len(header)
	for _, end := range sectionEnds(t, bin) {
		if bin[start] == secExport {
			return end
		}
		start = end
	}
	return -1
}

// stopsAt returns where ReadExports stops reading a well-formed module: at
// the end of its export section, or after the id of the first section that
// comes after it, or at its end.
func stopsAt(t testing.TB, bin []byte) int {
	t.Helper()
	start := len(header)
	for _, end := range sectionEnds(t, bin) {
		switch id := bin[start]; {
		case id == secExport:
			return end
		case id >= secStart && id <= secDataCount:
			return start + 1
		}
		start = end
	}
	return len(bin)
}

// stricterThanWazero reports whether err is one of the errors of
// ReadExports for modules that wazero v1.12 compiles (with the features the
// shim enables): value types beyond WebAssembly 2.0 (exnref and typed
// references, which wazero decodes even when it does not enable the
// proposals they belong to), and imported tables of a value type that is
// not a reference (which the format forbids).
func stricterThanWazero(err error) bool {
	var fe *FormatError
	return errors.As(err, &fe) && errors.Is(err, ErrUnsupported)
}

// collect returns the exported functions of e, by name.
func collect(e *Exports) map[string]FuncType {
	m := map[string]FuncType{}
	for name, t := range e.Funcs() {
		m[name] = t
	}
	return m
}

// wazeroRuntime returns a runtime with the features the shim's runner
// enables (runtime/engine.go), as an interpreter: it compiles faster. Without
// debug information, it skips custom sections other than "name" instead of
// allocating what they declare.
func wazeroRuntime(t testing.TB) wazero.Runtime {
	ctx := context.Background()
	config := wazero.NewRuntimeConfigInterpreter().WithCoreFeatures(api.CoreFeaturesV2).WithDebugInfoEnabled(false)
	rt := wazero.NewRuntimeWithConfig(ctx, config)
	t.Cleanup(func() { rt.Close(ctx) })
	return rt
}

// wazeroExports compiles bin with rt and returns its exported functions, or
// an error if wazero does not accept it.
func wazeroExports(rt wazero.Runtime, bin []byte) (map[string]FuncType, error) {
	ctx := context.Background()
	compiled, err := rt.CompileModule(ctx, bin)
	if err != nil {
		return nil, err
	}
	defer compiled.Close(ctx)
	m := map[string]FuncType{}
	for name, def := range compiled.ExportedFunctions() {
		m[name] = FuncType{Params: apiTypes(def.ParamTypes()), Results: apiTypes(def.ResultTypes())}
	}
	return m, nil
}

// apiTypes converts wazero's value types, which have the same encoding.
func apiTypes(types []api.ValueType) []ValType {
	if len(types) == 0 {
		return nil
	}
	v := make([]ValType, len(types))
	for i, t := range types {
		v[i] = ValType(t)
	}
	return v
}

// crossCheck checks that if wazero compiles bin, ReadExports accepts it and
// finds the same exported functions with the same signatures. It returns
// wazero's error if wazero does not compile bin.
func crossCheck(t testing.TB, rt wazero.Runtime, bin []byte) error {
	t.Helper()
	want, werr := wazeroExports(rt, bin)
	e, err := ReadExports(bytes.NewReader(bin))
	if werr != nil {
		return werr
	}
	if stricterThanWazero(err) {
		return nil
	}
	if err != nil {
		t.Fatalf("ReadExports rejects a module wazero compiles: %v", err)
	}
	got := collect(e)
	if len(got) != len(want) {
		t.Fatalf("ReadExports found %d exported functions, wazero %d: %v, %v", len(got), len(want), got, want)
	}
	for name, w := range want {
		g, ok := got[name]
		if !ok || !slices.Equal(g.Params, w.Params) || !slices.Equal(g.Results, w.Results) {
			t.Fatalf("exported function %q: ReadExports found %v (%v), wazero %v", name, g, ok, w)
		}
	}
	return nil
}
