package wasmmod

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"
	"testing/iotest"
)

// FuzzReadExports checks that ReadExports never panics, that it reads the
// same through any reader, that the methods of what it returns agree and
// never panic, and that it agrees with wazero on what it accepts: it may
// accept modules that wazero rejects (it reads only their first sections),
// but not the reverse, but for the known cases of stricterThanWazero.
func FuzzReadExports(f *testing.F) {
	for _, tc := range readCases() {
		f.Add(tc.bin)
	}
	rt := wazeroRuntime(f)
	f.Fuzz(func(t *testing.T, bin []byte) {
		e, err := ReadExports(bytes.NewReader(bin))
		e1, err1 := ReadExports(iotest.OneByteReader(bytes.NewReader(bin)))
		if fmt.Sprint(err) != fmt.Sprint(err1) || fmt.Sprint(collect(e)) != fmt.Sprint(collect(e1)) {
			t.Fatalf("read a byte at a time: %v, %v; at once: %v, %v", collect(e1), err1, collect(e), err)
		}
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("not a FormatError: %v", err)
			}
		} else {
			n := 0
			for name, ft := range e.Funcs() {
				n++
				got, ok := e.Func(name)
				if !ok || !slices.Equal(got.Params, ft.Params) || !slices.Equal(got.Results, ft.Results) {
					t.Fatalf("Func(%q) = %v, %v; Funcs: %v", name, got, ok, ft)
				}
				err := e.CheckEntry(name)
				if entry := len(ft.Params) == 0 && len(ft.Results) == 0; entry != (err == nil) {
					t.Fatalf("CheckEntry(%q) = %v for %v", name, err, ft)
				}
			}
			if n != e.NumFuncs() {
				t.Fatalf("Funcs yields %d functions, NumFuncs says %d", n, e.NumFuncs())
			}
			_ = e.CheckEntry("_start")
			_ = e.CheckEntry("")
		}
		if safeForWazero(bin) {
			_ = crossCheck(t, rt, bin)
		}
	})
}

// maxWazeroCount bounds the integers in a module that the fuzz target gives
// wazero.
const maxWazeroCount = 1 << 16

// safeForWazero reports whether wazero can decode bin without exhausting
// memory. Wazero v1.12 allocates for the counts and lengths a module
// declares before it checks them against the bytes present (a vector of
// 2^32-1 exports takes a 20-byte module and hundreds of gigabytes), so the
// fuzz target gives it no module in which any 32-bit integer, wherever it
// starts, is larger than maxWazeroCount.
func safeForWazero(bin []byte) bool {
	for i := range bin {
		if v, _, err := decodeU32(bin[i:]); err == nil && v > maxWazeroCount {
			return false
		}
	}
	return true
}
