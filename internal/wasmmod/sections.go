package wasmmod

import (
	"bytes"
	"fmt"
	"slices"
)

// The kinds of imports and exports.
const (
	kindFunc   = 0x00
	kindTable  = 0x01
	kindMemory = 0x02
	kindGlobal = 0x03
)

// kindName returns the name of an import or export kind, as used in
// messages.
func kindName(kind byte) string {
	switch kind {
	case kindFunc:
		return "function"
	case kindTable:
		return "table"
	case kindMemory:
		return "memory"
	case kindGlobal:
		return "global"
	}
	return fmt.Sprintf("kind %#02x", kind)
}

// funcTypeForm starts a function type in the type section.
const funcTypeForm = 0x60

// decodeTypes decodes the type section: a vector of function types, each
// the form 0x60, then a vector of parameter types and one of result types.
func (e *Exports) decodeTypes(d *decoder) error {
	n, err := d.count("types", 3)
	if err != nil {
		return err
	}
	e.types.marks = make([]uint32, 0, n/markEvery+1)
	for i := range n {
		e.types.mark(i, d)
		form, err := d.byte()
		if err != nil {
			return fmt.Errorf("type %d: %w", i, err)
		}
		if form != funcTypeForm {
			return fmt.Errorf("type %d: form %#02x is not that of a function type (0x60)", i, form)
		}
		for _, what := range [2]string{"parameters", "results"} {
			k, err := d.count(what, 1)
			if err != nil {
				return fmt.Errorf("type %d: %w", i, err)
			}
			vals, _ := d.bytes(k)
			for j, v := range vals {
				if !ValType(v).known() {
					d.at = d.pos - len(vals) + j
					return fmt.Errorf("type %d: unknown value type %#02x: %w", i, v, ErrUnsupported)
				}
			}
		}
	}
	e.types.body, e.types.n = d.b, n
	return nil
}

// decodeImports decodes the import section: a vector of imports, each a
// module name, a name, and a kind with its description. It keeps the type
// of each imported function; those come first in the function index space.
func (e *Exports) decodeImports(d *decoder) error {
	n, err := d.count("imports", 4)
	if err != nil {
		return err
	}
	for i := range n {
		module, err := d.name()
		if err != nil {
			return fmt.Errorf("import %d: module name: %w", i, err)
		}
		name, err := d.name()
		if err != nil {
			return fmt.Errorf("import %d from %s: name: %w", i, quoteName(module), err)
		}
		if err := e.decodeImportDesc(d); err != nil {
			return fmt.Errorf("import %d %s.%s: %w", i, quoteName(module), quoteName(name), err)
		}
	}
	return nil
}

// decodeImportDesc decodes what an import is: its kind and type.
func (e *Exports) decodeImportDesc(d *decoder) error {
	kind, err := d.byte()
	if err != nil {
		return err
	}
	switch kind {
	case kindFunc:
		t, err := d.u32()
		if err != nil {
			return fmt.Errorf("function type index: %w", err)
		}
		if t >= e.types.n {
			return fmt.Errorf("function type index %d out of range (%d types)", t, e.types.n)
		}
		e.imported = append(e.imported, t)
	case kindTable:
		t, err := d.byte()
		if err != nil {
			return fmt.Errorf("table element type: %w", err)
		}
		if !ValType(t).isRef() {
			return fmt.Errorf("table element type %#02x is not a reference type: %w", t, ErrUnsupported)
		}
		_, err = decodeLimits(d, "table")
		return err
	case kindMemory:
		pages, err := decodeLimits(d, "memory")
		e.memPages += uint64(pages)
		return err
	case kindGlobal:
		t, err := d.byte()
		if err != nil {
			return fmt.Errorf("global type: %w", err)
		}
		if !ValType(t).known() {
			return fmt.Errorf("global: unknown value type %#02x", t)
		}
		mut, err := d.byte()
		if err != nil {
			return fmt.Errorf("global mutability: %w", err)
		}
		if mut > 1 {
			return fmt.Errorf("global mutability %#02x is neither 0 nor 1", mut)
		}
	default:
		return fmt.Errorf("unknown import kind %#02x", kind)
	}
	return nil
}

// decodeLimits decodes the limits of a table or memory: a flag saying
// whether there is a maximum (bit 0) and whether the memory is shared (bit
// 1, of the threads proposal), then the minimum, which it returns, and the
// maximum.
func decodeLimits(d *decoder, what string) (uint32, error) {
	flag, err := d.byte()
	if err != nil {
		return 0, fmt.Errorf("%s limits: %w", what, err)
	}
	if flag > 0x03 {
		return 0, fmt.Errorf("%s limits: unknown flag %#02x", what, flag)
	}
	minimum, err := d.u32()
	if err != nil {
		return 0, fmt.Errorf("%s minimum: %w", what, err)
	}
	if flag&0x01 != 0 {
		if _, err := d.u32(); err != nil {
			return 0, fmt.Errorf("%s maximum: %w", what, err)
		}
	}
	return minimum, nil
}

// decodeMemories decodes the memory section: the limits of each memory the
// module defines.
func (e *Exports) decodeMemories(d *decoder) error {
	n, err := d.count("memories", 2)
	if err != nil {
		return err
	}
	for i := range n {
		pages, err := decodeLimits(d, fmt.Sprintf("memory %d", i))
		if err != nil {
			return err
		}
		e.memPages += uint64(pages)
	}
	return nil
}

// decodeFunctions decodes the function section: the type index of each
// function the module defines.
func (e *Exports) decodeFunctions(d *decoder) error {
	n, err := d.count("functions", 1)
	if err != nil {
		return err
	}
	e.defined.marks = make([]uint32, 0, n/markEvery+1)
	for i := range n {
		e.defined.mark(i, d)
		t, err := d.u32()
		if err != nil {
			return fmt.Errorf("function %d: type index: %w", len(e.imported)+int(i), err)
		}
		if t >= e.types.n {
			return fmt.Errorf("function %d: type index %d out of range (%d types)", len(e.imported)+int(i), t, e.types.n)
		}
	}
	e.defined.body, e.defined.n = d.b, n
	return nil
}

// decodeExports decodes the export section: a vector of exports, each a
// name, a kind and an index. It keeps the position of each export, sorted
// by name, to find names and to find duplicates.
func (e *Exports) decodeExports(d *decoder) error {
	n, err := d.count("exports", 3)
	if err != nil {
		return err
	}
	funcs := uint64(len(e.imported)) + uint64(e.defined.n)
	entries := make([]uint32, 0, n)
	for i := range n {
		start := d.pos
		name, err := d.name()
		if err != nil {
			return fmt.Errorf("export %d: %w", i, err)
		}
		kind, err := d.byte()
		if err != nil {
			return fmt.Errorf("export %d %s: %w", i, quoteName(name), err)
		}
		if kind > kindGlobal {
			return fmt.Errorf("export %d %s: unknown export kind %#02x", i, quoteName(name), kind)
		}
		index, err := d.u32()
		if err != nil {
			return fmt.Errorf("export %d %s: %s index: %w", i, quoteName(name), kindName(kind), err)
		}
		if kind == kindFunc {
			if uint64(index) >= funcs {
				return fmt.Errorf("export %d %s: function index %d out of range (%d functions)", i, quoteName(name), index, funcs)
			}
			e.funcs++
		}
		entries = append(entries, uint32(start))
	}
	e.body = d.b
	slices.SortFunc(entries, func(a, b uint32) int {
		return bytes.Compare(e.export(a).name, e.export(b).name)
	})
	for i := 1; i < len(entries); i++ {
		if name := e.export(entries[i]).name; bytes.Equal(name, e.export(entries[i-1]).name) {
			d.at = int(max(entries[i-1], entries[i]))
			return fmt.Errorf("duplicate export name %s", quoteName(name))
		}
	}
	e.exports = entries
	return nil
}
