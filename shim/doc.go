// Package shim is the containerd-facing side of containerd-shim-wasm: the
// bootstrap (start, delete, -info) for containerd 1.7 to 2.4 (see Run), the
// task service v3 (also served as v2, for containerd 1.7) and its events.
//
// Container lifecycle, stdio, exits and events are containerd's runc shim's
// own (its manager, task service, process and runc packages): every
// container, Wasm or native, is created and started by runc from the
// bundle's spec. What this package adds is Wasm-specific:
//
//   - Create resolves process.args[0] in the container's root (package oci);
//     a Wasm module is checked in a short-lived helper process, then the
//     spec is rewritten so that runc starts the runner (package runtime),
//     bind-mounted read-only from the shim's own binary; its configuration
//     reaches it as a descriptor that `runc create` preserves into the
//     container (see configMonitor). Native programs run unchanged.
//   - Kill turns a terminating signal to a Wasm task into SIGKILL (a WASI
//     preview 1 guest cannot handle signals and Go cannot preempt a spinning
//     guest) and the exit is reported as 128 + the requested signal.
//   - Runtime options come as runc's options, or as a TOML table from CRI's
//     handler options or ctr's --runtime-config-path (see Options).
package shim
