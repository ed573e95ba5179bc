// Package integration holds the tests that run containerd-shim-wasm-v1
// under a real containerd (started by the tests in a temporary directory)
// with a real runc and images the tests build. They need root.
//
// The tests use the containerd release in CONTAINERD_DIR, or else the
// newest one `make test` built under .tools/containerd; set WASM_SHIM_BIN
// to test a prebuilt shim binary instead of building one. INTEGRATION_MATRIX
// runs the subset each older release runs (matrixTests).
//
// helpers_test.go is the whole harness: the private containerd and its
// configuration per release, the fixtures (modules, programs, the image),
// ctr and CRI clients, leak checks. The other files hold tests only.
package integration
