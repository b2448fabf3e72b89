# shellcheck shell=bash
# shellcheck disable=SC2034 # the variables are the sourcing scripts'
# What tests/kind/node-image and tests/kind/run share: versions, cache paths and
# the podman set-up. Sourced after tests/lib/env.sh.

# shellcheck source=../k8s/versions.env
source "${root:?source tests/lib/env.sh first}/tests/k8s/versions.env"
KIND_VERSION=v0.33.0            # sigs.k8s.io/kind, built from the Go module proxy
CRICTL_VERSION=v1.34.0          # sigs.k8s.io/cri-tools (the proxy has no v1.35): `kind load` asks the node's crictl
DEBIAN_SUITE=bookworm           # the node's root filesystem, from Debian's mirror
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

KIND_DIR=$DASK_RS_CACHE/kind-$KIND_VERSION
KIND_BIN=$KIND_DIR/bin
KUBE_BIN=$DASK_RS_CACHE/k8s-$KUBE_VERSION/bin
TOOLS_BIN=$DASK_RS_CACHE/kubectl-layer-$KUBECTL_LAYER_VERSION/bin
COREDNS_BIN=$DASK_RS_CACHE/coredns-$COREDNS_VERSION/bin
# The node image is keyed by everything that goes into it.
NODE_KEY=$(printf '%s\n' "$KIND_VERSION" "$KUBE_VERSION" "$COREDNS_VERSION" "$CRICTL_VERSION" "$DEBIAN_SUITE" \
  "$(cat "$root/tests/kind/packages" "$root/tests/kind/node-image" "$root/tests/k8s/lib/mkimage.py")" \
  | sha256sum | cut -c1-12)
NODE_DIR=$DASK_RS_CACHE/kind-node-$KUBE_VERSION-$NODE_KEY
NODE_IMAGE=localhost/dask-rs/kind-node:$KUBE_VERSION-$NODE_KEY
ARTIFACTS=$root/tests/artifacts/kind

# podman, not Docker: kind's podman provider. podman's default ulimits for root
# (nofile and nproc of 1M and 4M) exceed this machine's hard limits, and without
# CAP_SYS_RESOURCE runc cannot raise them ("error setting rlimit type 7:
# operation not permitted"), so every container gets limits that fit.
export KIND_EXPERIMENTAL_PROVIDER=podman
export CONTAINERS_CONF=$DASK_RS_CACHE/kind-containers.conf
write_containers_conf() {
  local nofile nproc
  nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
  [ "$nproc" = unlimited ] && nproc=1048576
  # conmon runs with nproc capped at 32768: that is the highest runc may set.
  [ "$nproc" -gt 32768 ] && nproc=32768
  printf '[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=%s:%s"]\n' "$nofile" "$nofile" "$nproc" "$nproc" \
    >"$CONTAINERS_CONF"
}

log() { echo "kind: $*" >&2; }
die() { echo "kind: $*" >&2; exit 1; }

# timed NAME CMD...: run CMD, append "NAME SECONDS" to $ARTIFACTS/times.
# (CMD runs as a plain command, so errexit still stops it at its first failure.)
timed() {
  local name=$1 start; shift
  start=$(date +%s)
  "$@"
  echo "$name $(($(date +%s) - start))s" | tee -a "$ARTIFACTS/times" >&2
}
