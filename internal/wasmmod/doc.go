// Package wasmmod reads what the shim checks of a WebAssembly module before
// it compiles it: which functions the module exports, and their signatures.
// That is enough to know, cheaply and before the module reaches wazero,
// whether a container's entry function exists and can be called (see
// Exports.CheckEntry).
//
// A module is untrusted input. ReadExports therefore reads a binary module
// sequentially and only as far as its export section: the sections after it
// (start, element, code, data), which make up most of a module, are never
// read. It reads at most MaxSize bytes, checks every count and length it
// decodes against the bytes actually present before it allocates anything
// for them, and keeps what it needs of the sections it reads in a compact
// form, so that the memory it uses is a small multiple of the size of those
// sections whatever they declare.
//
// ReadExports validates what it reads as the binary format requires (and as
// wazero, which compiles the module afterwards, accepts), but it is not a
// validator: it does not look at the sections it skips, so a module it
// accepts may still fail to compile.
package wasmmod

// MaxSize is the largest module the shim accepts (512 MiB): one constant for
// the shim, the compile helper and the runner. ReadExports never reads more
// than MaxSize bytes of a module.
const MaxSize = 512 << 20
