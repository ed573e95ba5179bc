#!/usr/bin/env bash
# build-kubernetes.sh VERSION DIR: build the Kubernetes commands the kubelet
# lane runs (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
# kubectl, kubeadm) of one release, and etcd, into DIR, from the Go module
# proxy. ETCD_VERSION (default v3.6.17) picks etcd's release.
#
# k8s.io/kubernetes is not meant to be required by other modules: its go.mod
# names its staging modules (k8s.io/api, k8s.io/client-go, ...) as v0.0.0,
# replaced by directories of its own tree. A throwaway module requires it and
# replaces each of those with the matching v0.MINOR.PATCH release. The two
# sample modules are left out: the proxy does not serve them and no command
# needs them.
#
# About 20 minutes on 2 cores the first time (etcd about 2 more). DIR/.version
# names what was built; the Makefile builds again only when it differs.
set -euo pipefail
version=$1
out=$2
etcd_version=${ETCD_VERSION:-v3.6.17}
go=${GO:-go}
case $version in
v1.*.*) ;;
*) echo "build-kubernetes.sh: VERSION is v1.MINOR.PATCH, not $version" >&2; exit 2 ;;
esac
staging_version=v0.${version#v1.}
minor=${version#v1.}
minor=${minor%%.*}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false

# Kubernetes.
mkdir "$work/kube"
cd "$work/kube"
$go mod init kubernetes-build >/dev/null 2>&1
gomod=$($go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
[ -f "$gomod" ] || { echo "build-kubernetes.sh: no go.mod for k8s.io/kubernetes@$version" >&2; exit 1; }
# The staging modules: each `k8s.io/X => ./staging/src/k8s.io/X`.
staging=$(sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._-]*\) => \./staging/.*#\1#p' "$gomod" |
	grep -vE '^k8s\.io/sample-(cli-plugin|controller)$' | sort -u)
[ -n "$staging" ] || { echo "build-kubernetes.sh: no staging modules found in $gomod" >&2; exit 1; }
{
	echo "require k8s.io/kubernetes $version"
	for m in $staging; do echo "replace $m => $m $staging_version"; done
} >>go.mod
cmds=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl kubeadm)
pkgs=("${cmds[@]/#/k8s.io/kubernetes/cmd/}")
# With @VERSION: a bare package path would upgrade k8s.io/kubernetes.
if ! log=$($go get "${pkgs[@]/%/@$version}" 2>&1); then
	echo "$log" >&2
	exit 1
fi
# kubelet reports its version to the API server and kubeadm checks it: stamp
# it, or every command says v0.0.0.
ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X $p.gitVersion=$version -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
	ldflags+=" -X $p.buildDate=1970-01-01T00:00:00Z"
done
$go build -trimpath -ldflags="$ldflags" -o "$out/" "${pkgs[@]}"

# etcd.
mkdir "$work/etcd"
cd "$work/etcd"
$go mod init etcd-build >/dev/null 2>&1
if ! log=$($go get "go.etcd.io/etcd/server/v3@$etcd_version" 2>&1); then
	echo "$log" >&2
	exit 1
fi
$go build -trimpath -ldflags="-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3

echo "$version etcd $etcd_version" >"$out/.version"
