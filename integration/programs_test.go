package integration

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/oci/image"
)

const programsImage = "example.local/wasm-programs:latest"

// programsDir is where make programs put the real programs
// (scripts/build-programs.sh): $PROGRAMS_DIR.
func programsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("PROGRAMS_DIR")
	if dir == "" {
		t.Fatal("PROGRAMS_DIR is not set: run the tests with make, or set it to the directory make programs fills")
	}
	return dir
}

// sqliteScript makes 100,000 rows, queries them and checks the database's
// integrity.
const sqliteScript = `.mode list
CREATE TABLE t(id INTEGER PRIMARY KEY, grp INTEGER, name TEXT, x REAL);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 100000)
INSERT INTO t SELECT i, i % 7, 'row ' || i, i * 0.5 FROM n;
CREATE INDEX t_grp ON t(grp);
SELECT count(*), sum(id), total(x) FROM t;
SELECT grp, count(*), min(name), max(id) FROM t GROUP BY grp ORDER BY grp;
UPDATE t SET name = upper(name) WHERE id % 1000 = 0;
DELETE FROM t WHERE id % 3 = 0;
SELECT count(*), count(DISTINCT grp), group_concat(name, ',') FILTER (WHERE id < 20) FROM t;
PRAGMA integrity_check;
`

// programsImageFiles is the programs image: the modules, the SQLite script,
// and what dirfd.c expects in its working directory ("/").
func programsImageFiles(t *testing.T, dir string) []image.File {
	t.Helper()
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("%v (make programs builds it)", err)
		}
		return b
	}
	return []image.File{
		{Path: "/sqlite3.wasm", Data: read("sqlite3.wasm")},
		{Path: "/flite.wasm", Data: read("flite.wasm")},
		{Path: "/std.wasm", Data: read("std.wasm")},
		{Path: "/dirfd.wasm", Data: read("dirfd.wasm")},
		{Path: "/script.sql", Data: []byte(sqliteScript)},
		{Path: "/a.txt", Data: []byte("alpha\n")},
		{Path: "/d", Type: tar.TypeDir},
		{Path: "/tmp", Type: tar.TypeDir, Mode: 0o1777},
		{Path: "/out", Type: tar.TypeDir},
	}
}

// TestRealPrograms runs programs nobody here wrote, built from Debian and
// npm packages (make programs), through the shim, and checks their output
// byte for byte against the wazero CLI running the same module (or, where
// the CLI falls short of Linux, the same C source built native):
//   - the SQLite shell (C, clang + wasi-libc): 100,000 rows in a database
//     file, queries, an integrity check;
//   - flite (npm): a WAV to a file and the same WAV to /dev/stdout;
//   - a Rust std program (Debian's rustc, with DWARF): args, env, files,
//     a directory listing, std::process::exit;
//   - a C program (with DWARF) using openat/fstatat above a directory
//     descriptor, /dev/stdout and /dev/stderr by name, and exit().
func TestRealPrograms(t *testing.T) {
	dir := programsDir(t)
	files := programsImageFiles(t, dir)
	importImage(t, &image.Image{Name: programsImage, Files: files})
	wz, err := tool("wazero")
	if err != nil {
		t.Fatal(err)
	}
	cacheDir := t.TempDir() // the CLI's compile cache, shared by its runs

	// reference runs the wazero CLI on a module of the image, with root (a
	// host directory holding the image's files) as "/".
	reference := func(t *testing.T, root string, env []string, module string, args ...string) result {
		t.Helper()
		a := []string{"run", "-cachedir", cacheDir, "-mount", root + ":/"}
		for _, kv := range env {
			a = append(a, "-env", kv)
		}
		a = append(append(a, filepath.Join(dir, module)), args...)
		return command(t, "", wz, a...)
	}
	// hostRoot writes the image's small files into a new host directory.
	hostRoot := func(t *testing.T) string {
		t.Helper()
		root := t.TempDir()
		for _, f := range files {
			p := filepath.Join(root, f.Path)
			switch {
			case f.Type == tar.TypeDir:
				os.MkdirAll(p, 0o777)
			case !strings.HasSuffix(f.Path, ".wasm"):
				if err := os.WriteFile(p, f.Data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
		return root
	}

	t.Run("sqlite", func(t *testing.T) {
		args := []string{"/tmp/t.db", ".read /script.sql"}
		got := runImage(t, programsImage, nil, append([]string{"/sqlite3.wasm"}, args...)...)
		// runc gives the container HOME=/ (no /etc/passwd in the image);
		// the CLI gives none, so it is given the same.
		want := reference(t, hostRoot(t), []string{"HOME=/"}, "sqlite3.wasm", args...)
		sameResult(t, got, want)
		if !strings.Contains(got.stdout, "100000|5000050000|") || !strings.HasSuffix(got.stdout, "\nok\n") {
			t.Errorf("SQLite's output lacks the row count or the integrity check's ok: %q", got.stdout)
		}
	})

	t.Run("flite", func(t *testing.T) {
		args := []string{"-voice", "slt", "-t", "A Wasm container speaks."}
		out := t.TempDir()
		mount := []string{"--mount", "type=bind,src=" + out + ",dst=/out,options=rbind:rw"}
		got := runImage(t, programsImage, mount, append([]string{"/flite.wasm"}, append(args, "-o", "/out/speech.wav")...)...)
		root := hostRoot(t)
		want := reference(t, root, nil, "flite.wasm", append(args, "-o", "/out/speech.wav")...)
		sameResult(t, got, want)
		wav, err := os.ReadFile(filepath.Join(out, "speech.wav"))
		if err != nil {
			t.Fatal(err)
		}
		wantWav, err := os.ReadFile(filepath.Join(root, "out", "speech.wav"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(wav, []byte("RIFF")) || len(wav) < 10000 || !bytes.Equal(wav, wantWav) {
			t.Errorf("flite's WAV in the container: %d bytes (%q...); the CLI's: %d bytes", len(wav), wav[:min(len(wav), 4)], len(wantWav))
		}
		// The same WAV to /dev/stdout.
		got = runImage(t, programsImage, nil, append([]string{"/flite.wasm"}, append(args, "-o", "/dev/stdout")...)...)
		if got.code != 0 || got.stdout != string(wantWav) {
			t.Errorf("flite -o /dev/stdout: exit %d, %d bytes on stdout, want the CLI's %d-byte WAV; stderr %q", got.code, len(got.stdout), len(wantWav), got.stderr)
		}
	})

	t.Run("rust std", func(t *testing.T) {
		args := []string{"5", "two words"}
		env := []string{"PROG_A=1", "PROG_B=b c"}
		var flags []string
		for _, kv := range env {
			flags = append(flags, "--env", kv)
		}
		got := runImage(t, programsImage, flags, append([]string{"/std.wasm"}, args...)...)
		want := reference(t, hostRoot(t), env, "std.wasm", args...)
		sameResult(t, got, want)
		if got.code != 5 || !strings.Contains(got.stdout, `env: [("PROG_A", "1"), ("PROG_B", "b c")]`) {
			t.Errorf("exit %d, stdout %q", got.code, got.stdout)
		}
	})

	t.Run("C file idioms", func(t *testing.T) {
		got := runImage(t, programsImage, nil, "/dirfd.wasm", "3")
		want := command(t, hostRoot(t), filepath.Join(dir, "dirfd"), "3")
		sameResult(t, got, want)
		if strings.Contains(got.stdout, "error") || !strings.Contains(got.stdout, "to /dev/stdout by name") {
			t.Errorf("stdout %q", got.stdout)
		}
	})
}

// sameResult fails unless got (through the shim) and want (the reference)
// have the same stdout, stderr and exit status. ctr's stderr comes without
// empty lines (see filterWarnings): the reference's is compared likewise.
func sameResult(t *testing.T, got, want result) {
	t.Helper()
	want.stderr = filterWarnings(want.stderr)
	if got.code != want.code || got.stdout != want.stdout || got.stderr != want.stderr {
		t.Errorf("through the shim: exit %d, stdout %s, stderr %q\nreference:        exit %d, stdout %s, stderr %q",
			got.code, abbrev(got.stdout), got.stderr, want.code, abbrev(want.stdout), want.stderr)
	}
}

// abbrev quotes s, or its size and ends if it is long.
func abbrev(s string) string {
	if len(s) <= 400 {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%d bytes %q...%q", len(s), s[:100], s[len(s)-100:])
}

// command runs a host program in dir (if not empty) and returns its result.
func command(t *testing.T, dir, name string, args ...string) result {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		t.Fatalf("%s: %v", name, err)
	}
	return r
}

// importImage writes img as an image archive and imports it.
func importImage(t testing.TB, img *image.Image) {
	t.Helper()
	tarPath := filepath.Join(t.TempDir(), "image.tar")
	f, err := os.Create(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	err = img.WriteTar(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := e.ctr("images", "import", tarPath); err != nil {
		t.Fatalf("import %s: %v: %s", img.Name, err, stderr)
	}
}

// runImage is run with another image than the test image.
func runImage(t *testing.T, img string, flags []string, args ...string) result {
	t.Helper()
	id := newID(t)
	stdout, stderr, err := e.ctr(ctrRunImageArgs(img, id, flags, args)...)
	r := resultOf(t, stdout, stderr, err)
	assertClean(t, id)
	return r
}
