package wasmmod

import "encoding/binary"

// HeaderSize is the length of a WebAssembly binary's preamble: the magic
// "\0asm" and a 32-bit version field.
const HeaderSize = 8

// componentLayer is the "layer" half of the version field of a component
// (the component model's binary format). A core module's layer is 0.
const componentLayer = 1

// IsComponent reports whether header, a binary's first HeaderSize bytes,
// is the preamble of a WebAssembly component (the binary format of WASI
// preview 2) rather than of a core module: same magic, but the upper half
// of the version field, the layer, is 1. It returns the component
// format's version too.
func IsComponent(header []byte) (version uint16, ok bool) {
	if len(header) < HeaderSize || string(header[:4]) != wasmMagic {
		return 0, false
	}
	if binary.LittleEndian.Uint16(header[6:8]) != componentLayer {
		return 0, false
	}
	return binary.LittleEndian.Uint16(header[4:6]), true
}

// ErrComponent says what a component gets: the runner runs core modules of
// WASI preview 1 only.
const ErrComponent = componentError("WASI preview 2 components are not supported: build it as a WASI preview 1 core module (for example GOOS=wasip1, or Rust's wasm32-wasip1 target)")

type componentError string

func (e componentError) Error() string { return string(e) }
