# containerd-shim-wasm: see README.md.
#
#   make demo   build everything, run the example module through a private containerd
#   make test   unit and integration tests (root; installs runc, wabt and containerd)
#   make build  the shim, the installer and the image packer into bin/
#   make release  dist/: static binaries (amd64, arm64), the installer image, SHA256SUMS
#   make lint   go vet and gofmt
#   make fuzz   each fuzz target for FUZZTIME (2m); make test runs each for 300 inputs
#   make bench  start-up, throughput and memory against native runc, into BENCHMARKS.md
#   make bench-releases  start-up on every containerd release, printed
#   make kube   the kubelet lane: a one-node Kubernetes against the primary containerd

SHELL      := /bin/bash
GO         ?= go
BIN        := $(CURDIR)/bin
TOOLBIN    := $(CURDIR)/.tools/bin
# containerd releases, each built from the Go module proxy into
# .tools/containerd/VERSION once: the primary one runs the whole integration
# suite, the demo and the benchmark; each of the matrix runs the subset
# named in integration/containerd_test.go (matrixTests).
CONTAINERD_VERSION := v2.4.2
CONTAINERD_MATRIX  := v2.3.7 v2.2.9 v2.1.9 v2.0.14 v1.7.35
CONTAINERD_ROOT    := $(CURDIR)/.tools/containerd
export PATH := $(BIN):$(TOOLBIN):$(CONTAINERD_ROOT)/$(CONTAINERD_VERSION):$(PATH):/usr/sbin:/sbin
# The environment of the integration tests on containerd release $(1).
it_env = CONTAINERD_DIR=$(CONTAINERD_ROOT)/$(1) WASM_SHIM_BIN=$(BIN)/containerd-shim-wasm-v1 PROGRAMS_DIR=$(PROGRAMS)
# Real WASI programs built from Debian and npm packages (scripts/build-programs.sh).
PROGRAMS := $(CURDIR)/.tools/programs
# The kubelet lane's Kubernetes (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet, kubectl, kubeadm) and etcd, built from the Go
# module proxy into .tools/kubernetes/VERSION once (scripts/build-kubernetes.sh).
KUBERNETES_VERSION := v1.34.4
ETCD_VERSION       := v3.6.17
KUBE_ROOT          := $(CURDIR)/.tools/kubernetes
KUBE_DIR           := $(KUBE_ROOT)/$(KUBERNETES_VERSION)

.PHONY: all build deps packages programs containerd kubernetes demo fuzz fuzz-short test unit integration matrix kube lint clean bench bench-releases release

all: build

build:
	CGO_ENABLED=0 $(GO) build -buildvcs=auto -o $(BIN)/containerd-shim-wasm-v1 ./cmd/containerd-shim-wasm-v1
	CGO_ENABLED=0 $(GO) build -buildvcs=auto -o $(BIN)/wasm-image ./cmd/wasm-image
	CGO_ENABLED=0 $(GO) build -buildvcs=auto -o $(BIN)/containerd-shim-wasm-install ./cmd/containerd-shim-wasm-install

deps: packages containerd programs $(TOOLBIN)/wazero

# runc runs every container; wat2wasm (wabt) builds the tests' small modules;
# the CNI plugins give the CRI tests' pods their network; clang, wasi-libc,
# rustc and npm build and fetch the real programs (programs); busybox-static
# is the kubelet lane's native image, and kubelet writes iptables chains.
packages:
	@missing=""; \
	command -v runc >/dev/null || missing="$$missing runc"; \
	command -v wat2wasm >/dev/null || missing="$$missing wabt"; \
	[ -x /usr/lib/cni/bridge ] || missing="$$missing containernetworking-plugins"; \
	command -v clang >/dev/null || missing="$$missing clang"; \
	command -v wasm-ld >/dev/null || missing="$$missing lld"; \
	[ -f /usr/lib/wasm32-wasi/libc.a ] || missing="$$missing wasi-libc"; \
	ls /usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a >/dev/null 2>&1 || missing="$$missing libclang-rt-dev-wasm32"; \
	[ -x /usr/bin/rustc ] || missing="$$missing rustc"; \
	ls /usr/lib/rustlib/wasm32-wasi >/dev/null 2>&1 || missing="$$missing libstd-rust-dev-wasm32"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	[ -x /bin/busybox ] || missing="$$missing busybox-static"; \
	command -v iptables >/dev/null || missing="$$missing iptables"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# containerd, ctr and containerd's runc shim (for the CRI tests' runc pods)
# of each release (about 2 minutes each the first time).
containerd: $(foreach v,$(CONTAINERD_VERSION) $(CONTAINERD_MATRIX),$(CONTAINERD_ROOT)/$(v)/.built)
$(CONTAINERD_ROOT)/%/.built:
	@echo "building containerd $* into $(CONTAINERD_ROOT)/$*"
	GO=$(GO) ./scripts/build-containerd.sh $* $(CONTAINERD_ROOT)/$*
	touch $@

# Kubernetes and etcd for the kubelet lane (about 20 minutes on 2 cores the
# first time); the stamp names both versions, so a change of either builds
# again.
kubernetes: $(KUBE_DIR)/.built-etcd-$(ETCD_VERSION)
$(KUBE_DIR)/.built-etcd-$(ETCD_VERSION):
	@echo "building Kubernetes $(KUBERNETES_VERSION) and etcd $(ETCD_VERSION) into $(KUBE_DIR)"
	GO=$(GO) ETCD_VERSION=$(ETCD_VERSION) ./scripts/build-kubernetes.sh $(KUBERNETES_VERSION) $(KUBE_DIR)
	touch $@

# The real programs of TestRealPrograms, built once into $(PROGRAMS)
# (about a minute; the script skips what is there).
programs: packages
	./scripts/build-programs.sh $(PROGRAMS)

# The wazero CLI, the reference of TestRealPrograms and the benchmark's
# baseline: the version the shim links.
WAZERO_VERSION = $(shell $(GO) list -m -f '{{.Version}}' github.com/tetratelabs/wazero)
$(TOOLBIN)/wazero: go.mod
	GOBIN=$(TOOLBIN) CGO_ENABLED=0 $(GO) install github.com/tetratelabs/wazero/cmd/wazero@$(WAZERO_VERSION)

demo: deps build
	./scripts/demo.sh

test: deps build lint unit fuzz-short integration matrix kube

unit:
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /integration)

# The fuzz targets (package:target) of what parses untrusted input: make
# fuzz runs each for FUZZTIME (default 2 minutes), make test for 300 inputs
# each (a count, not a time: with a time, a loaded machine that is slow to
# run the seed corpus fails with "context deadline exceeded").
# A crash is saved under the package's testdata/fuzz: keep it, as a test.
FUZZ_TARGETS := internal/wasmmod:FuzzReadExports internal/runner:FuzzParseListen internal/cache:FuzzRecord internal/cache:FuzzFailure oci:FuzzDetect oci/image:FuzzModuleLayer shim:FuzzParseOptions shim:FuzzReadReasons
FUZZTIME ?= 2m
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; echo "== $$fn ($$pkg) for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) ./$$pkg || exit 1; \
	done

fuzz-short:
	@$(MAKE) --no-print-directory fuzz FUZZTIME=300x

# The whole integration suite on the primary containerd release.
integration:
	$(call it_env,$(CONTAINERD_VERSION)) $(GO) test -count=1 -timeout 30m -v ./integration/ 2>&1 | \
		grep -vE '^=== (RUN|PAUSE|CONT)'; exit $${PIPESTATUS[0]}

# The matrix subset on every other containerd release.
matrix:
	@for v in $(CONTAINERD_MATRIX); do \
		echo "== integration tests on containerd $$v (matrix subset)"; \
		INTEGRATION_MATRIX=1 $(call it_env,$$v) $(GO) test -count=1 -timeout 20m ./integration/ || exit 1; \
	done

# The kubelet lane (integration/kube): a one-node cluster on the primary
# containerd release, the handler installed by deploy/kubernetes's DaemonSet
# through a kustomize overlay, tests through the API server. KEEP_LANE=1
# keeps its directory and logs (a failed run prints the end of each log).
kube: packages kubernetes $(CONTAINERD_ROOT)/$(CONTAINERD_VERSION)/.built
	KUBE_DIR=$(KUBE_DIR) CONTAINERD_DIR=$(CONTAINERD_ROOT)/$(CONTAINERD_VERSION) \
		$(GO) test -count=1 -timeout 45m -v ./integration/kube/ 2>&1 | \
		grep -vE '^=== (RUN|PAUSE|CONT)'; exit $${PIPESTATUS[0]}

# A benchmark, not a test: it never fails on speed. BENCH_RUNS and
# BENCH_TASKS scale it down (see integration/bench_test.go).
bench: deps build $(TOOLBIN)/wazero
	./scripts/build-programs.sh $(PROGRAMS) yosys
	BENCH_OUT=$(CURDIR)/BENCHMARKS.md $(call it_env,$(CONTAINERD_VERSION)) \
		$(GO) test -tags bench -count=1 -timeout 150m -run '^TestBench$$' -v ./integration/ 2>&1 | \
		grep -vE '^=== (RUN|PAUSE|CONT)'; exit $${PIPESTATUS[0]}

# The benchmark's latency part on every containerd release, printed (the
# ratios to each release's own runc shim are what compares): BENCHMARKS.md
# quotes a run. BENCH_RUNS as for bench (default here 11).
bench-releases: deps build $(TOOLBIN)/wazero
	./scripts/build-programs.sh $(PROGRAMS) yosys
	@for v in $(CONTAINERD_VERSION) $(CONTAINERD_MATRIX); do \
		echo "== containerd $$v"; \
		BENCH_ONLY=latency BENCH_RUNS=$${BENCH_RUNS:-11} $(call it_env,$$v) \
			$(GO) test -tags bench -count=1 -timeout 60m -run '^TestBench$$' -v ./integration/ 2>&1 | \
			grep -E 'median|FAIL|^ok|panic' || exit 1; \
	done

lint:
	$(GO) vet ./...
	$(GO) vet -tags bench ./integration/
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.tools/*')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# A release in dist/: static binaries for linux/amd64 and linux/arm64, the
# installer's image (both platforms) as an OCI image layout tarball, and
# SHA256SUMS; the version is the one Go stamps from the checkout.
release:
	$(GO) run ./scripts/release -out dist

clean:
	rm -rf $(BIN) dist
