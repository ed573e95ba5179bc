package shim

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	"github.com/pelletier/go-toml/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// How FuzzParseOptions builds the runtime options from its input.
const (
	optsBody = iota // runtimeoptions.Options{ConfigBody: body}, as the CRI passes them
	optsRunc        // runc's options type, body its encoding
	optsAny         // any type URL, body its value
	optsFile        // runtimeoptions.Options{ConfigPath: a file holding body}, as ctr passes them
	numOptsKinds
)

// FuzzParseOptions: the runtime options come from whoever configures
// containerd, or runs ctr. Whatever their type and TOML body, parseOptions
// does not panic, and either fails with an invalid argument or returns
// options that hold what Options documents: CacheRoot empty or absolute; no
// integer option (CacheMaxBytes, CompileMemoryLimit, ...) negative; runc's
// options those of the body (or, for runc's own options type, those passed,
// with the shim's at their defaults). Options it accepts encode back to a
// body that it decodes to the same options, and a body reads the same from a
// file.
func FuzzParseOptions(f *testing.F) {
	for _, body := range []string{
		// The valid examples of options_test.go.
		"BinaryName = \"/usr/sbin/runc\"\nSystemdCgroup = true\nRoot = \"/run/x\"",
		"SystemdCgroup = false\n# a comment\n",
		"BinaryName = \"/opt/runc\"\nSystemdCgroup = true\nRoot = \"/run/from-file\"\n",
		"",
		"Root = \"/r\"\nCacheRoot = \"/var/cache/wasm\"\nCacheMaxBytes = 1048576\nCompileCgroup = \"/system.slice/wasm\"\nCompileMemoryLimit = 536870912\nTrace = true\n",
		// Unknown keys and tables.
		"BinaryName = \"runc\"\nShimCgroup = \"/x\"\n",
		"Foo = 1\nBar = 2\n",
		"[options]\nBinaryName = \"runc\"\n",
		"CacheRoot.x = 1\n",
		"Root = { a = 1 }\n",
		// Invalid TOML, wrong types.
		"Root = \n",
		"Root = \"/r\n",
		"SystemdCgroup = \"yes\"\n",
		"CacheMaxBytes = \"1GiB\"\n",
		"Trace = 1\n",
		"CacheMaxBytes = 1.5\n",
		"CacheMaxBytes = 1e3\n",
		"CacheMaxBytes = inf\n",
		"CacheRoot = 1979-05-27T07:32:00Z\n",
		"BinaryName = [\"runc\"]\n",
		"Root = \"/a\"\nRoot = \"/b\"\n",
		// Out of range.
		"CacheRoot = \"cache\"\n",
		"CacheRoot = \"\"\n",
		"CacheMaxBytes = -1\n",
		"CompileMemoryLimit = -5\n",
		"CacheMaxBytes = 9223372036854775807\nCompileMemoryLimit = 0x7fffffffffffffff\n",
		"CacheMaxBytes = 9223372036854775808\n",
		"CompileMemoryLimit = -9223372036854775808\n",
		"CacheMaxBytes = 1_000_000_000_000_000_000_000\n",
		"CompileTotalMemoryLimit = -1\n",
		"CompileConcurrency = -1\n",
		"CompileConcurrency = 4\nCompileTotalMemoryLimit = 4294967296\n",
		// Keys differing in case only.
		"cacheroot = \"/x\"\n",
		"CacheRoot = \"/x\"\ncacheroot = \"rel\"\n",
		"CacheRoot = '''\n/x'''\nCompileCgroup = \"\\u0000\"\n",
	} {
		f.Add(uint8(optsBody), "", []byte(body))
		f.Add(uint8(optsFile), "", []byte(body))
	}
	runc, err := proto.Marshal(&runcoptions.Options{BinaryName: "crun", Root: "/run/crun", SystemdCgroup: true, IoUid: 1000, ShimCgroup: "/shim"})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(uint8(optsRunc), "", runc)
	f.Add(uint8(optsRunc), "", []byte{})
	f.Add(uint8(optsRunc), "", []byte{0xff, 0xff, 0xff})
	runcURL := anyOptions(f, &runcoptions.Options{}).GetTypeUrl()
	runtimeURL := anyOptions(f, &runtimeoptions.Options{}).GetTypeUrl()
	cri, err := proto.Marshal(&runtimeoptions.Options{TypeUrl: "io.containerd.wasm.v1.options", ConfigBody: []byte("Root = \"/r\"\n")})
	if err != nil {
		f.Fatal(err)
	}
	for _, tt := range []struct {
		url   string
		value []byte
	}{
		{runcURL, runc},
		{runtimeURL, cri},
		{runtimeURL, []byte{0x12, 0x03, 'a', '=', '1'}},
		{"type.googleapis.com/" + runcURL, runc},
		{"example.com/not.a.Type", []byte{1, 2, 3}},
		{"type.googleapis.com/google.protobuf.Empty", nil},
		{"", nil},
		{"", runc},
	} {
		f.Add(uint8(optsAny), tt.url, tt.value)
	}

	f.Fuzz(func(t *testing.T, kind uint8, url string, body []byte) {
		var a typeurl.Any
		switch kind % numOptsKinds {
		case optsBody, optsFile:
			// A proto string is UTF-8 (optsAny sends any bytes).
			url = strings.ToValidUTF8(url, "\uFFFD")
			a = anyOptions(t, &runtimeoptions.Options{TypeUrl: url, ConfigBody: body})
		case optsRunc:
			a = &anypb.Any{TypeUrl: runcURL, Value: body}
		case optsAny:
			a = &anypb.Any{TypeUrl: url, Value: body}
		}
		opts, ro, err := parseOptions(a)
		checkOptions(t, a, opts, ro, err)

		if kind%numOptsKinds == optsFile {
			// The same body from a file: the same options, or the same
			// error but for where it was read.
			p := filepath.Join(t.TempDir(), "options.toml")
			if err := os.WriteFile(p, body, 0o600); err != nil {
				t.Fatal(err)
			}
			fa := anyOptions(t, &runtimeoptions.Options{TypeUrl: url, ConfigPath: p})
			fopts, fro, ferr := parseOptions(fa)
			checkOptions(t, fa, fopts, fro, ferr)
			if (err == nil) != (ferr == nil) ||
				err != nil && strings.Replace(ferr.Error(), "runtime options in "+p, "runtime options", 1) != err.Error() ||
				err == nil && (*opts != *fopts || !proto.Equal(ro, fro)) {
				t.Errorf("body %q: %+v, %v, %v; from a file: %+v, %v, %v", body, opts, ro, err, fopts, fro, ferr)
			}
		}
	})
}

// checkOptions checks what parseOptions returned for a.
func checkOptions(t *testing.T, a typeurl.Any, opts *Options, ro *runcoptions.Options, err error) {
	t.Helper()
	if err != nil {
		if opts != nil || ro != nil {
			t.Errorf("parseOptions(%v) returned %+v, %v with its error %v", a, opts, ro, err)
		}
		if !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("parseOptions(%v) error %q is not an invalid argument", a, err)
		}
		return
	}
	if opts == nil || ro == nil {
		t.Fatalf("parseOptions(%v) = %v, %v, with no error", a, opts, ro)
	}
	if opts.CacheRoot != "" && !filepath.IsAbs(opts.CacheRoot) {
		t.Errorf("parseOptions(%v): CacheRoot %q is not absolute", a, opts.CacheRoot)
	}
	// No size, limit or count may be negative: CacheMaxBytes,
	// CompileMemoryLimit, and whatever integer option comes next.
	ov := reflect.ValueOf(*opts)
	for i := range ov.NumField() {
		if f := ov.Field(i); f.CanInt() && f.Int() < 0 {
			t.Errorf("parseOptions(%v): %s is %d", a, ov.Type().Field(i).Name, f.Int())
		}
	}
	if len(a.GetValue()) == 0 && a.GetTypeUrl() == "" {
		if *opts != (Options{}) || !proto.Equal(ro, &runcoptions.Options{}) {
			t.Errorf("parseOptions of no options = %+v, %v; want the defaults", opts, ro)
		}
		return
	}
	v, uerr := typeurl.UnmarshalAny(a)
	if uerr != nil {
		t.Fatalf("parseOptions(%v) accepted what typeurl cannot decode: %v", a, uerr)
	}
	switch v := v.(type) {
	case *runcoptions.Options:
		if *opts != (Options{}) || !proto.Equal(ro, v) {
			t.Errorf("parseOptions(runc's %v) = %+v, %v; want the defaults and the options passed", v, opts, ro)
		}
	case *runtimeoptions.Options:
		want := &runcoptions.Options{BinaryName: opts.BinaryName, Root: opts.Root, SystemdCgroup: opts.SystemdCgroup}
		if !proto.Equal(ro, want) {
			t.Errorf("parseOptions(%v): runc's options %v, want %v", a, ro, want)
		}
		// What it accepts encodes to a body that decodes the same.
		again, err := toml.Marshal(opts)
		if err != nil {
			t.Fatalf("encode %+v: %v", opts, err)
		}
		aa := anyOptions(t, &runtimeoptions.Options{ConfigBody: again})
		if back, _, err := parseOptions(aa); err != nil || *back != *opts {
			t.Errorf("parseOptions(%v) = %+v, which encodes to %q, which decodes to %+v, %v", a, opts, again, back, err)
		}
	default:
		t.Errorf("parseOptions(%v) accepted a %T", a, v)
	}
}

func anyOptions(t testing.TB, v proto.Message) typeurl.Any {
	t.Helper()
	a, err := typeurl.MarshalAnyToProto(v)
	if err != nil {
		t.Fatalf("marshal %T: %v", v, err)
	}
	return a
}
