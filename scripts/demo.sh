#!/usr/bin/env bash
# make demo: run the example Wasm module through containerd-shim-wasm-v1 on a
# private containerd under a temporary directory, then stop and clean up.
# Expects bin/ (make build) and containerd, ctr and runc on PATH (make deps).
set -euo pipefail
cd "$(dirname "$0")/.."

tmp=$(mktemp -d /tmp/shim-wasm-demo.XXXXXX)
containerd_pid=""
cleanup() {
	if [ -n "$containerd_pid" ]; then
		kill "$containerd_pid" 2>/dev/null || true
		wait "$containerd_pid" 2>/dev/null || true
	fi
	# Unmount anything a failed run left under the demo directory, deepest first.
	grep -o " $tmp/[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
	rm -rf "$tmp"
	# The compile helpers' parent cgroup (their own are removed as they exit).
	find /sys/fs/cgroup -maxdepth 2 -type d -name "$compile_cgroup" -exec rmdir {} + 2>/dev/null || true
}
compile_cgroup="containerd-shim-wasm-demo-$$"
trap cleanup EXIT

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "Starting a private containerd in $tmp"
cat > "$tmp/containerd.toml" <<TOML
version = 3
root = "$tmp/root"
state = "$tmp/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime"]
[grpc]
  address = "$tmp/containerd.sock"
[ttrpc]
  address = "$tmp/containerd.sock.ttrpc"
TOML
# runc's state and the compile cache live under the demo directory too.
printf 'Root = "%s/runc"\nCacheRoot = "%s/cache"\nCompileCgroup = "/%s"\n' "$tmp" "$tmp" "$compile_cgroup" > "$tmp/runtime-options.toml"
PATH="$PWD/bin:$PATH" containerd --config "$tmp/containerd.toml" > "$tmp/containerd.log" 2>&1 &
containerd_pid=$!
ctr() { command ctr --address "$tmp/containerd.sock" "$@" 2> >(grep -v DEPRECATION >&2); }
for _ in $(seq 100); do ctr version >/dev/null 2>&1 && break; sleep 0.1; done
ctr version >/dev/null

say "Building examples/hello for WASI (GOOS=wasip1 GOARCH=wasm)"
GOOS=wasip1 GOARCH=wasm go build -o "$tmp/hello.wasm" ./examples/hello
ls -l "$tmp/hello.wasm"

say "Packing it as an OCI image and importing it"
bin/wasm-image -o "$tmp/hello.tar" -name example.local/hello:latest \
	-wasm "$tmp/hello.wasm" -file examples/hello/greeting.txt:/etc/greeting.txt
ctr images import "$tmp/hello.tar"

run() {
	local start end status=0
	start=$(date +%s%N)
	ctr run --rm --runtime io.containerd.wasm.v1 --runtime-config-path "$tmp/runtime-options.toml" \
		example.local/hello:latest "$1" /hello.wasm Kubernetes || status=$?
	end=$(date +%s%N)
	echo "(exit status $status, $(( (end - start) / 1000000 )) ms)"
}
say "ctr run --rm --runtime io.containerd.wasm.v1 example.local/hello:latest demo /hello.wasm Kubernetes"
echo "First run on this node: the module is compiled into the cache."
run demo
say "The same again: the compiled module is loaded from the cache"
run demo-again

say "Stopping containerd and cleaning up"
