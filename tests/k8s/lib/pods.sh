# shellcheck shell=bash
# The `pods` tier: real pods (kubelet + containerd + runc + CNI bridge), with
# kube-proxy for Services and CoreDNS for cluster DNS.
#
# The whole tier runs inside a network namespace of its own ($NETNS): pods need
# to reach the API server and each other through a bridge, and the namespace
# keeps every listener and every pod address off the host's network. Clients run
# inside it too: `tests/k8s/cluster exec CMD...`.

NODE_NAME=dask-rs-node
BRIDGE=daskrs0
BRIDGE_IP=10.88.0.1
POD_CIDR=10.88.0.0/16
KUBELET_PORT=${KUBELET_PORT:-20250}

setup_netns() {
  ip netns list | grep -qw "$NETNS" || ip netns add "$NETNS"
  nsrun ip link set lo up
  if ! nsrun ip link show "$BRIDGE" >/dev/null 2>&1; then
    nsrun ip link add "$BRIDGE" type bridge
    nsrun ip addr add "$BRIDGE_IP/16" dev "$BRIDGE"
  fi
  nsrun ip link set "$BRIDGE" up
  # Service IPs exist only as kube-proxy's iptables rules; a route lets
  # processes in the namespace (not only pods) reach them.
  nsrun ip route replace "$SERVICE_CIDR" dev "$BRIDGE"
  nsrun sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true
}

teardown_netns() {
  ip netns list | grep -qw "$NETNS" && ip netns del "$NETNS"
  return 0
}

# Images the tier needs before any pod can start: the sandbox ("pause") image
# and a busybox image for tests, both from Debian's busybox-static.
build_base_images() {
  local out=$CACHE/images
  [ -f "$out/busybox.tar" ] && [ -f "$out/pause.tar" ] && return 0
  command -v busybox >/dev/null || die "busybox-static is required (apt-get install busybox-static)"
  mkdir -p "$out"
  local rootfs; rootfs=$(mktemp -d)
  mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/etc"
  cp "$(command -v busybox)" "$rootfs/bin/busybox"
  local app
  for app in sh sleep echo cat ls wget nslookup hostname env true; do ln -s busybox "$rootfs/bin/$app"; done
  echo 'nobody:x:65534:65534:nobody:/:/bin/false' >"$rootfs/etc/passwd"
  python3 "$K8S_DIR/lib/mkimage.py" "$rootfs" dask-rs.local/busybox:1 "$out/busybox.tar" --cmd '["sh"]'
  python3 "$K8S_DIR/lib/mkimage.py" "$rootfs" dask-rs.local/pause:1 "$out/pause.tar" \
    --entrypoint '["/bin/sleep", "2147483647"]'
  rm -rf "$rootfs"
}

# import_image TAR: load an image archive into the CRI namespace of containerd.
import_image() {
  nsrun ctr --address "$STATE/containerd/containerd.sock" -n k8s.io images import --no-unpack=false "$1" >/dev/null \
    || fail containerd "could not import $1"
}

start_containerd() {
  running containerd && return 0
  mkdir -p "$STATE/containerd" "$STATE/cni/net.d"
  cat >"$STATE/cni/net.d/10-dask-rs.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "dask-rs", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$BRIDGE_IP"}]],
            "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$STATE/cni/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOF
  cat >"$STATE/containerd/config.toml" <<EOF
version = 2
root = "$STATE/containerd/root"
state = "$STATE/containerd/state"
[grpc]
  address = "$STATE/containerd/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "dask-rs.local/pause:1"
  # This sandbox forbids lowering oom_score_adj below our own; without this, runc
  # fails to start any pod ("failed to update /proc/self/oom_score_adj").
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
EOF
  spawn containerd containerd --config "$STATE/containerd/config.toml"
  wait_for containerd 30 nsrun ctr --address "$STATE/containerd/containerd.sock" version
  build_base_images
  import_image "$CACHE/images/pause.tar"
  import_image "$CACHE/images/busybox.tar"
  local extra
  for extra in "$CACHE"/images/extra/*.tar; do [ -f "$extra" ] && import_image "$extra"; done
  return 0
}

start_coredns() {
  running coredns && return 0
  cat >"$STATE/Corefile" <<EOF
.:53 {
    bind $BRIDGE_IP
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $STATE/coredns.kubeconfig dask-rs-test
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 5
}
EOF
  spawn coredns "$COREDNS_BIN/coredns" -conf "$STATE/Corefile"
  wait_for coredns 30 nsrun busybox nslookup kubernetes.default.svc.cluster.local "$BRIDGE_IP"
}

start_kube_proxy() {
  running kube-proxy && return 0
  spawn kube-proxy "$KUBE_BIN/kube-proxy" --kubeconfig "$STATE/kube-proxy.kubeconfig" \
    --hostname-override "$NODE_NAME" --cluster-cidr "$POD_CIDR" --proxy-mode iptables --masquerade-all \
    --conntrack-max-per-core 0 --nodeport-addresses primary --iptables-localhost-nodeports=false --healthz-bind-address "127.0.0.1:20256" --metrics-bind-address "127.0.0.1:20249" --v 1
  wait_for kube-proxy 30 nsrun curl -sf --max-time 2 "http://127.0.0.1:20256/healthz"
}

# kube-network-policies enforces NetworkPolicies: nftables rules in the tier's
# namespace send the first packet of each connection to or from a pod that a
# policy selects to an nfqueue, where the agent accepts or drops it. It reads
# its API credentials only the in-cluster way (a service-account token and CA
# under /var/run/secrets, KUBERNETES_SERVICE_HOST/PORT), so it runs in a
# private mount namespace where $STATE/kube-network-policies/run is mounted on
# /run (= /var/run) and holds those two files. It learns pod IPs from the API
# (containerd 1.6 has no NRI socket for it). Fails closed: while it is down,
# new connections of the pods a policy selects are dropped. KNP_VERBOSITY=2
# logs each verdict (source and destination pods, accept or drop).
KNP_METRICS_PORT=${KNP_METRICS_PORT:-20246}
start_kube_network_policies() {
  [ "${KUBE_NETWORK_POLICIES:-1}" = 0 ] && { log "kube-network-policies: off (KUBE_NETWORK_POLICIES=0)"; return 0; }
  running kube-network-policies && return 0
  local run=$STATE/kube-network-policies/run
  local sa=$run/secrets/kubernetes.io/serviceaccount
  mkdir -p "$sa"
  kctl apply -f - >/dev/null <<EOF || fail kube-network-policies "could not create its service account and RBAC"
apiVersion: v1
kind: ServiceAccount
metadata: {name: kube-network-policies, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: kube-network-policies}
rules:
- {apiGroups: [""], resources: [pods, namespaces], verbs: [list, watch]}
- {apiGroups: [networking.k8s.io], resources: [networkpolicies], verbs: [list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: kube-network-policies}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kube-network-policies}
subjects: [{kind: ServiceAccount, name: kube-network-policies, namespace: kube-system}]
EOF
  kctl -n kube-system create token kube-network-policies --duration 720h >"$sa/token" \
    || fail kube-network-policies "could not mint its service-account token"
  cp "$PKI/ca.crt" "$sa/ca.crt"
  # A table left by an agent that was killed would pass the readiness probe.
  nsrun nft delete table inet kube-network-policies 2>/dev/null || true
  # shellcheck disable=SC2016 # $0 and $@ belong to the inner shell
  spawn kube-network-policies env KUBERNETES_SERVICE_HOST=127.0.0.1 KUBERNETES_SERVICE_PORT="$API_PORT" \
    unshare --mount --propagation private sh -c 'mount --bind "$0" /run && exec "$@"' "$run" \
    "$KNP_BIN/kube-network-policies" --hostname-override "$NODE_NAME" \
    --metrics-bind-address "127.0.0.1:$KNP_METRICS_PORT" --v "${KNP_VERBOSITY:-1}"
  # Ready once its informers have synced and its table is in place.
  wait_for kube-network-policies 60 nsrun nft list table inet kube-network-policies
}

start_kubelet() {
  running kubelet && return 0
  mkdir -p "$STATE/kubelet"
  : >"$STATE/resolv.conf"
  cat >"$STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $BRIDGE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 20248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
failCgroupV1: false
containerRuntimeEndpoint: unix://$STATE/containerd/containerd.sock
clusterDomain: cluster.local
clusterDNS: [$BRIDGE_IP]
resolvConf: $STATE/resolv.conf
failSwapOn: false
maxPods: 110
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: "0%", imagefs.available: "0%", nodefs.inodesFree: "0%"}
EOF
  spawn kubelet "$KUBE_BIN/kubelet" --config "$STATE/kubelet.yaml" --kubeconfig "$STATE/kubelet.kubeconfig" \
    --hostname-override "$NODE_NAME" --node-ip "$BRIDGE_IP" \
    --root-dir "$STATE/kubelet" --cert-dir "$STATE/kubelet/pki" --v 1
  wait_for kubelet 60 nsrun curl -sf --max-time 2 "http://127.0.0.1:20248/healthz"
  wait_for kubelet 90 kctl wait --for=condition=Ready "node/$NODE_NAME" --timeout=2s
}

# Before the components stop: let the kubelet delete every pod the normal way,
# so containers, mounts and pod network namespaces are cleaned up by their owners.
drain_pods() {
  running kubelet && running kube-apiserver || return 0
  kctl delete pods --all --all-namespaces --grace-period=5 --timeout=60s --wait >/dev/null 2>&1 || true
}

# Whatever a crash left behind: container shims started by *our* containerd
# (matched by its socket path), processes in the kubelet's cgroups, and mounts
# under the state directory.
cleanup_pod_leftovers() {
  pkill -KILL -f "containerd-shim-runc-v2 .*-address $STATE/containerd/containerd.sock" 2>/dev/null || true
  find /sys/fs/cgroup/*/kubepods -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u | xargs -r kill -KILL 2>/dev/null
  find /sys/fs/cgroup/*/kubepods -depth -type d -exec rmdir {} + 2>/dev/null || true
  grep -o " $STATE/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  return 0
}
