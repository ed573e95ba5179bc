// Package runner is the Wasm side of containerd-shim-wasm: the runner that
// runs inside a container as its process and executes one WebAssembly module
// in wazero with WASI preview 1; and the helpers the shim starts to compile
// (Compile, CompileMain) or validate (Check, CheckMain) a module out of its
// own process.
//
// The shim never runs guest code itself. It has runc start the runner (this
// project's own binary, bind-mounted read-only at Path) as the
// container's process, so the guest lives in the container's namespaces and
// cgroup. The runner:
//
//   - starts with an empty environment (but for the HOME runc sets), so
//     nothing in the image tunes its Go runtime (GOGC, GOMAXPROCS, GODEBUG,
//     GOMEMLIMIT);
//   - reads its Config from descriptor ConfigFD (a sealed memfd the shim
//     has runc preserve into the container) and closes it, then closes
//     every other descriptor it inherited beyond stdio;
//   - pre-opens the container root as "/" through a file system that refuses
//     procfs, sysfs and the other kernel interface file systems, and the
//     runner's own binary, checked on what a path resolves to;
//   - gives the guest real clocks, sleep and random, its args, process.env
//     plus PWD (and HOME, as runc sets it, if process.env has none), and
//     the container's stdio;
//   - maps the guest's end to an exit status (see ExitStatus).
//
// This package knows nothing of containerd, ttrpc or runc.
package runner
