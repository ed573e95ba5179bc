// Package shim is the containerd-facing side of containerd-shim-wasm: the
// bootstrap (start, delete, -info) for containerd 1.7 to 2.4 (see Run), the
// task service v3 (also served as v2, for containerd 1.7) and its events.
//
// Container lifecycle, stdio, exits and events are containerd's runc shim's
// own (its manager, task service, process and runc packages): every
// container, Wasm or native, is created and started by runc from the
// bundle's spec. What this package adds is Wasm-specific:
//
//   - Create resolves process.args[0] in the container's root (package oci).
//     For a Wasm module it checks what is cheap first (the spec, the
//     runner's environment, the module's size and its entry function, read
//     from the export section by package wasmmod), then has the module
//     compiled in a short-lived helper process into the node's cache (or
//     finds it there), and rewrites the spec so that runc starts the runner
//     (package runner), bind-mounted read-only from the shim's own binary;
//     its configuration reaches it as a descriptor that `runc create`
//     preserves into the container (see fdMonitor). Native programs run
//     unchanged.
//   - What the shim knows of each container is one record (container) in
//     one registry (containers), from Create until the container is deleted
//     and its events are out.
//   - Kill turns a terminating signal to a Wasm task into SIGKILL (a WASI
//     preview 1 guest cannot handle signals and Go cannot preempt a spinning
//     guest) and the exit is reported as 128 + the requested signal.
//   - Runtime options come as runc's options, or as a TOML table from CRI's
//     handler options or ctr's --runtime-config-path (see Options).
package shim
