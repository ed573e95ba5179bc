package oci

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/wasmmod"
)

// FuzzDetect builds a small bundle from the fuzz input (see fuzzLayout: the
// rootfs, a volume that may be bind-mounted, a tmpfs that may hide part of
// the rootfs), with process.args[0], process.cwd and a PATH of the fuzzer's,
// and checks what Detect says of it:
//
//   - it returns, and never panics;
//   - an error wraps ErrBadEntrypoint and names process.args[0];
//   - what it finds is a regular file of the rootfs (or of the volume, under
//     its mount point) whose host path has no symlink in it, so that no link
//     leads out of the container, however many ".." or absolute targets it
//     has; its kind, function, size and mode agree with the file's content;
//     resolving its container path again gives the same file;
//   - without mounts, it finds the file that the kernel finds when it
//     resolves the same path with the rootfs as its root (openat2 with
//     RESOLVE_IN_ROOT, what a chroot does), and fails when the kernel finds
//     nothing.
//
// Files outside the rootfs, where an escaping link would lead, hold modules,
// so that an escape would show as a success.
func FuzzDetect(f *testing.F) {
	for _, sd := range detectSeeds() {
		f.Add(sd.layout.encode(), sd.arg0, sd.cwd, sd.path, sd.mounts)
	}
	f.Fuzz(func(t *testing.T, layout []byte, arg0, cwd, pathEnv string, mounts uint16) {
		arg0, cwd, pathEnv = expandNames(arg0), expandNames(cwd), expandNames(pathEnv)
		fz := newFuzzBundle(t, mounts)
		fz.build(layout)
		s := &specs.Spec{
			Root:    &specs.Root{Path: "rootfs"},
			Process: &specs.Process{Args: []string{arg0, "arg1"}, Cwd: cwd, Env: []string{"HOME=/root", "PATH=" + pathEnv}},
			Mounts:  fz.mounts,
		}
		// Detect gets the spec as the shim does: from the bundle's
		// config.json (JSON turns invalid UTF-8 into U+FFFD).
		if err := WriteSpec(fz.bundle, s); err != nil {
			t.Fatal(err)
		}
		s, err := ReadSpec(fz.bundle)
		if err != nil {
			t.Fatal(err)
		}
		arg0 = s.Process.Args[0]

		e, err := fz.detect(s)
		if err != nil {
			if e != nil {
				t.Errorf("Detect(%q) returned %+v with its error %v", arg0, e, err)
			}
			if !errors.Is(err, ErrBadEntrypoint) {
				t.Errorf("Detect(%q) error %q does not wrap ErrBadEntrypoint", arg0, err)
			}
			if !strings.HasPrefix(err.Error(), "entrypoint "+strconv.Quote(arg0)+": ") {
				t.Errorf("Detect(%q) error %q does not start by naming the entrypoint", arg0, err)
			}
		} else {
			fz.checkFound(s, e)
		}
		if len(fz.mounts) == 0 {
			fz.compareKernel(s, e, err)
		}
	})
}

// detectSeed is a seed of FuzzDetect.
type detectSeed struct {
	layout          fuzzLayout
	arg0, cwd, path string
	mounts          uint16
}

// The bits of FuzzDetect's mounts argument.
const (
	mountBind     = 1 << 0 // bind the volume at fuzzMountDests[bits 1-3]
	mountTmpfs    = 1 << 4 // a tmpfs at fuzzMountDests[bits 5-7]
	mountBindLast = 1 << 8 // the bind mount comes after the tmpfs
	mountRbindOpt = 1 << 9 // the bind mount is "rbind" in options, not its type
)

var fuzzMountDests = []string{"/", "/data", "/bin", "/usr/bin", "/tmp", "/tmp/app", "/work", "/dev"}

func bindAt(i int) uint16  { return mountBind | uint16(i)<<1 }
func tmpfsAt(i int) uint16 { return mountTmpfs | uint16(i)<<5 }

func detectSeeds() []detectSeed {
	wasmFile := func(p string) fuzzEntry { return fuzzEntry{kind: fuzzFile, path: p, content: contentWasm, mode: 0} }
	return []detectSeed{
		// A link that climbs out of the rootfs would reach a module.
		{fuzzLayout{{kind: fuzzSymlink, path: "bin/app", target: "../../etc/passwd"}}, "/bin/app", "/", "/bin", 0},
		{fuzzLayout{{kind: fuzzSymlink, path: "bin/app", target: "../../../../../etc/passwd"}, {kind: fuzzFile, path: "etc/passwd", content: contentText}}, "app", "/", "/bin", 0},
		{fuzzLayout{{kind: fuzzSymlink, path: "bin/app", target: "../../app.wasm"}}, "/bin/app", "/", "", 0},
		{fuzzLayout{{kind: fuzzSymlink, path: "a", target: ".."}}, "/a/a/a/bundle/app.wasm", "/", "", 0},
		// An absolute link leads to the container's /bin/sh, not the host's.
		{fuzzLayout{{kind: fuzzSymlink, path: "bin/app", target: "/bin/sh"}}, "/bin/app", "/", "/bin", 0},
		{fuzzLayout{{kind: fuzzSymlink, path: "bin/app", target: "/bin/sh"}, {kind: fuzzFile, path: "bin/sh", content: contentScript, mode: 1}}, "app", "/", "/usr/bin:/bin", 0},
		{fuzzLayout{{kind: fuzzSymlink, path: "app", host: true, target: "bundle/rootfs/app.wasm"}, wasmFile("app.wasm")}, "/app", "/", "", 0},
		// Loops.
		{fuzzLayout{{kind: fuzzSymlink, path: "a", target: "b"}, {kind: fuzzSymlink, path: "b", target: "/a"}}, "/a", "/", "", 0},
		{fuzzLayout{{kind: fuzzSymlink, path: "a", target: "."}, wasmFile("app.wasm")}, "/" + strings.Repeat("a/", 41) + "app.wasm", "/", "", 0},
		{fuzzLayout{{kind: fuzzSymlink, path: "a", target: "."}, wasmFile("app.wasm")}, "/" + strings.Repeat("a/", 40) + "app.wasm", "/", "", 0},
		// Not a file, no file.
		{fuzzLayout{{kind: fuzzDir, path: "work"}}, "/work", "/", "", 0},
		{fuzzLayout{{kind: fuzzFIFO, path: "bin/app"}, {kind: fuzzFile, path: "usr/bin/app", content: contentELF, mode: 1}}, "app", "/", "/bin:/usr/bin", 0},
		{fuzzLayout{{kind: fuzzFIFO, path: "app"}}, "/app", "/", "", 0},
		{fuzzLayout{wasmFile("app.wasm")}, "/missing.wasm", "/", "", 0},
		{fuzzLayout{wasmFile("app.wasm")}, "/app.wasm/x", "/", "", 0},
		{fuzzLayout{}, "", "/", "", 0},
		// PATH, cwd, functions, kinds.
		{fuzzLayout{wasmFile("usr/bin/app"), {kind: fuzzFile, path: "bin/app", content: contentELF, mode: 1}}, "app", "/", "/bin:/usr/bin", 0},
		{fuzzLayout{{kind: fuzzFile, path: "bin/app", content: contentELF, mode: 0}, wasmFile("usr/bin/app")}, "app#run", "/", "bin:/bin:/usr/bin", 0},
		{fuzzLayout{wasmFile("work/app.wasm"), {kind: fuzzSymlink, path: "a", target: "work"}}, "../a/app.wasm", "/work", "", 0},
		{fuzzLayout{wasmFile("work/app.wasm"), {kind: fuzzSymlink, path: "work/a", target: "/tmp"}, {kind: fuzzDir, path: "tmp"}, {kind: fuzzFile, path: "app.wasm", content: contentELF, mode: 1}}, "./a/../app.wasm", "/work", "", 0},
		{fuzzLayout{wasmFile("opt/app.wasm"), {kind: fuzzDir, path: "opt/sub"}, {kind: fuzzSymlink, path: "a", target: "opt/sub"}, wasmFile("app.wasm")}, "./app.wasm", "/a/..", "", 0},
		{fuzzLayout{wasmFile("app.wasm")}, "../app.wasm", "/missing/", "", 0},
		{fuzzLayout{wasmFile("app.wasm")}, "/app.wasm/", "/", "", 0},
		{fuzzLayout{wasmFile("app.wasm")}, "\x04/", "/", "", 0},
		{fuzzLayout{wasmFile("app.wasm")}, "/app.wasm#", "/", "", 0},
		{fuzzLayout{{kind: fuzzFile, path: "app", content: contentScript, mode: 1}}, "/app#main", "/", "", 0},
		{fuzzLayout{{kind: fuzzFile, path: "app", content: contentText, mode: 1}}, "/app", "/", "", 0},
		{fuzzLayout{{kind: fuzzFile, path: "app", content: contentHugeWasm}}, "/app", "/", "", 0},
		{fuzzLayout{{kind: fuzzFile, path: "app", content: contentRaw, raw: "\x00asm\x0d"}}, "/app", "/", "", 0},
		// Mounts.
		{fuzzLayout{{kind: fuzzFile, vol: true, path: "app.wasm", content: contentWasm}}, "/data/app.wasm", "/", "", bindAt(1)},
		{fuzzLayout{{kind: fuzzSymlink, vol: true, path: "app", target: "../../../../../app.wasm"}}, "/data/app", "/", "", bindAt(1) | mountRbindOpt},
		{fuzzLayout{wasmFile("dev/app.wasm")}, "/dev/app.wasm", "/", "", tmpfsAt(7)},
		{fuzzLayout{{kind: fuzzFile, vol: true, path: "app", content: contentWasm}}, "app", "/", "/tmp/app", tmpfsAt(4) | bindAt(5) | mountBindLast},
		{fuzzLayout{wasmFile("app.wasm")}, "/app.wasm", "/", "", tmpfsAt(0)},
	}
}

// A fuzzLayout is a list of entries, each created in turn (in the rootfs or
// in the volume) if it can be: an entry under a file, or where another
// one is, is left out.
type fuzzLayout []fuzzEntry

// fuzzEntry is an entry of a fuzzLayout: a directory, file, symlink or
// FIFO at path (relative to the rootfs, or to the volume if vol).
type fuzzEntry struct {
	kind    byte
	vol     bool
	path    string
	content byte   // a file's: one of fuzzContents
	raw     string // the content if contentRaw
	mode    byte   // a file's: an index in fuzzModes
	target  string // a symlink's
	host    bool   // the symlink's target is prefixed with the host path of the test's directory
}

const (
	fuzzDir = iota
	fuzzFile
	fuzzSymlink
	fuzzFIFO
)

const (
	contentWasm = iota
	contentELF
	contentScript
	contentText
	contentEmpty
	contentMagic
	contentShort
	contentShebang
	contentRaw      // up to 8 bytes of the input
	contentHugeWasm // a sparse module of wasmmod.MaxSize+1 bytes
)

var fuzzContents = []string{
	contentWasm:     wasmBytes,
	contentELF:      elfBytes,
	contentScript:   scriptBytes,
	contentText:     textBytes,
	contentEmpty:    "",
	contentMagic:    "\x00asm",
	contentShort:    "\x00a",
	contentShebang:  "#!",
	contentRaw:      "",
	contentHugeWasm: wasmBytes,
}

var fuzzModes = []os.FileMode{0o644, 0o755, 0, 0o700, 0o601, 0o111, 0o600, 0o777}

// fuzzNames are the path components that a byte below 0x80 of a layout
// stands for (its value modulo their number); a byte 0x8n is followed by n+1
// bytes of a name of the fuzzer's. See also expandNames.
var fuzzNames = []string{"bin", "usr", "sh", "app.wasm", "etc", "passwd", "..", ".", "a", "b",
	"work", "data", "tmp", "app", "dev", "bundle", "rootfs", "vol", "m#f", ""}

const (
	maxFuzzEntries = 32
	maxFuzzComps   = 8
)

// expandNames replaces each byte 0x01-0x14 of s by a name of fuzzNames
// (0x01 by "bin", ...): the fuzzer finds the names of the layout in
// process.args[0], process.cwd and PATH by changing a single byte.
func expandNames(s string) string {
	if !strings.ContainsFunc(s, isNameByte) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if isNameByte(rune(s[i])) {
			b.WriteString(fuzzNames[s[i]-1])
		} else {
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

func isNameByte(r rune) bool { return r >= 1 && int(r) <= len(fuzzNames) }

// decodeLayout reads a fuzzLayout from the fuzz input. Every input is a layout:
// one that ends early just has fewer entries.
func decodeLayout(b []byte) fuzzLayout {
	r := &byteReader{b: b}
	var l fuzzLayout
	for len(r.b) > 0 && len(l) < maxFuzzEntries {
		op := r.byte()
		e := fuzzEntry{kind: op & 3, vol: op&4 != 0}
		e.path = r.path(int(r.byte()%4) + 1)
		switch e.kind {
		case fuzzFile:
			cb := r.byte()
			e.content = (cb & 0x0f) % byte(len(fuzzContents))
			e.mode = (cb >> 4) % byte(len(fuzzModes))
			if e.content == contentRaw {
				e.raw = string(r.bytes(int(r.byte() % 9)))
			}
		case fuzzSymlink:
			tb := r.byte()
			e.host = tb&2 != 0
			e.target = r.path(int(tb>>3) % maxFuzzComps)
			if tb&1 != 0 {
				e.target = "/" + e.target
			}
			if tb&4 != 0 {
				e.target += "/"
			}
		}
		l = append(l, e)
	}
	return l
}

// encode is the inverse of decodeLayout, for seeds.
func (l fuzzLayout) encode() []byte {
	var b []byte
	path := func(p string, limit int) (byte, []byte) {
		comps := strings.Split(p, "/")
		if len(comps) > limit {
			panic(fmt.Sprintf("seed path %q has more than %d components", p, limit))
		}
		var out []byte
		for _, c := range comps {
			if i := slices.Index(fuzzNames, c); i >= 0 {
				out = append(out, byte(i))
				continue
			}
			if len(c) == 0 || len(c) > 16 {
				panic(fmt.Sprintf("seed path %q: component %q", p, c))
			}
			out = append(out, 0x80|byte(len(c)-1))
			out = append(out, c...)
		}
		return byte(len(comps)), out
	}
	for _, e := range l {
		op := e.kind
		if e.vol {
			op |= 4
		}
		n, comps := path(e.path, 4)
		b = append(b, op, n-1)
		b = append(b, comps...)
		switch e.kind {
		case fuzzFile:
			b = append(b, e.content|e.mode<<4)
			if e.content == contentRaw {
				b = append(b, byte(len(e.raw)))
				b = append(b, e.raw...)
			}
		case fuzzSymlink:
			t := e.target
			var tb byte
			if e.host {
				tb |= 2
			}
			if strings.HasPrefix(t, "/") {
				tb |= 1
				t = t[1:]
			}
			if strings.HasSuffix(t, "/") {
				tb |= 4
				t = strings.TrimSuffix(t, "/")
			}
			n, comps := path(t, maxFuzzComps-1)
			b = append(b, tb|n<<3)
			b = append(b, comps...)
		}
	}
	return b
}

type byteReader struct{ b []byte }

// byte returns the next byte, 0 past the end.
func (r *byteReader) byte() byte {
	if len(r.b) == 0 {
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *byteReader) bytes(n int) []byte {
	n = min(n, len(r.b))
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

// path reads n components and joins them with slashes. A name of the
// fuzzer's has neither slash nor NUL, and at most 16 bytes.
func (r *byteReader) path(n int) string {
	comps := make([]string, 0, n)
	for range n {
		c := r.byte()
		if c&0x80 == 0 {
			comps = append(comps, fuzzNames[int(c)%len(fuzzNames)])
			continue
		}
		name := []byte(string(r.bytes(int(c&0x0f) + 1)))
		for i, ch := range name {
			if ch == '/' || ch == 0 {
				name[i] = '_'
			}
		}
		comps = append(comps, string(name))
	}
	return strings.Join(comps, "/")
}

// fuzzBundle is the test directory of one FuzzDetect input:
//
//	dir/bundle/config.json
//	dir/bundle/rootfs/...     the layout's entries
//	dir/vol/...               the layout's volume entries
//	dir/..., dir/bundle/...   modules where an escaping link would lead
type fuzzBundle struct {
	t              *testing.T
	dir            string // with no symlink in it
	bundle, rootfs string
	vol            string
	bindDest       string // "" if the volume is not mounted
	mounts         []specs.Mount
	fifos          []string // host paths
}

func newFuzzBundle(t *testing.T, mounts uint16) *fuzzBundle {
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	fz := &fuzzBundle{t: t, dir: dir, bundle: filepath.Join(dir, "bundle"), vol: filepath.Join(dir, "vol")}
	fz.rootfs = filepath.Join(fz.bundle, "rootfs")
	for _, d := range []string{fz.rootfs, fz.vol} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"app.wasm", "etc/passwd", "bin/sh", "bin/app", "bundle/app.wasm", "bundle/etc/passwd", "bundle/bin/sh", "bundle/bin/app"} {
		writeHostFile(t, filepath.Join(dir, p), wasmBytes, 0o755)
	}

	var bind, tmpfs []specs.Mount
	if mounts&mountBind != 0 {
		fz.bindDest = fuzzMountDests[mounts>>1&7]
		m := specs.Mount{Destination: fz.bindDest, Type: "bind", Source: fz.vol, Options: []string{"ro"}}
		if mounts&mountRbindOpt != 0 {
			m.Type, m.Options = "none", []string{"rbind", "ro"}
		}
		bind = []specs.Mount{m}
	}
	if mounts&mountTmpfs != 0 {
		tmpfs = []specs.Mount{{Destination: fuzzMountDests[mounts>>5&7], Type: "tmpfs", Source: "tmpfs"}}
	}
	if mounts&mountBindLast != 0 {
		fz.mounts = slices.Concat(tmpfs, bind)
	} else {
		fz.mounts = slices.Concat(bind, tmpfs)
	}
	return fz
}

// build creates the entries of the layout that it can. Every entry is
// created through an os.Root of the rootfs or the volume: whatever the links
// already there, nothing is written outside them.
func (fz *fuzzBundle) build(layout []byte) {
	t := fz.t
	roots := map[bool]*os.Root{}
	for vol, dir := range map[bool]string{false: fz.rootfs, true: fz.vol} {
		r, err := os.OpenRoot(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		roots[vol] = r
	}
	for _, e := range decodeLayout(layout) {
		root := roots[e.vol]
		name := path.Clean(e.path)
		if name == "." || name == ".." || strings.HasPrefix(name, "../") {
			continue // os.Root would refuse it anyway
		}
		if e.kind == fuzzDir {
			_ = root.MkdirAll(name, 0o755)
			continue
		}
		if root.MkdirAll(path.Dir(name), 0o755) != nil {
			continue
		}
		switch e.kind {
		case fuzzFile:
			content := fuzzContents[e.content]
			if e.content == contentRaw {
				content = e.raw
			}
			mode := fuzzModes[e.mode]
			f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, mode)
			if err != nil {
				continue
			}
			_, err = f.WriteString(content)
			if err == nil && e.content == contentHugeWasm {
				err = f.Truncate(wasmmod.MaxSize + 1)
			}
			if err == nil {
				err = f.Chmod(mode) // not subject to the umask
			}
			if err := errors.Join(err, f.Close()); err != nil {
				t.Fatal(err)
			}
		case fuzzSymlink:
			target := e.target
			if e.host {
				target = fz.dir + "/" + target
			}
			_ = root.Symlink(target, name)
		case fuzzFIFO:
			d, err := root.Open(path.Dir(name))
			if err != nil {
				continue
			}
			err = unix.Mkfifoat(int(d.Fd()), path.Base(name), 0o644)
			d.Close()
			if err == nil {
				// The host path the FIFO has, but for links to
				// directories, which only matters to unblock a hung Detect.
				base := fz.rootfs
				if e.vol {
					base = fz.vol
				}
				fz.fifos = append(fz.fifos, filepath.Join(base, name))
			}
		}
	}
}

// detect calls Detect, and fails the test if it does not return within a
// few seconds: it would have blocked on a FIFO, or looped.
func (fz *fuzzBundle) detect(s *specs.Spec) (*Entrypoint, error) {
	type result struct {
		e   *Entrypoint
		err error
	}
	done := make(chan result, 1)
	go func() {
		e, err := Detect(fz.bundle, s)
		done <- result{e, err}
	}()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case r := <-done:
		return r.e, r.err
	case <-timer.C:
		// Open the FIFOs for writing so that a Detect blocked on one
		// returns, and t.TempDir can be removed.
		for _, p := range fz.fifos {
			if f, err := os.OpenFile(p, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				f.Close()
			}
		}
		fz.t.Fatalf("Detect(%q) did not return in 10s", s.Process.Args[0])
		return nil, nil
	}
}

// checkFound checks what Detect found.
func (fz *fuzzBundle) checkFound(s *specs.Spec, e *Entrypoint) {
	t := fz.t
	arg0 := s.Process.Args[0]
	p, fn := SplitFunc(arg0)
	if e.Arg0 != p {
		t.Errorf("Detect(%q): Arg0 = %q, want %q", arg0, e.Arg0, p)
	}
	if !path.IsAbs(e.Path) || path.Clean(e.Path) != e.Path {
		t.Errorf("Detect(%q): Path %q is not a clean absolute path", arg0, e.Path)
	}
	inRoot := e.HostPath == filepath.Join(fz.rootfs, e.Path)
	inVol := false
	if fz.bindDest != "" {
		if rel, ok := strings.CutPrefix(e.Path, fz.bindDest); ok && (fz.bindDest == "/" || rel == "" || rel[0] == '/') {
			inVol = e.HostPath == filepath.Join(fz.vol, rel)
		}
	}
	if !inRoot && !inVol {
		t.Fatalf("Detect(%q) found %q at host path %q: not where the rootfs %q or the volume %q mounted at %q has it",
			arg0, e.Path, e.HostPath, fz.rootfs, fz.vol, fz.bindDest)
	}
	// No link in the host path: the file found is the one of the rootfs
	// (or volume) at that path.
	if real, err := filepath.EvalSymlinks(e.HostPath); err != nil || real != e.HostPath {
		t.Fatalf("Detect(%q): host path %q is really %q (%v)", arg0, e.HostPath, real, err)
	}
	fi, err := os.Lstat(e.HostPath)
	if err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("Detect(%q): host path %q: %v, %v; want a regular file", arg0, e.HostPath, fi, err)
	}
	if e.Size != fi.Size() {
		t.Errorf("Detect(%q): Size %d, the file has %d bytes", arg0, e.Size, fi.Size())
	}
	head := readHead(t, e.HostPath)
	kind, wantFn, _ := classify(head, fi, fn)
	if e.Kind != kind || e.Func != wantFn {
		t.Errorf("Detect(%q) of %q (mode %v, starts with %q) = kind %v, func %q; want %v, %q",
			arg0, e.HostPath, fi.Mode(), head, e.Kind, e.Func, kind, wantFn)
	}
	if pathHasTrailingSlash(p) {
		t.Errorf("Detect(%q) found the regular file %q for a path that names a directory", arg0, e.Path)
	}
	// The path found has no symlinks left in the container's view.
	rp, rh, err := NewResolver(fz.bundle, s).Resolve(e.Path)
	if err != nil || rp != e.Path || rh != e.HostPath {
		t.Errorf("Detect(%q) found %q (%q), which resolves to %q, %q, %v", arg0, e.Path, e.HostPath, rp, rh, err)
	}
}

// pathHasTrailingSlash says whether a path (with a slash) names a
// directory by its form.
func pathHasTrailingSlash(p string) bool {
	return strings.HasSuffix(p, "/") || strings.HasSuffix(p, "/.") || strings.HasSuffix(p, "/..") || p == ".."
}

func readHead(t *testing.T, host string) []byte {
	f, err := os.OpenFile(host, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return readHeadFile(t, f)
}

func readHeadFile(t *testing.T, f *os.File) []byte {
	head := make([]byte, 4)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return head[:n]
}

// classify says what Detect makes of a regular file that starts with head,
// given the function named after '#': the kind and function of the
// entrypoint, or 0 and what the error says.
func classify(head []byte, fi os.FileInfo, fn string) (Kind, string, string) {
	switch {
	case bytes.HasPrefix(head, wasmMagic):
		if fi.Size() > wasmmod.MaxSize {
			return 0, "", "more than"
		}
		if fn == "" {
			fn = DefaultStartFunc
		}
		return Wasm, fn, ""
	case bytes.HasPrefix(head, elfMagic), bytes.HasPrefix(head, []byte("#!")):
		if fn != "" {
			return 0, "", "only a Wasm module can name an entry function"
		}
		if fi.Mode()&0o111 == 0 {
			return 0, "", "not executable"
		}
		return Native, "", ""
	}
	return 0, "", "neither a WebAssembly module nor a native executable"
}

// kernelFile is what the kernel finds at a container path, with the rootfs
// as its root.
type kernelFile struct {
	fi   os.FileInfo
	head []byte // if fi is a regular file
	err  error
}

// openRootfs opens the rootfs for the *At functions.
func (fz *fuzzBundle) openRootfs() int {
	root, err := unix.Open(fz.rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		fz.t.Fatal(err)
	}
	return root
}

// openAt resolves the container path p (absolute, or from "/") as a
// process chrooted to the rootfs would: openat2 with RESOLVE_IN_ROOT.
func openAt(root int, p string, flags uint64) (int, error) {
	return unix.Openat2(root, p, &unix.OpenHow{
		Flags:   flags | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
}

// kernelOpen is what the kernel finds at the container path p.
func (fz *fuzzBundle) kernelOpen(root int, p string) kernelFile {
	fd, err := openAt(root, p, unix.O_RDONLY|unix.O_NONBLOCK)
	if err != nil {
		return kernelFile{err: err}
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		fz.t.Fatal(err)
	}
	k := kernelFile{fi: fi}
	if fi.Mode().IsRegular() {
		k.head = readHeadFile(fz.t, f)
	}
	return k
}

// statAt is os.Stat (os.Lstat unless follow) of the container path p.
func statAt(root int, p string, follow bool) (uint32, error) {
	flags := uint64(unix.O_PATH)
	if !follow {
		flags |= unix.O_NOFOLLOW
	}
	fd, err := openAt(root, p, flags)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, err
	}
	return st.Mode & unix.S_IFMT, nil
}

// mkdirAllAt is os.MkdirAll(p) in a process chrooted to the rootfs, which
// is what runc does with process.cwd before it starts the process: Go's
// algorithm, step by step, with the kernel's resolution of each path.
func mkdirAllAt(root int, p string) error {
	if mode, err := statAt(root, p, true); err == nil {
		if mode == unix.S_IFDIR {
			return nil
		}
		return unix.ENOTDIR
	}
	i := len(p) - 1
	for i >= 0 && p[i] == '/' {
		i--
	}
	j := i
	for j >= 0 && p[j] != '/' {
		j--
	}
	if parent := p[:max(j, 0)]; parent != "" {
		if err := mkdirAllAt(root, parent); err != nil {
			return err
		}
	}
	// mkdir(p): the kernel resolves p's directory and creates its last name.
	dir := p[:max(j, 0)]
	if dir == "" {
		dir = "/"
	}
	var err error
	if fd, oerr := openAt(root, dir, unix.O_PATH|unix.O_DIRECTORY); oerr != nil {
		err = oerr
	} else {
		err = unix.Mkdirat(fd, p[j+1:i+1], 0o755)
		unix.Close(fd)
	}
	if err != nil {
		if mode, lerr := statAt(root, p, false); lerr == nil && mode == unix.S_IFDIR {
			return nil
		}
		return err
	}
	return nil
}

// compareKernel checks that Detect found the file that the kernel finds in
// the container that runc starts, or failed where the kernel finds none.
// It creates process.cwd in the rootfs, as runc does.
//
// The kernel refuses "file/.." with ENOTDIR, where pathwalk.Walk goes
// back to the file's directory (it never looks at a component before "..");
// so where the kernel says ENOTDIR, Detect may find a file, unless the path
// itself ends in a slash. Where runc could not create process.cwd, it would
// not start the container: Detect may say anything.
func (fz *fuzzBundle) compareKernel(s *specs.Spec, e *Entrypoint, err error) {
	t := fz.t
	arg0 := s.Process.Args[0]
	p, fn := SplitFunc(arg0)
	if p == "" || strings.Contains(arg0, "#") && fn == "" {
		if err == nil {
			t.Errorf("Detect(%q) = %+v, want an error", arg0, e)
		}
		return
	}
	root := fz.openRootfs()
	defer unix.Close(root)
	var want kernelFile
	var found, unsure bool
	if strings.Contains(p, "/") {
		kp := p
		if !path.IsAbs(kp) {
			// runc wants an absolute cwd; Detect takes a relative one
			// from "/", and so does this.
			cwd := "/" + s.Process.Cwd
			if mkdirAllAt(root, cwd) != nil {
				return
			}
			kp = cwd + "/" + p // no lexical cleaning: the kernel resolves "link/.."
		}
		want = fz.kernelOpen(root, kp)
		switch {
		case want.err == nil:
			found = true
		case errors.Is(want.err, unix.ENOTDIR):
			unsure = !pathHasTrailingSlash(p)
		case errors.Is(want.err, unix.ENAMETOOLONG):
			unsure = true // the kernel's limit, not the shim's
		}
	} else {
		pathEnv, _ := Env(s.Process.Env, "PATH")
		for _, dir := range filepath.SplitList(pathEnv) {
			if !path.IsAbs(dir) {
				continue
			}
			k := fz.kernelOpen(root, path.Join(dir, p))
			if errors.Is(k.err, unix.ENOTDIR) || errors.Is(k.err, unix.ENAMETOOLONG) {
				unsure = true
			}
			if k.err == nil && k.fi.Mode().IsRegular() && (bytes.HasPrefix(k.head, wasmMagic) || k.fi.Mode()&0o111 != 0) {
				want, found = k, true
				break
			}
		}
	}
	if unsure {
		return // Detect may have found what the kernel refused with ENOTDIR
	}
	if !found {
		if err == nil {
			t.Errorf("Detect(%q) in %q with PATH %q = %q (%q), but the kernel finds nothing: %v",
				arg0, s.Process.Cwd, s.Process.Env, e.Path, e.HostPath, want.err)
		}
		return
	}
	if !want.fi.Mode().IsRegular() {
		if err == nil {
			t.Errorf("Detect(%q) in %q = %q (%q), but the kernel finds a %v", arg0, s.Process.Cwd, e.Path, e.HostPath, want.fi.Mode())
		}
		return
	}
	wantKind, _, wantErr := classify(want.head, want.fi, fn)
	if err != nil {
		if wantErr == "" || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("Detect(%q) in %q with PATH %q: %v; the kernel finds a %v (%q), which is %s",
				arg0, s.Process.Cwd, s.Process.Env, err, want.fi.Mode(), want.head, cmp.Or(wantErr, "an entrypoint"))
		}
		return
	}
	got, _ := os.Stat(e.HostPath)
	if !os.SameFile(got, want.fi) || e.Kind != wantKind {
		t.Errorf("Detect(%q) in %q with PATH %q = %v %q (%q); the kernel finds %v, a %v of kind %v",
			arg0, s.Process.Cwd, s.Process.Env, e.Kind, e.Path, e.HostPath, want.fi.Name(), want.fi.Mode(), wantKind)
	}
}
