// Package oci reads OCI bundles and runtime specs for the shim: it resolves a
// container's entrypoint inside its root file system the way runc would, and
// tells whether that entrypoint is a WebAssembly module or a native program.
//
// It knows the runtime spec, not containerd or the shim: every function here
// works on a bundle directory and a spec.
package oci
