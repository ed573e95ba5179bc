package wasmmod

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// readCase is a module for ReadExports: valid (err is empty) with what
// CheckEntry says of some functions, or invalid with the error.
type readCase struct {
	name string
	bin  []byte
	// err is a substring of ReadExports's error; empty if it succeeds.
	err string
	// entry maps a function to a substring of CheckEntry's error, or to
	// the empty string if the function is an entry function.
	entry map[string]string
	// funcs is the exported functions' signatures, if not nil.
	funcs map[string]FuncType
	// stricter says that ReadExports rejects on purpose a module that
	// wazero compiles (see stricterThanWazero).
	stricter bool
}

// readCases returns the modules the tests and the fuzz target start from.
func readCases() []readCase {
	start := module(types(fn(nil)), funcs(0), exports(exp("_start", kindFunc, 0)), code(1))
	many := func(n int) []byte {
		var ex [][]byte
		for i := range n {
			ex = append(ex, exp(fmt.Sprintf("f%02d", i), kindFunc, 0))
		}
		return module(types(fn(nil, I32)), funcs(0), exports(ex...), code(1))
	}
	// wide has 40 types, the one of index i with i parameters, and 80
	// functions, of types in a scrambled order, each exported, so that
	// finding a signature crosses the marks of both tables.
	wide := func() ([]byte, map[string]FuncType) {
		var ts, ex [][]byte
		var fs []uint32
		want := map[string]FuncType{}
		for i := range 40 {
			params := slices.Repeat([]ValType{ValType(0x7F - i%5)}, i)
			ts = append(ts, fn(params, ValType(0x7F-i%4)))
		}
		for f := range 80 {
			t := uint32(f*7) % 40
			fs = append(fs, t)
			name := fmt.Sprintf("fn%d", f)
			ex = append(ex, exp(name, kindFunc, uint32(f)))
			params := slices.Repeat([]ValType{ValType(0x7F - t%5)}, int(t))
			if len(params) == 0 {
				params = nil
			}
			want[name] = FuncType{Params: params, Results: []ValType{ValType(0x7F - t%4)}}
		}
		return module(types(ts...), funcs(fs...), exports(ex...), code(80)), want
	}
	wideBin, wideFuncs := wide()

	return []readCase{
		{name: "start", bin: start, entry: map[string]string{
			"_start": "",
			"main":   `no exported function "main" (exports: _start)`,
			"":       `no exported function "" (exports: _start)`,
		}, funcs: map[string]FuncType{"_start": {}}},
		{name: "no start", bin: module(types(fn(nil)), funcs(0, 0), exports(exp("main", kindFunc, 0), exp("foo", kindFunc, 1)), code(2)),
			entry: map[string]string{"_start": `no exported function "_start" (exports: foo, main)`, "main": ""}},
		{name: "many exports", bin: many(8), entry: map[string]string{
			"_start": `no exported function "_start" (exports: f00, f01, f02, f03, f04, and 3 more)`,
			"f07":    `exported function "f07" has type (`, // it returns a value
		}},
		{name: "no exports", bin: module(types(fn(nil)), funcs(0), code(1)),
			entry: map[string]string{"_start": `no exported function "_start" (the module exports no functions)`}},
		{name: "empty module", bin: module(),
			entry: map[string]string{"_start": `no exported function "_start" (the module exports no functions)`}},
		{name: "params", bin: module(types(fn([]ValType{I32, I32})), funcs(0), exports(exp("_start", kindFunc, 0)), code(1)),
			entry: map[string]string{"_start": `exported function "_start" has type (i32, i32) -> (); an entry function takes no parameters and returns nothing, as WASI's _start`}},
		{name: "one param", bin: module(types(fn([]ValType{I64})), funcs(0), exports(exp("_start", kindFunc, 0)), code(1)),
			entry: map[string]string{"_start": `exported function "_start" has type (i64) -> ()`}},
		{name: "many params", bin: module(types(fn(slices.Repeat([]ValType{F32, F64}, 6))), funcs(0), exports(exp("_start", kindFunc, 0)), code(1)),
			entry: map[string]string{"_start": `has type (f32, f64, f32, f64, f32, f64, f32, f64, f32, f64, …) -> ()`}},
		{name: "results", bin: module(types(fn(nil, I32)), funcs(0), exports(exp("_start", kindFunc, 0)), code(1)),
			entry: map[string]string{"_start": `exported function "_start" has type () -> (i32); an entry function takes no parameters and returns nothing`}},
		{name: "multi-value", bin: module(types(fn(nil, I32, V128, ExternRef)), funcs(0), exports(exp("_start", kindFunc, 0)), code(1)),
			entry: map[string]string{"_start": `has type () -> (i32, v128, externref)`}, funcs: map[string]FuncType{"_start": {Results: []ValType{I32, V128, ExternRef}}}},
		{name: "imported start",
			bin:   module(types(fn(nil), fn([]ValType{FuncRef})), imports(importFunc("env", "start", 1)), funcs(0), exports(exp("_start", kindFunc, 0), exp("run", kindFunc, 1)), code(1)),
			entry: map[string]string{"_start": `has type (funcref) -> ()`, "run": ""},
			funcs: map[string]FuncType{"_start": {Params: []ValType{FuncRef}}, "run": {}}},
		{name: "imports of every kind", bin: module(
			types(fn([]ValType{I32}), fn(nil)),
			imports(
				importFunc("env", "f", 0),
				cat(str("env"), str("table"), []byte{kindTable, byte(FuncRef), 0x00}, leb(1)),
				cat(str("env"), str("table2"), []byte{kindTable, byte(ExternRef), 0x01}, leb(1), leb(10)),
				cat(str("env"), str("memory"), []byte{kindMemory, 0x03}, leb(1), leb(1<<16)),
				cat(str("env"), str("memory2"), []byte{kindMemory, 0x02}, leb(1)),
				cat(str("env"), str("g"), []byte{kindGlobal, byte(V128), 1}),
				importFunc("wasi_snapshot_preview1", "proc_exit", 0),
			),
			funcs(1),
			exports(exp("_start", kindFunc, 2), exp("exit", kindFunc, 1), exp("memory", kindMemory, 0), exp("g", kindGlobal, 0), exp("t", kindTable, 1)),
			code(1)),
			entry: map[string]string{"_start": "", "exit": "has type (i32) -> ()", "memory": `no exported function "memory" (it is a memory export)`, "t": "(it is a table export)", "g": "(it is a global export)"}},
		{name: "customs everywhere", bin: module(
			custom("a"), types(fn(nil)), custom("b", 1, 2, 3), imports(), custom("nam", 0), funcs(0), custom(""),
			section(secTable, vec(cat([]byte{byte(FuncRef), 0}, leb(1)))), custom("c"),
			section(secMemory, vec(cat([]byte{0}, leb(1)))), custom("d"),
			section(secGlobal, vec([]byte{byte(I32), 0, 0x41, 0, 0x0B})), custom("e"),
			exports(exp("_start", kindFunc, 0)), custom("f"), code(1), custom("g", 0)),
			entry: map[string]string{"_start": ""}},
		{name: "tag section", bin: module(types(fn(nil)), funcs(0), section(secTag, vec([]byte{0, 0})), exports(exp("_start", kindFunc, 0)), code(1)),
			entry: map[string]string{"_start": ""}},
		{name: "sections after the exports", bin: module(types(fn(nil)), funcs(0), exports(exp("_start", kindFunc, 0)),
			section(secStart, leb(0)), section(99, []byte("not read")), code(1)),
			entry: map[string]string{"_start": ""}},
		{name: "no exports, code", bin: module(types(fn(nil)), funcs(0), code(1), section(99)),
			entry: map[string]string{"_start": "the module exports no functions"}},
		{name: "unusual names", bin: module(types(fn(nil, I32)), funcs(0),
			exports(exp("a,b", kindFunc, 0), exp("c\nd", kindFunc, 0), exp("é", kindFunc, 0), exp(strings.Repeat("x", 100), kindFunc, 0)), code(1)),
			entry: map[string]string{"_start": `(exports: "a,b", "c\nd", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"…, é)`}},
		{name: "wide", bin: wideBin, funcs: wideFuncs},

		{name: "empty", bin: nil, err: "not a WebAssembly binary module: empty"},
		{name: "short header", bin: []byte("\x00asm\x01"), err: "not a WebAssembly binary module: header cut after 5 bytes: unexpected EOF"},
		{name: "ELF", bin: []byte("\x7fELF\x02\x01\x01\x00"), err: "not a WebAssembly binary module: no \\0asm magic number"},
		{name: "text", bin: []byte("(module)"), err: "not a WebAssembly binary module: no \\0asm magic number"},
		{name: "short text", bin: []byte("\x00a"), err: "not a WebAssembly binary module: header cut after 2 bytes"},
		{name: "version 2", bin: []byte("\x00asm\x02\x00\x00\x00"), err: "not a WebAssembly binary module: version 0x2, not 1"},
		{name: "component", bin: []byte("\x00asm\x0d\x00\x01\x00"), err: "not a WebAssembly binary module: a component"},

		{name: "type index out of range", bin: module(types(fn(nil)), funcs(0, 1), exports(exp("_start", kindFunc, 0))),
			err: "function section, byte 18: function 1: type index 1 out of range (1 types)"},
		{name: "function without types", bin: module(funcs(0)), err: "function 0: type index 0 out of range (0 types)"},
		{name: "import type index out of range", bin: module(types(fn(nil)), imports(importFunc("env", "f", 3))),
			err: `import section, byte 24: import 0 "env"."f": function type index 3 out of range (1 types)`},
		{name: "export index out of range", bin: module(types(fn(nil)), imports(importFunc("env", "f", 0)), funcs(0), exports(exp("_start", kindFunc, 2))),
			err: `export section, byte 40: export 0 "_start": function index 2 out of range (2 functions)`},
		{name: "duplicate export", bin: module(types(fn(nil)), funcs(0), exports(exp("a", kindFunc, 0), exp("b", kindFunc, 0), exp("a", kindMemory, 0))),
			err: `duplicate export name "a"`},
		{name: "unknown export kind", bin: module(types(fn(nil)), funcs(0), exports(exp("t", 4, 0))),
			err: `export 0 "t": unknown export kind 0x04`},
		{name: "unknown import kind", bin: module(types(fn(nil)), imports(importFunc("env", "f", 0), cat(str("env"), str("tag"), []byte{4, 0, 0}))),
			err: `import 1 "env"."tag": unknown import kind 0x04`},
		{name: "export name not UTF-8", bin: module(types(fn(nil)), funcs(0), exports(exp("\xff", kindFunc, 0))),
			err: "export 0: name is not valid UTF-8"},
		{name: "import name not UTF-8", bin: module(imports(cat(str("env"), str("a\xc3"), []byte{kindMemory, 0, 0}))),
			err: `import 0 from "env": name: name is not valid UTF-8`},
		{name: "unknown value type", bin: module(types(fn(nil), fn([]ValType{I32, 0x40}))),
			err: "type section, byte 17: type 1: unknown value type 0x40"},
		{name: "exnref", bin: module(types(fn(nil, 0x69))), err: "type 0: unknown value type 0x69", stricter: true},
		{name: "ref null func", bin: module(section(secType, vec([]byte{0x60, 1, 0x63, 0x70, 0}))), err: "type 0: unknown value type 0x63", stricter: true},
		{name: "ref func", bin: module(section(secType, vec([]byte{0x60, 0, 1, 0x64, 0x70}))), err: "type 0: unknown value type 0x64", stricter: true},
		{name: "not a function type", bin: module(section(secType, vec([]byte{0x5F, 0, 0}))),
			err: "type 0: form 0x5f is not that of a function type (0x60)"},
		{name: "global of unknown type", bin: module(imports(cat(str("m"), str("g"), []byte{kindGlobal, 0x40, 0}))),
			err: "global: unknown value type 0x40"},
		{name: "global mutability", bin: module(imports(cat(str("m"), str("g"), []byte{kindGlobal, byte(I32), 2}))),
			err: "global mutability 0x02 is neither 0 nor 1"},
		{name: "table of i32", bin: module(imports(cat(str("m"), str("t"), []byte{kindTable, byte(I32), 0, 0}))),
			err: "table element type 0x7f is not a reference type", stricter: true},
		{name: "memory64", bin: module(imports(cat(str("m"), str("mem"), []byte{kindMemory, 0x04, 0}))),
			err: "memory limits: unknown flag 0x04"},
		{name: "integer too long", bin: module(section(secType, []byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x00})),
			err: "type section, byte 10: number of types: integer encoding longer than 5 bytes"},
		{name: "integer too large", bin: module(section(secType, []byte{0xFF, 0xFF, 0xFF, 0xFF, 0x1F})),
			err: "number of types: integer too large for 32 bits"},
		{name: "section size too long", bin: cat([]byte(header), []byte{secType, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01}),
			err: "type section, byte 9: section size: integer encoding longer than 5 bytes"},
		{name: "section size too large", bin: cat([]byte(header), []byte{secType, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F}),
			err: "type section, byte 9: section size: integer too large for 32 bits"},
		{name: "out of order", bin: module(types(fn(nil)), funcs(), imports()),
			err: "import section, byte 17: out of order: after the function section"},
		{name: "tag out of order", bin: module(section(secGlobal, vec()), section(secTag, vec())),
			err: "tag section, byte 11: out of order: after the global section"},
		{name: "duplicate section", bin: module(types(fn(nil)), custom("x"), types(fn(nil))),
			err: "type section, byte 18: duplicate section"},
		{name: "unknown section", bin: module(types(), section(14)),
			err: "unknown section, byte 11: section id 14 is not defined by the binary format"},
		{name: "left over", bin: module(section(secType, vec(fn(nil)), []byte{0})),
			err: "type section, byte 14: 1 byte left over after the contents of a section of 5 bytes"},
		{name: "runs past the section", bin: module(section(secType, leb(1), []byte{0x60, 0x80, 0x80})),
			err: "type section, byte 12: type 0: number of parameters: contents run past the end of the section"},
		{name: "results past the section", bin: module(section(secType, leb(1), []byte{0x60, 0, 1})),
			err: "type section, byte 13: type 0: 1 results declared in the 0 bytes left in the section"},
		{name: "name runs past the section", bin: module(section(secExport, leb(1), leb(20), []byte("_start"), []byte{0, 0})),
			err: "export 0: name of 20 bytes declared in the 8 bytes left in the section"},
		{name: "truncated section", bin: module(types(fn(nil)), funcs(0), exports(exp("_start", kindFunc, 0)))[:25],
			err: "export section, byte 25: module ends within the section's 10 bytes, after 5: unexpected EOF"},
		{name: "truncated custom", bin: module(custom("name", 1, 2, 3))[:13], err: "custom section, byte 13: module ends within the section's 8 bytes, after 3: unexpected EOF"},
		{name: "truncated section size", bin: cat([]byte(header), []byte{secType, 0x80}),
			err: "type section, byte 10: module ends within the section size: unexpected EOF"},
	}
}

func TestReadExports(t *testing.T) {
	rt := wazeroRuntime(t)
	for _, tc := range readCases() {
		t.Run(tc.name, func(t *testing.T) {
			e, err := ReadExports(bytes.NewReader(tc.bin))
			if tc.err != "" {
				var fe *FormatError
				if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.As(err, &fe) {
					t.Fatalf("ReadExports: got error %v (%T), want a FormatError containing %q", err, err, tc.err)
				}
				// What wazero compiles and ReadExports rejects must be left
				// to the compiler (ErrUnsupported); the reverse may be either.
				if _, werr := wazeroExports(rt, tc.bin); (werr == nil) != tc.stricter || tc.stricter && !stricterThanWazero(err) {
					t.Errorf("wazero's error: %v; stricter: %v", werr, tc.stricter)
				}
				return
			}
			if err != nil {
				t.Fatalf("ReadExports: %v", err)
			}
			for fn, want := range tc.entry {
				err := e.CheckEntry(fn)
				if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
					t.Errorf("CheckEntry(%q) = %v, want %q", fn, err, want)
				}
			}
			if tc.funcs != nil {
				got := collect(e)
				if fmt.Sprint(got) != fmt.Sprint(tc.funcs) {
					t.Errorf("exported functions:\n got %v\nwant %v", got, tc.funcs)
				}
				for name, want := range tc.funcs {
					got, ok := e.Func(name)
					if !ok || fmt.Sprint(got) != fmt.Sprint(want) {
						t.Errorf("Func(%q) = %v, %v; want %v", name, got, ok, want)
					}
				}
			}
			if err := crossCheck(t, rt, tc.bin); err != nil {
				t.Logf("not compared with wazero: %v", err)
			}
		})
	}
}

// TestReaders checks that ReadExports reads the same from any reader: one
// that is an io.ByteReader, one that is not, one that returns a byte at a
// time, and one that fails.
func TestReaders(t *testing.T) {
	for _, tc := range readCases() {
		want, wantErr := ReadExports(bytes.NewReader(tc.bin))
		for name, r := range map[string]io.Reader{
			"bufio":      bufio.NewReader(bytes.NewReader(tc.bin)),
			"reader":     struct{ io.Reader }{bytes.NewReader(tc.bin)},
			"one byte":   iotest.OneByteReader(bytes.NewReader(tc.bin)),
			"data error": iotest.DataErrReader(bytes.NewReader(tc.bin)),
		} {
			got, err := ReadExports(r)
			if fmt.Sprint(err) != fmt.Sprint(wantErr) || fmt.Sprint(collect(got)) != fmt.Sprint(collect(want)) {
				t.Errorf("%s, %s: got %v, %v; want %v, %v", tc.name, name, collect(got), err, collect(want), wantErr)
			}
		}
	}
	failure := errors.New("disk on fire")
	bin := module(types(fn(nil)), funcs(0), exports(exp("_start", kindFunc, 0)))
	for n := range len(bin) {
		r := io.MultiReader(bytes.NewReader(bin[:n]), iotest.ErrReader(failure))
		_, err := ReadExports(r)
		var fe *FormatError
		if !errors.Is(err, failure) || errors.As(err, &fe) {
			t.Errorf("failure after %d bytes: got %v, want %v, not a FormatError", n, err, failure)
		}
	}
}

// TestTruncated checks that a module cut anywhere fails as truncated, but
// at the end of a section, where it is a shorter module, and past where
// ReadExports stops reading.
func TestTruncated(t *testing.T) {
	for _, tc := range readCases() {
		if tc.err != "" {
			continue
		}
		full, err := ReadExports(bytes.NewReader(tc.bin))
		if err != nil {
			t.Fatal(err)
		}
		ends := sectionEnds(t, tc.bin)
		last := stopsAt(t, tc.bin)
		for n := range len(tc.bin) {
			for _, r := range []io.Reader{bytes.NewReader(tc.bin[:n]), iotest.OneByteReader(bytes.NewReader(tc.bin[:n]))} {
				e, err := ReadExports(r)
				switch {
				case n >= last:
					if err != nil || fmt.Sprint(collect(e)) != fmt.Sprint(collect(full)) {
						t.Errorf("%s cut after %d bytes (past where reading stops, %d): %v", tc.name, n, last, err)
					}
				case n == len(header) || slices.Contains(ends, n):
					if err != nil || e.NumFuncs() != 0 {
						t.Errorf("%s cut after %d bytes, at the end of a section before the exports: got %v, %d functions", tc.name, n, err, e.NumFuncs())
					}
				case !errors.Is(err, io.ErrUnexpectedEOF):
					t.Errorf("%s cut after %d bytes: got %v, want a truncated module", tc.name, n, err)
				}
			}
		}
	}
}

// countingReader counts the bytes read from it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// TestStopsAfterExports checks that ReadExports reads nothing past the
// export section, however much follows it.
func TestStopsAfterExports(t *testing.T) {
	body := cat(leb(1), leb(1<<20+2), []byte{0}, bytes.Repeat([]byte{0x01}, 1<<20), []byte{0x0B}) // one function: 1 MiB of nops
	bin := module(custom("x", 1, 2), types(fn(nil)), funcs(0), exports(exp("_start", kindFunc, 0)), custom("after"),
		section(secCode, body), section(secData, vec(cat([]byte{1}, str(strings.Repeat("d", 1<<20))))))
	end := exportEnd(t, bin)
	for name, r := range map[string]func(io.Reader) io.Reader{
		"byte reader": func(r io.Reader) io.Reader { return bufio.NewReaderSize(r, 16) },
		"reader":      func(r io.Reader) io.Reader { return r },
	} {
		c := &countingReader{r: bytes.NewReader(bin)}
		e, err := ReadExports(r(c))
		if err != nil {
			t.Fatal(err)
		}
		if err := e.CheckEntry("_start"); err != nil {
			t.Fatal(err)
		}
		if name == "reader" && c.n != end || c.n > end+16 {
			t.Errorf("%s: read %d bytes of %d; the export section ends at %d", name, c.n, len(bin), end)
		}
	}
	// Without an export section, ReadExports reads the header of the
	// section after, but not its body.
	bin = module(types(fn(nil)), funcs(0), section(secCode, body))
	c := &countingReader{r: bytes.NewReader(bin)}
	if _, err := ReadExports(struct{ io.Reader }{c}); err != nil {
		t.Fatal(err)
	}
	if end := len(bin) - len(body) - len(leb(uint32(len(body)))); c.n != end {
		t.Errorf("read %d bytes of %d; the code section starts at %d", c.n, len(bin), end-1)
	}
}

// allocated returns the bytes allocated by f, on average over runs.
func allocated(runs int, f func()) uint64 {
	var before, after runtime.MemStats
	f()
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range runs {
		f()
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / uint64(runs)
}

// TestHugeCounts checks that counts and lengths a module declares, but
// does not hold, fail at once without allocating for them.
func TestHugeCounts(t *testing.T) {
	const huge = 1<<32 - 1
	for _, tc := range []struct {
		name string
		bin  []byte
		err  string
	}{
		{"types", module(section(secType, leb(huge), fn(nil), fn(nil))), "4294967295 types declared in the 6 bytes left"},
		{"parameters", module(section(secType, leb(1), []byte{0x60}, leb(huge-15), []byte{0x7F, 0})), "4294967280 parameters declared in the 2 bytes left"},
		{"results", module(section(secType, leb(1), []byte{0x60, 0}, leb(1<<31), []byte{0x7F})), "2147483648 results declared in the 1 bytes left"},
		{"imports", module(types(fn(nil)), section(secImport, leb(huge), importFunc("a", "b", 0))), "4294967295 imports declared"},
		{"import name", module(section(secImport, leb(1), leb(huge), []byte("abc"))), "name of 4294967295 bytes declared in the 3 bytes left"},
		{"functions", module(types(fn(nil)), section(secFunction, leb(huge), leb(0))), "4294967295 functions declared in the 1 bytes left"},
		{"exports", module(types(fn(nil)), funcs(0), section(secExport, leb(1<<30), exp("a", kindFunc, 0))), "1073741824 exports declared in the 4 bytes left"},
		{"section", cat([]byte(header), []byte{secType}, leb(huge), fn(nil)), "4294967295 more bytes would make the module larger than 536870912 bytes"},
		{"custom section", cat([]byte(header), []byte{secCustom}, leb(MaxSize), str("x")), "module larger than"},
		{"section not there", cat([]byte(header), []byte{secExport}, leb(MaxSize-100), vec()), "module ends within the section's 536870812 bytes, after 1"},
		{"custom section not there", cat([]byte(header), []byte{secCustom}, leb(MaxSize-100), str("x")), "module ends within"},
	} {
		var err error
		n := allocated(100, func() { _, err = ReadExports(bytes.NewReader(tc.bin)) })
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: got %v, want %q", tc.name, err, tc.err)
		}
		// A section that declares more than firstRead bytes gets
		// firstRead before ReadExports knows whether they are there.
		budget := uint64(1024)
		if strings.HasPrefix(tc.name, "section not there") {
			budget += firstRead
		}
		if n > budget {
			t.Errorf("%s: ReadExports allocates %d bytes", tc.name, n)
		}
		if allocs := testing.AllocsPerRun(100, func() { _, _ = ReadExports(bytes.NewReader(tc.bin)) }); allocs > 16 {
			t.Errorf("%s: ReadExports allocates %v times", tc.name, allocs)
		}
		t.Logf("%s: %d bytes", tc.name, n)
	}
}

// TestMemory checks that what ReadExports keeps of large sections is a
// small multiple of their size.
func TestMemory(t *testing.T) {
	const n = 100_000
	var ts, ex [][]byte
	var fs []uint32
	for i := range n {
		ts = append(ts, fn(nil)) // the smallest type there is
		fs = append(fs, uint32(i))
		ex = append(ex, exp(fmt.Sprint(i), kindFunc, uint32(i)))
	}
	bin := module(types(ts...), funcs(fs...), exports(ex...))
	var e *Exports
	got := allocated(3, func() { e, _ = ReadExports(bytes.NewReader(bin)) })
	if e.NumFuncs() != n {
		t.Fatalf("%d functions, want %d", e.NumFuncs(), n)
	}
	if err := e.CheckEntry("99999"); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d bytes allocated to read %d bytes", got, len(bin))
	if got > 4*uint64(len(bin)) {
		t.Errorf("%d bytes allocated to read %d bytes", got, len(bin))
	}
}

// TestInitialMemory: every memory's declared minimum counts, imported or
// defined, exported or not.
func TestInitialMemory(t *testing.T) {
	memories := func(limits ...[]byte) []byte { return section(secMemory, vec(limits...)) }
	tests := []struct {
		name string
		bin  []byte
		want uint64 // pages
		err  string
	}{
		{"no memory", module(types(fn(nil)), funcs(0), exports(exp("_start", kindFunc, 0)), code(1)), 0, ""},
		{"exported", module(types(fn(nil)), funcs(0), memories([]byte{0x00, 0x10}), exports(exp("_start", kindFunc, 0), exp("memory", kindMemory, 0)), code(1)), 16, ""},
		{"not exported, 4 GiB", module(types(fn(nil)), funcs(0), memories(cat([]byte{0x00}, leb(65536))), exports(exp("_start", kindFunc, 0)), code(1)), 65536, ""},
		{"with a maximum", module(memories(cat([]byte{0x01}, leb(3), leb(10)))), 3, ""},
		{"imported and defined", module(imports(cat(str("env"), str("mem"), []byte{kindMemory, 0x00, 0x05})), memories([]byte{0x00, 0x02})), 7, ""},
		{"two defined (multi-memory)", module(memories([]byte{0x00, 0x01}, []byte{0x01, 0x02, 0x03})), 3, ""},
		{"shared", module(memories(cat([]byte{0x03}, leb(4), leb(8)))), 4, ""},
		{"unknown flag", module(memories([]byte{0x08, 0x01})), 0, "memory 0 limits: unknown flag 0x08"},
		{"truncated", module(section(secMemory, leb(2), []byte{0x00, 0x01})), 0, "memory section"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := ReadExports(bytes.NewReader(tt.bin))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ReadExports: %v, want an error containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := e.InitialMemory(); got != tt.want*PageSize {
				t.Errorf("InitialMemory = %d, want %d pages (%d)", got, tt.want, tt.want*PageSize)
			}
		})
	}
}

// TestSectionBound: a section ReadExports would decode that is larger than
// MaxSectionRead is left to the compiler, and costs no more than a read.
func TestSectionBound(t *testing.T) {
	var ex [][]byte
	for i := range 150_000 {
		ex = append(ex, exp(fmt.Sprintf("f%06d", i), kindFunc, 0))
	}
	bin := module(types(fn(nil)), funcs(0), exports(ex...), code(1))
	var err error
	got := allocated(3, func() { _, err = ReadExports(bytes.NewReader(bin)) })
	var fe *FormatError
	if !errors.Is(err, ErrUnsupported) || !errors.As(err, &fe) || !strings.Contains(err.Error(), "export section") {
		t.Fatalf("ReadExports of a %d-byte module with a large export section: %v, want ErrUnsupported", len(bin), err)
	}
	if got > 256<<10 {
		t.Errorf("ReadExports allocated %d bytes to refuse a large section", got)
	}
}
