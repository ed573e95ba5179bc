// Package integration holds the tests that run containerd-shim-wasm-v1
// under a real containerd (v2.4.2, started by the tests in a temporary
// directory) with a real runc and images the tests build. They need root.
//
// The tests find containerd and ctr on PATH or in the repository's
// .tools/bin (where `make test` installs them); set WASM_SHIM_BIN to test a
// prebuilt shim binary instead of building one.
package integration
