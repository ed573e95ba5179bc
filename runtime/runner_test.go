package runtime

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero/experimental/sysfs"
	"github.com/tetratelabs/wazero/sys"
)

// module assembles a Wasm module: types () -> () and (i32) -> (), an import
// of wasi_snapshot_preview1.proc_exit, and one exported function (index 1)
// with the given body.
func module(export string, body ...byte) []byte {
	sec := func(id byte, content ...byte) []byte { return append([]byte{id, byte(len(content))}, content...) }
	str := func(s string) []byte { return append([]byte{byte(len(s))}, s...) }
	var imp []byte
	imp = append(imp, 1)
	imp = append(imp, str("wasi_snapshot_preview1")...)
	imp = append(imp, str("proc_exit")...)
	imp = append(imp, 0, 1)
	exp := append([]byte{1}, str(export)...)
	exp = append(exp, 0, 1)
	fn := append([]byte{0}, append(body, 0x0b)...)
	code := append([]byte{1, byte(len(fn))}, fn...)
	var m []byte
	m = append(m, 0, 'a', 's', 'm', 1, 0, 0, 0)
	m = append(m, sec(1, 2, 0x60, 0, 0, 0x60, 1, 0x7f, 0)...)
	m = append(m, sec(2, imp...)...)
	m = append(m, sec(3, 1, 0)...)
	m = append(m, sec(7, exp...)...)
	m = append(m, sec(10, code...)...)
	return m
}

var (
	exit7       = module("_start", 0x41, 7, 0x10, 0) // i32.const 7; call proc_exit
	unreachable = module("_start", 0x00)
	returns     = module("_start")
	other       = module("other")
)

func TestRun(t *testing.T) {
	tests := []struct {
		name       string
		bin        []byte
		fn         string
		want       int
		wantStderr string
	}{
		{"returns", returns, "_start", 0, ""},
		{"proc_exit", exit7, "_start", 7, ""},
		{"trap", unreachable, "_start", ExitTrap, "unreachable"},
		{"no _start", other, "_start", ExitCannotRun, `no exported function "_start"`},
		{"other entry", other, "other", 0, ""},
		{"corrupt", []byte("\x00asm\x01\x00\x00\x00\x01\xff"), "_start", ExitCannotRun, "/mod.wasm"},
	}
	deny, err := NewDenylist(strings.NewReader(""))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "mod.wasm"), tt.bin, 0o644); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			got := Run(context.Background(), &Config{Module: "/mod.wasm", Func: tt.fn, Args: []string{"mod"}},
				NewConfinedFS(sysfs.DirFS(dir), deny), Stdio{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr})
			if got != tt.want {
				t.Errorf("status %d, want %d (stderr %q)", got, tt.want, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr %q, want %q", stderr.String(), tt.wantStderr)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	for _, tt := range []struct {
		name    string
		bin     []byte
		fn      string
		wantErr string
	}{
		{"valid", exit7, "_start", ""},
		{"missing export", exit7, "nope", `no exported function "nope"`},
		{"corrupt", []byte("\x00asm\x01\x00\x00\x00\x0a\xff"), "_start", "invalid module"},
		{"truncated", []byte("\x00asm"), "_start", "invalid module"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(context.Background(), tt.bin, tt.fn)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("Check: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("Check = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestExitStatus(t *testing.T) {
	for _, tt := range []struct {
		err     error
		want    int
		wantMsg string
	}{
		{nil, 0, ""},
		{sys.NewExitError(0), 0, ""},
		{sys.NewExitError(42), 42, ""},
		{sys.NewExitError(255), 255, ""},
		{sys.NewExitError(256), ExitMax, ""},
		{sys.NewExitError(1 << 31), ExitMax, ""},
		{errors.New("wasm error: unreachable"), ExitTrap, "unreachable"},
	} {
		got, msg := ExitStatus(tt.err)
		if got != tt.want || !strings.Contains(msg, tt.wantMsg) || (tt.wantMsg == "" && msg != "") {
			t.Errorf("ExitStatus(%v) = %d, %q; want %d, %q", tt.err, got, msg, tt.want, tt.wantMsg)
		}
	}
}

func TestConfig(t *testing.T) {
	in := &Config{Module: "/m.wasm", Func: "_start", Args: []string{"m", "a b"}, Env: []string{"A=1", "PWD=/"}}
	var buf bytes.Buffer
	if err := in.Encode(&buf); err != nil {
		t.Fatal(err)
	}
	out, err := DecodeConfig(&buf)
	if err != nil || out.Module != in.Module || strings.Join(out.Args, "|") != "m|a b" || strings.Join(out.Env, "|") != "A=1|PWD=/" {
		t.Fatalf("round trip: %+v, %v", out, err)
	}
	if _, err := DecodeConfig(strings.NewReader(`{"func":"_start"}`)); err == nil {
		t.Error("a config without a module was accepted")
	}
}
