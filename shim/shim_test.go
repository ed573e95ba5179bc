package shim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/runner"
	"github.com/containerd-shim-wasm/containerd-shim-wasm/oci"
)

func TestRuncOptions(t *testing.T) {
	file := filepath.Join(t.TempDir(), "opts.toml")
	if err := os.WriteFile(file, []byte("Root = \"/run/from-file\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		in      any
		want    *runcoptions.Options
		wantErr string
	}{
		{name: "none", in: nil, want: &runcoptions.Options{}},
		{name: "runc options", in: &runcoptions.Options{BinaryName: "crun", Root: "/r"}, want: &runcoptions.Options{BinaryName: "crun", Root: "/r"}},
		{name: "CRI body", in: &runtimeoptions.Options{ConfigBody: []byte("BinaryName = \"/usr/sbin/runc\"\nSystemdCgroup = true\nRoot = \"/run/x\"\n")},
			want: &runcoptions.Options{BinaryName: "/usr/sbin/runc", SystemdCgroup: true, Root: "/run/x"}},
		{name: "ctr file", in: &runtimeoptions.Options{ConfigPath: file}, want: &runcoptions.Options{Root: "/run/from-file"}},
		{name: "unknown key", in: &runtimeoptions.Options{ConfigBody: []byte("Bogus = 1\n")}, wantErr: "Bogus"},
		{name: "bad TOML", in: &runtimeoptions.Options{ConfigBody: []byte("Root = \n")}, wantErr: "runtime options"},
		{name: "missing file", in: &runtimeoptions.Options{ConfigPath: "/nonexistent/opts.toml"}, wantErr: "/nonexistent/opts.toml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var a typeurl.Any
			if tt.in != nil {
				var err error
				if a, err = typeurl.MarshalAnyToProto(tt.in); err != nil {
					t.Fatal(err)
				}
			}
			got, err := runcOptions(a)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				if tt.name == "unknown key" && !errdefs.IsInvalidArgument(err) {
					t.Errorf("err %v is not InvalidArgument", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.BinaryName != tt.want.BinaryName || got.Root != tt.want.Root || got.SystemdCgroup != tt.want.SystemdCgroup {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestGuestEnv(t *testing.T) {
	got := guestEnv(&specs.Process{Env: []string{"A=1", "PWD=/wrong", "B="}, Cwd: "/work"})
	if want := "A=1|B=|PWD=/work"; strings.Join(got, "|") != want {
		t.Errorf("guestEnv = %q, want %q", strings.Join(got, "|"), want)
	}
	if got := guestEnv(&specs.Process{}); strings.Join(got, "|") != "PWD=/" {
		t.Errorf("guestEnv with no cwd = %q", got)
	}
}

func TestWrongStateError(t *testing.T) {
	for _, tt := range []struct {
		in   error
		want func(error) bool
	}{
		{errgrpc.ToGRPC(errors.New("cannot delete a running process")), errdefs.IsFailedPrecondition},
		{errgrpc.ToGRPC(errors.New("cannot start a stopped process")), errdefs.IsFailedPrecondition},
		{errgrpc.ToGRPC(fmt.Errorf("cannot kill a deleted process: %w", errdefs.ErrNotFound)), errdefs.IsNotFound},
		{errgrpc.ToGRPC(errors.New("runc failed")), errdefs.IsUnknown},
	} {
		if got := errgrpc.ToNative(wrongStateError(tt.in)); !tt.want(got) {
			t.Errorf("wrongStateError(%v) = %v", tt.in, got)
		}
	}
	if wrongStateError(nil) != nil {
		t.Error("nil became an error")
	}
}

func TestTakeListenEnv(t *testing.T) {
	env, listen, err := takeListenEnv([]string{"A=1", "WASM_LISTEN=:8080", "PWD=/"})
	if err != nil || strings.Join(env, "|") != "A=1|PWD=/" || len(listen) != 1 || listen[0].Port != 8080 {
		t.Errorf("takeListenEnv = %q, %v, %v", env, listen, err)
	}
	if env, listen, err := takeListenEnv([]string{"A=1"}); err != nil || len(listen) != 0 || strings.Join(env, "|") != "A=1" {
		t.Errorf("without listeners: %q, %v, %v", env, listen, err)
	}
	if _, _, err := takeListenEnv([]string{"WASM_LISTEN=nope"}); err == nil {
		t.Error("a bad WASM_LISTEN was accepted")
	}
}

// TestExecGetsNoListeners: an exec gets the container's environment from
// containerd, WASM_LISTEN included; the listeners are the container's
// process's, so the exec's runner opens none (it would fail with "address
// already in use"), and the guest does not see the variable.
func TestExecGetsNoListeners(t *testing.T) {
	ep := &oci.Entrypoint{Arg0: "/app.wasm", Path: "/app.wasm", Func: "_start", Kind: oci.Wasm}
	for _, tt := range []struct {
		name string
		exec bool
		env  string
		want int // listeners
	}{
		{"container", false, "WASM_LISTEN=:8080", 1},
		{"exec", true, "WASM_LISTEN=:8080", 0},
		{"exec, a value the container would refuse", true, "WASM_LISTEN=nope", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := &specs.Process{Args: []string{"/app.wasm"}, Env: []string{"A=1", tt.env}, Cwd: "/"}
			cfg, err := toRunner(ep, p, tt.exec)
			if err != nil {
				t.Fatal(err)
			}
			if len(cfg.Listen) != tt.want || strings.Join(cfg.Env, "|") != "A=1|PWD=/" || cfg.Exec != tt.exec {
				t.Errorf("listeners %v, guest env %q, exec %v", cfg.Listen, cfg.Env, cfg.Exec)
			}
		})
	}
}

// TestWriteRunnerSpec: a Wasm entrypoint becomes the runner, mounted on the
// container's /dev, with an empty environment; a spec without a /dev tmpfs
// is refused with a clear error and not written.
func TestWriteRunnerSpec(t *testing.T) {
	ep := &oci.Entrypoint{Arg0: "/app.wasm", Path: "/app.wasm", Func: "_start", Kind: oci.Wasm}
	spec := func(mounts ...specs.Mount) *specs.Spec {
		return &specs.Spec{
			Root:    &specs.Root{Path: "rootfs"},
			Process: &specs.Process{Args: []string{"/app.wasm", "a b"}, Env: []string{"GOGC=1", "WASM_LISTEN=:8080"}, Cwd: "/w"},
			Mounts:  mounts,
		}
	}
	bundle := t.TempDir()
	// What prepareBundle does once the checks have passed.
	prepare := func(s *specs.Spec) (*runner.Config, error) {
		cfg, err := toRunner(ep, s.Process, false)
		if err != nil {
			return nil, err
		}
		return cfg, writeRunnerSpec(bundle, s, cfg, nil, nil)
	}
	bad := spec(specs.Mount{Destination: "/proc", Type: "proc"})
	if err := writeRunnerSpec(bundle, bad, &runner.Config{}, nil, nil); err == nil || !strings.Contains(err.Error(), "no tmpfs on /dev") || !errdefs.IsInvalidArgument(err) {
		t.Errorf("spec without /dev tmpfs: %v", err)
	}
	if _, err := os.Stat(filepath.Join(bundle, oci.SpecFile)); err == nil || bad.Process.Args[0] != "/app.wasm" {
		t.Error("a refused spec was rewritten")
	}

	good := spec(specs.Mount{Destination: "/dev", Type: "tmpfs"})
	cfg, err := prepare(good)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(cfg.Args, "|") != "/app.wasm|a b" || strings.Join(cfg.Env, "|") != "GOGC=1|PWD=/w" || len(cfg.Listen) != 1 {
		t.Errorf("runner config %+v", cfg)
	}
	written, err := oci.ReadSpec(bundle)
	if err != nil {
		t.Fatal(err)
	}
	runnerMount, cgroup := written.Mounts[len(written.Mounts)-2], written.Mounts[len(written.Mounts)-1]
	if written.Process.Args[0] != "/dev/.containerd-shim-wasm-runner" || len(written.Process.Env) != 0 ||
		runnerMount.Destination != "/dev/.containerd-shim-wasm-runner" || !slices.Contains(runnerMount.Options, "ro") {
		t.Errorf("rewritten spec: args %q env %q runner mount %+v", written.Process.Args, written.Process.Env, runnerMount)
	}
	// The runner reads its memory limit through a cgroup mount of its own,
	// unless the spec has one (CRI's).
	if cgroup.Destination != runner.CgroupPath || cgroup.Type != "cgroup" || !slices.Contains(cgroup.Options, "ro") {
		t.Errorf("cgroup mount %+v", cgroup)
	}
	withCgroups := spec(specs.Mount{Destination: "/dev", Type: "tmpfs"}, specs.Mount{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup"})
	if _, err := prepare(withCgroups); err != nil {
		t.Fatal(err)
	}
	if written, _ := oci.ReadSpec(bundle); slices.ContainsFunc(written.Mounts, func(m specs.Mount) bool { return m.Destination == runner.CgroupPath }) {
		t.Error("a second cgroup mount for a spec that has one")
	}
	bad = spec(specs.Mount{Destination: "/dev", Type: "tmpfs"})
	bad.Process.Env = []string{"WASM_LISTEN=nope"}
	if _, err := prepare(bad); err == nil || !errdefs.IsInvalidArgument(err) {
		t.Errorf("bad WASM_LISTEN: %v", err)
	}
}

// TestCheckEntry: the entry function is checked from the export section
// before any compile; what the reader leaves to the compiler passes.
func TestCheckEntry(t *testing.T) {
	const (
		header  = "\x00asm\x01\x00\x00\x00"
		typ     = "\x01\x04\x01\x60\x00\x00" // one type: () -> ()
		fn      = "\x03\x02\x01\x00"         // one function of type 0
		code    = "\x0a\x04\x01\x02\x00\x0b" // its body: end
		start   = "\x07\x0a\x01\x06_start\x00\x00"
		main    = "\x07\x08\x01\x04main\x00\x00"
		exnType = "\x01\x05\x01\x60\x00\x01\x69" // () -> (exnref): a later proposal
	)
	for _, tt := range []struct {
		name, module, fn, want string
	}{
		{"entry", header + typ + fn + start + code, "_start", ""},
		{"no _start", header + typ + fn + main + code, "_start", `no exported function "_start" (exports: main)`},
		{"other entry", header + typ + fn + main + code, "main", ""},
		{"corrupt", header + "\x01\xff", "_start", "invalid module"},
		{"not Wasm", "#!/bin/sh\n", "_start", "invalid module"},
		{"later proposal", header + exnType + fn + start + code, "_start", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "m.wasm")
			os.WriteFile(p, []byte(tt.module), 0o644)
			err := checkEntry(context.Background(), &oci.Entrypoint{Path: "/m.wasm", HostPath: p, Func: tt.fn})
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "/m.wasm") || !errdefs.IsInvalidArgument(err) {
				t.Errorf("got %v, want an invalid argument naming /m.wasm and saying %q", err, tt.want)
			}
		})
	}
	err := checkEntry(context.Background(), &oci.Entrypoint{Path: "/gone.wasm", HostPath: filepath.Join(t.TempDir(), "gone"), Func: "_start"})
	if err == nil || !strings.Contains(err.Error(), "/gone.wasm") {
		t.Errorf("a missing module: %v", err)
	}
}
