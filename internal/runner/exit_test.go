package runner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/wasmmod"
	"github.com/tetratelabs/wazero/sys"
	"golang.org/x/sys/unix"
)

// Hand-assembled WebAssembly: wasmMod encodes a module in the binary format
// (https://webassembly.github.io/spec/core/binary/), so that the tests need
// no assembler.

const (
	wI32 = 0x7f
	wI64 = 0x7e
)

type wasmImport struct {
	module, name    string
	params, results []byte
}

type wasmFunc struct {
	export          string // "" if not exported
	params, results []byte
	body            []byte // without the final "end"
}

type wasmMod struct {
	imports []wasmImport
	funcs   []wasmFunc
	memory  bool   // one page of memory, exported as "memory"
	data    []byte // an active data segment at offset 0
}

func uleb(v uint64) []byte {
	var out []byte
	for {
		b := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			out = append(out, b|0x80)
			continue
		}
		return append(out, b)
	}
}

func sleb(v int64) []byte {
	var out []byte
	for {
		b := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && b&0x40 == 0) || (v == -1 && b&0x40 != 0) {
			return append(out, b)
		}
		out = append(out, b|0x80)
	}
}

func wname(s string) []byte { return append(uleb(uint64(len(s))), s...) }

func wvec(n int, items ...[]byte) []byte {
	out := uleb(uint64(n))
	for _, it := range items {
		out = append(out, it...)
	}
	return out
}

func wsection(id byte, content []byte) []byte {
	return append(append([]byte{id}, uleb(uint64(len(content)))...), content...)
}

func functype(params, results []byte) []byte {
	out := []byte{0x60}
	out = append(out, wvec(len(params), params)...)
	return append(out, wvec(len(results), results)...)
}

func (m wasmMod) bytes() []byte {
	var types, imports, funcs, exports, code [][]byte
	for i, im := range m.imports {
		types = append(types, functype(im.params, im.results))
		imp := append(wname(im.module), wname(im.name)...)
		imports = append(imports, append(append(imp, 0x00), uleb(uint64(i))...))
	}
	for i, f := range m.funcs {
		ti := len(m.imports) + i
		types = append(types, functype(f.params, f.results))
		funcs = append(funcs, uleb(uint64(ti)))
		if f.export != "" {
			exports = append(exports, append(append(wname(f.export), 0x00), uleb(uint64(ti))...))
		}
		body := append([]byte{0x00}, f.body...) // no locals
		body = append(body, 0x0b)
		code = append(code, append(uleb(uint64(len(body))), body...))
	}
	if m.memory {
		exports = append(exports, append(wname("memory"), 0x02, 0x00))
	}
	out := []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00}
	out = append(out, wsection(1, wvec(len(types), types...))...)
	if len(imports) > 0 {
		out = append(out, wsection(2, wvec(len(imports), imports...))...)
	}
	out = append(out, wsection(3, wvec(len(funcs), funcs...))...)
	if m.memory {
		out = append(out, wsection(5, []byte{0x01, 0x00, 0x01})...)
	}
	out = append(out, wsection(7, wvec(len(exports), exports...))...)
	out = append(out, wsection(10, wvec(len(code), code...))...)
	if m.data != nil {
		seg := []byte{0x00, 0x41, 0x00, 0x0b} // memory 0, offset i32.const 0
		seg = append(seg, wvec(len(m.data), m.data)...)
		out = append(out, wsection(11, wvec(1, seg))...)
	}
	return out
}

// Instructions.
func i32c(v int32) []byte  { return append([]byte{0x41}, sleb(int64(v))...) }
func i64c(v int64) []byte  { return append([]byte{0x42}, sleb(v)...) }
func call(f uint32) []byte { return append([]byte{0x10}, uleb(uint64(f))...) }

var (
	opUnreachable = []byte{0x00}
	opDrop        = []byte{0x1a}
	opI32Load     = []byte{0x28, 0x02, 0x00}
)

func ins(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

var (
	impProcExit = wasmImport{"wasi_snapshot_preview1", "proc_exit", []byte{wI32}, nil}
	impFdWrite  = wasmImport{"wasi_snapshot_preview1", "fd_write", []byte{wI32, wI32, wI32, wI32}, []byte{wI32}}
	impArgsSize = wasmImport{"wasi_snapshot_preview1", "args_sizes_get", []byte{wI32, wI32}, []byte{wI32}}
	impEnvSize  = wasmImport{"wasi_snapshot_preview1", "environ_sizes_get", []byte{wI32, wI32}, []byte{wI32}}
	impPathOpen = wasmImport{"wasi_snapshot_preview1", "path_open",
		[]byte{wI32, wI32, wI32, wI32, wI32, wI64, wI64, wI32, wI32}, []byte{wI32}}
)

// exitWith is a module whose _start calls proc_exit(code).
func exitWith(code int32) []byte {
	return wasmMod{
		imports: []wasmImport{impProcExit},
		funcs:   []wasmFunc{{export: "_start", body: ins(i32c(code), call(0))}},
	}.bytes()
}

// exitWithSize is a module whose _start calls a WASI "sizes_get" function
// and exits with the count it returned.
func exitWithSize(get wasmImport) []byte {
	return wasmMod{
		imports: []wasmImport{impProcExit, get},
		funcs: []wasmFunc{{export: "_start", body: ins(
			i32c(0), i32c(4), call(1), opDrop, // count at 0, size at 4
			i32c(0), opI32Load, call(0),
		)}},
		memory: true,
	}.bytes()
}

// openAndExit is a module whose _start opens path in the preopened "/" (fd
// 3), following links, and exits with the WASI errno.
func openAndExit(path string) []byte {
	data := make([]byte, 64)
	data = append(data, path...)
	return wasmMod{
		imports: []wasmImport{impProcExit, impPathOpen},
		funcs: []wasmFunc{{export: "_start", body: ins(
			i32c(3), i32c(1), i32c(64), i32c(int32(len(path))), i32c(0), // fd, lookup flags (follow), path, oflags
			i64c(2), i64c(0), i32c(0), i32c(0), // rights (fd_read), inherited rights, fdflags, new fd at 0
			call(1), call(0),
		)}},
		memory: true,
		data:   data,
	}.bytes()
}

var (
	modReturns = wasmMod{funcs: []wasmFunc{{export: "_start"}}}.bytes()
	modTrap    = wasmMod{funcs: []wasmFunc{{export: "_start", body: opUnreachable}}}.bytes()
	modNoStart = wasmMod{imports: []wasmImport{impProcExit}, funcs: []wasmFunc{
		{export: "main", body: ins(i32c(3), call(0))},
		{body: ins(i32c(4), call(0))}, // not exported
	}}.bytes()
	modParams = wasmMod{funcs: []wasmFunc{
		{export: "_start", params: []byte{wI32, wI64}},
		{export: "results", results: []byte{wI32}, body: i32c(5)},
	}}.bytes()
	modHello = wasmMod{
		imports: []wasmImport{impFdWrite},
		funcs: []wasmFunc{{export: "_start", body: ins(
			i32c(1), i32c(0), i32c(1), i32c(8), call(0), opDrop, // fd_write(stdout, iovs at 0, 1 iov, nwritten at 8)
			i32c(2), i32c(0), i32c(1), i32c(8), call(0), opDrop, // and the same to stderr
		)}},
		memory: true,
		// iov {ptr 16, len 3}, then "hi\n" at 16
		data: []byte{16, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 'h', 'i', '\n'},
	}.bytes()
	modCorrupt   = []byte("\x00asm\x01\x00\x00\x00\x01\x05\x01\x60\x00")
	modNotWasm   = []byte("#!/bin/sh\n")
	modBadMagic  = []byte("\x00asm\x02\x00\x00\x00")
	modUnlinked  = wasmMod{imports: []wasmImport{{"env", "missing", nil, nil}}, funcs: []wasmFunc{{export: "_start"}}}.bytes()
	modWrongSig  = wasmMod{imports: []wasmImport{{"wasi_snapshot_preview1", "proc_exit", []byte{wI64}, nil}}, funcs: []wasmFunc{{export: "_start"}}}.bytes()
	modTrapAfter = wasmMod{imports: []wasmImport{impFdWrite}, funcs: []wasmFunc{{export: "_start", body: ins(
		i32c(1), i32c(0), i32c(1), i32c(8), call(0), opDrop, opUnreachable,
	)}}, memory: true, data: []byte{16, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 'o', 'k', '\n'}}.bytes()
)

// runModule writes bin to mod.wasm in a temp dir (with extra files) and runs
// it as Run does in a container, with the dir as the guest's root.
func runModule(t *testing.T, bin []byte, cfg Config, deny *Denylist, setup func(dir string)) (int, string, string) {
	t.Helper()
	status, stdout, stderr, _ := runModuleReason(t, bin, cfg, deny, setup)
	return status, stdout, stderr
}

// runModuleReason is runModule, returning what the runner reported on its
// reason pipe too.
func runModuleReason(t *testing.T, bin []byte, cfg Config, deny *Denylist, setup func(dir string)) (int, string, string, string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "mod.wasm"), bin, 0o644); err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(dir)
	}
	if deny == nil {
		deny = NewDenylist(nil)
	}
	if cfg.Module == "" {
		cfg.Module = "/mod.wasm"
	}
	if cfg.Func == "" {
		cfg.Func = testEntryFunc
	}
	var stdout, stderr, reason bytes.Buffer
	re := runEnv{reason: &reason}
	if cfg.Trace {
		re.trace = &Trace{} // as Main does
	}
	status := run(context.Background(), &cfg, confined(t, dir, deny),
		Stdio{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr}, re)
	return status, stdout.String(), stderr.String(), reason.String()
}

// testEntryFunc is what the shim puts in Config.Func by default.
const testEntryFunc = "_start"

func TestRunModules(t *testing.T) {
	tests := []struct {
		name       string
		bin        []byte
		cfg        Config
		want       int
		wantStdout string
		wantStderr []string // substrings; nil for an empty stderr
	}{
		{name: "proc_exit 7", bin: exitWith(7), want: 7},
		{name: "proc_exit 0", bin: exitWith(0), want: 0},
		{name: "proc_exit 255", bin: exitWith(255), want: 255},
		{name: "proc_exit 256 is not wrapped to 0", bin: exitWith(256), want: ExitMax},
		{name: "proc_exit -1", bin: exitWith(-1), want: ExitMax},
		{name: "returns", bin: modReturns, want: 0},
		{name: "trap", bin: modTrap, want: ExitTrap, wantStderr: []string{"unreachable"}},
		{name: "output then trap", bin: modTrapAfter, want: ExitTrap, wantStdout: "ok\n", wantStderr: []string{"unreachable"}},
		{name: "stdout and stderr", bin: modHello, want: 0, wantStdout: "hi\n", wantStderr: []string{"hi\n"}},
		{name: "no _start", bin: modNoStart, want: ExitCannotRun, wantStderr: []string{`"_start"`, "/mod.wasm"}},
		{name: "other entry", bin: modNoStart, cfg: Config{Func: "main"}, want: 3},
		{name: "unexported function", bin: modNoStart, cfg: Config{Func: "1"}, want: ExitCannotRun, wantStderr: []string{`"1"`}},
		{name: "entry with parameters", bin: modParams, want: ExitCannotRun, wantStderr: []string{`"_start" has type (i32, i64) -> ()`, "takes no parameters and returns nothing"}},
		{name: "entry with results", bin: modParams, cfg: Config{Func: "results"}, want: ExitCannotRun, wantStderr: []string{`"results" has type () -> (i32)`}},
		{name: "corrupt", bin: modCorrupt, want: ExitCannotRun, wantStderr: []string{"/mod.wasm"}},
		{name: "not wasm", bin: modNotWasm, want: ExitCannotRun, wantStderr: []string{"/mod.wasm"}},
		{name: "bad version", bin: modBadMagic, want: ExitCannotRun, wantStderr: []string{"/mod.wasm"}},
		{name: "empty", bin: []byte{}, want: ExitCannotRun, wantStderr: []string{"/mod.wasm"}},
		{name: "unresolved import", bin: modUnlinked, want: ExitCannotRun, wantStderr: []string{"env", "/mod.wasm"}},
		{name: "WASI import of the wrong type", bin: modWrongSig, want: ExitCannotRun, wantStderr: []string{"proc_exit"}},
		{name: "missing module", bin: exitWith(7), cfg: Config{Module: "/nope.wasm"}, want: ExitCannotRun, wantStderr: []string{"/nope.wasm", "no such file"}},
		{name: "module path without slash", bin: exitWith(9), cfg: Config{Module: "mod.wasm"}, want: 9},
		{name: "module path with dots", bin: exitWith(10), cfg: Config{Module: "/x/../mod.wasm"}, want: 10},
		{name: "args", bin: exitWithSize(impArgsSize), cfg: Config{Args: []string{"mod.wasm", "a", "b c"}}, want: 3},
		{name: "no args", bin: exitWithSize(impArgsSize), want: 0},
		{name: "env", bin: exitWithSize(impEnvSize), cfg: Config{Env: []string{"A=1", "B=", "PWD=/"}}, want: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, stdout, stderr, reason := runModuleReason(t, tt.bin, tt.cfg, nil, nil)
			if status != tt.want {
				t.Errorf("status = %d, want %d (stderr %q)", status, tt.want, stderr)
			}
			// The shim's log gets the runner's reports, never the guest's
			// own output.
			if failed := status == ExitTrap || status == ExitCannotRun; failed != (reason != "") || !strings.HasSuffix(stderr, reason) {
				t.Errorf("reason %q (stderr %q), want the runner's report for status %d", reason, stderr, status)
			}
			for _, s := range tt.wantStderr {
				if (status == ExitTrap || status == ExitCannotRun) && !strings.Contains(reason, s) {
					t.Errorf("reason = %q, want it to contain %q", reason, s)
				}
			}
			if stdout != tt.wantStdout {
				t.Errorf("stdout = %q, want %q", stdout, tt.wantStdout)
			}
			if tt.wantStderr == nil && stderr != "" {
				t.Errorf("stderr = %q, want nothing", stderr)
			}
			for _, s := range tt.wantStderr {
				if !strings.Contains(stderr, s) {
					t.Errorf("stderr = %q, want it to contain %q", stderr, s)
				}
			}
		})
	}
}

// TestRunGuestFS checks that the guest sees the file system Run is given,
// with its Denylist: the module opens a path and exits with the WASI errno.
func TestRunGuestFS(t *testing.T) {
	const (
		errnoSuccess = 0
		errnoAcces   = 2
		errnoNoent   = 44
	)
	setup := func(dir string) {
		for name, data := range map[string]string{"ok.txt": "ok", "secret": "s"} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Symlink("/secret", filepath.Join(dir, "abs")); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("./secret", filepath.Join(dir, "rel")); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		path string
		want int
	}{
		{"ok.txt", errnoSuccess},
		{"mod.wasm", errnoSuccess},
		{"secret", errnoAcces},
		{"abs", errnoAcces},
		{"rel", errnoAcces},
		{"missing", errnoNoent},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			status, stderr := runDenyingSecret(t, openAndExit(tt.path), setup)
			if status != tt.want {
				t.Errorf("path_open(%q) errno = %d, want %d (stderr %q)", tt.path, status, tt.want, stderr)
			}
		})
	}
}

// runDenyingSecret runs bin as runModule does, in a root that setup fills
// and whose file "secret" is denied.
func runDenyingSecret(t *testing.T, bin []byte, setup func(dir string)) (int, string) {
	t.Helper()
	deny := NewDenylist(nil)
	status, _, stderr := runModule(t, bin, Config{}, deny, func(dir string) {
		setup(dir)
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(dir, "secret"), &st); err != nil {
			t.Fatal(err)
		}
		deny.DenyFile(st.Dev, st.Ino, "secret")
	})
	return status, stderr
}

// TestRunModuleTooLarge: the runner refuses a module over wasmmod.MaxSize
// (one swapped in after Create's check) before reading it.
func TestRunModuleTooLarge(t *testing.T) {
	status, _, stderr := runModule(t, exitWith(0), Config{Module: "/big.wasm"}, nil, func(dir string) {
		f, err := os.Create(filepath.Join(dir, "big.wasm"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := f.Truncate(wasmmod.MaxSize + 1); err != nil { // sparse: no disk used
			t.Fatal(err)
		}
	})
	if status != ExitCannotRun || !strings.Contains(stderr, "/big.wasm") || !strings.Contains(stderr, "more than the") {
		t.Errorf("status = %d, stderr = %q; want %d and the size refused", status, stderr, ExitCannotRun)
	}
}

// TestRunDeniedModule: the runner reads the module through the confined
// file system, so a module the guest may not read is not run.
func TestRunDeniedModule(t *testing.T) {
	deny := NewDenylist(nil)
	status, _, stderr := runModule(t, exitWith(0), Config{Module: "/link.wasm"}, deny, func(dir string) {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(dir, "mod.wasm"), &st); err != nil {
			t.Fatal(err)
		}
		deny.DenyFile(st.Dev, st.Ino, "module")
		if err := os.Symlink("mod.wasm", filepath.Join(dir, "link.wasm")); err != nil {
			t.Fatal(err)
		}
	})
	if status != ExitCannotRun || !strings.Contains(stderr, "permission denied") {
		t.Errorf("status = %d, stderr = %q; want %d and permission denied", status, stderr, ExitCannotRun)
	}
}

func TestCheckModules(t *testing.T) {
	tests := []struct {
		name    string
		bin     []byte
		fn      string
		wantErr []string // nil for no error
	}{
		{"valid", exitWith(1), "_start", nil},
		{"valid other entry", modNoStart, "main", nil},
		{"entry with results", modParams, "results", []string{`"results" has type () -> (i32)`, "returns nothing"}},
		{"missing func", modNoStart, "_start", []string{`no exported function "_start"`}},
		{"missing named func", exitWith(1), "run", []string{`"run"`}},
		{"memory is not a function", modHello, "memory", []string{`no exported function "memory"`}},
		{"func with parameters", modParams, "_start", []string{"(i32, i64) -> ()", `"_start"`}},
		{"corrupt", modCorrupt, "_start", []string{"invalid module"}},
		{"not wasm", modNotWasm, "_start", []string{"invalid module"}},
		{"empty", nil, "_start", []string{"invalid module"}},
		{"bad version", modBadMagic, "_start", []string{"invalid module"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(context.Background(), tt.bin, tt.fn)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Check succeeded, want an error mentioning %q", tt.wantErr)
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("Check error %q does not mention %q", err, s)
				}
			}
		})
	}
}

func TestExitStatusMapping(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		want    int
		wantMsg string // substring; "" for no message
	}{
		{"nil", nil, 0, ""},
		{"exit 0", sys.NewExitError(0), 0, ""},
		{"exit 1", sys.NewExitError(1), 1, ""},
		{"exit 42", sys.NewExitError(42), 42, ""},
		{"exit 255", sys.NewExitError(255), ExitMax, ""},
		{"exit 256", sys.NewExitError(256), ExitMax, ""},
		{"exit 257", sys.NewExitError(257), ExitMax, ""},
		{"exit 1<<31", sys.NewExitError(1 << 31), ExitMax, ""},
		{"exit max uint32", sys.NewExitError(^uint32(0)), ExitMax, ""},
		{"wrapped exit", fmt.Errorf("call: %w", sys.NewExitError(3)), 3, ""},
		{"trap", errors.New("wasm error: unreachable"), ExitTrap, "unreachable"},
		{"other trap", errors.New("wasm error: out of bounds memory access"), ExitTrap, "out of bounds"},
		{"canceled", fmt.Errorf("module closed: %w", context.Canceled), ExitTrap, "stopped"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, msg := ExitStatus(tt.err)
			if got != tt.want {
				t.Errorf("ExitStatus(%v) = %d, want %d", tt.err, got, tt.want)
			}
			if tt.wantMsg == "" && msg != "" {
				t.Errorf("message = %q, want none", msg)
			}
			if tt.wantMsg != "" && !strings.Contains(msg, tt.wantMsg) {
				t.Errorf("message = %q, want it to contain %q", msg, tt.wantMsg)
			}
		})
	}
	if ExitTrap != 128+6 || ExitMax != 255 {
		t.Errorf("ExitTrap = %d, ExitMax = %d; want 134 (128+SIGABRT) and 255", ExitTrap, ExitMax)
	}
}

func TestConfigEncodeDecode(t *testing.T) {
	in := &Config{
		Module: "/app/m.wasm",
		Func:   "main",
		Args:   []string{"m.wasm", "a b", "", "ü\n\"quoted\""},
		Env:    []string{"A=1", "B=", "PWD=/work", "X=a=b"},
	}
	var buf bytes.Buffer
	if err := in.Encode(&buf); err != nil {
		t.Fatal(err)
	}
	out, err := DecodeConfig(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatalf("DecodeConfig(%s): %v", buf.Bytes(), err)
	}
	if out.Module != in.Module || out.Func != in.Func ||
		strings.Join(out.Args, "\x00") != strings.Join(in.Args, "\x00") ||
		strings.Join(out.Env, "\x00") != strings.Join(in.Env, "\x00") {
		t.Errorf("round trip = %+v, want %+v", out, in)
	}

	for name, text := range map[string]string{
		"no module":    `{"func":"_start","args":["a"]}`,
		"empty module": `{"module":"","func":"_start"}`,
		"no func":      `{"module":"/m.wasm"}`,
		"empty":        ``,
		"not JSON":     `module=/m.wasm`,
		"wrong type":   `{"module":"/m.wasm","func":"_start","args":"a"}`,
		"null":         `null`,
	} {
		t.Run(name, func(t *testing.T) {
			if c, err := DecodeConfig(strings.NewReader(text)); err == nil {
				t.Errorf("DecodeConfig(%q) = %+v, want an error", text, c)
			}
		})
	}
}
