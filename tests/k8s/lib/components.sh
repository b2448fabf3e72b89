# shellcheck shell=bash
# Starting, probing and stopping the control-plane processes. Each component has
# a pid file under $STATE/pids and a log under $STATE/logs; `down` stops exactly
# those pids. Everything binds to 127.0.0.1.

# nsrun CMD...: run CMD in the tier's network namespace (the `pods` tier), else here.
# nsenter, not `ip netns exec`: the latter remounts /sys, hiding the cgroup
# mounts the kubelet and runc need.
nsrun() { if [ -n "${NETNS:-}" ]; then nsenter --net="/run/netns/$NETNS" "$@"; else "$@"; fi; }

running() { local p; p=$(cat "$STATE/pids/$1.pid" 2>/dev/null) && kill -0 "$p" 2>/dev/null; }

# spawn NAME CMD...: start CMD in its own session, logging to $STATE/logs/NAME.log.
spawn() {
  local name=$1; shift
  mkdir -p "$STATE/pids" "$STATE/logs"
  local prefix=()
  [ -n "${NETNS:-}" ] && prefix=(nsenter --net="/run/netns/$NETNS")
  setsid "${prefix[@]}" "$@" >>"$STATE/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE/pids/$name.pid"
}

# fail NAME WHY: report which component failed, with the tail of its log.
fail() {
  echo "cluster: $1 failed: $2" >&2
  if [ -f "$STATE/logs/$1.log" ]; then
    echo "---- last lines of $STATE/logs/$1.log ----" >&2
    tail -n 40 "$STATE/logs/$1.log" >&2
  fi
  exit 1
}

# wait_for NAME SECONDS PROBE...: poll PROBE until it succeeds; fail if the
# process dies or time runs out.
wait_for() {
  local name=$1 secs=$2 i; shift 2
  for ((i = 0; i < secs * 5; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    running "$name" || fail "$name" "process exited"
    sleep 0.2
  done
  fail "$name" "not ready after ${secs}s"
}

https_ok() { nsrun curl -sfk --max-time 2 "$1" | grep -qx ok; }
api_ok() { nsrun curl -sf --max-time 2 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "https://127.0.0.1:$API_PORT$1"; }

start_etcd() {
  running etcd && return 0
  spawn etcd "$KUBE_BIN/etcd" --name dask-rs-test --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "dask-rs-test=http://127.0.0.1:$ETCD_PEER_PORT" \
    --listen-metrics-urls "http://127.0.0.1:$ETCD_METRICS_PORT" \
    --unsafe-no-fsync --quota-backend-bytes 4294967296 --log-level warn
  wait_for etcd 30 nsrun curl -sf --max-time 2 "http://127.0.0.1:$ETCD_METRICS_PORT/health"
}

start_apiserver() {
  running kube-apiserver && return 0
  spawn kube-apiserver "$KUBE_BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address "$API_BIND" --advertise-address "$API_ADVERTISE" --secure-port "$API_PORT" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --authorization-mode Node,RBAC --allow-privileged=true \
    --kubelet-preferred-address-types InternalIP \
    --max-requests-inflight 800 --max-mutating-requests-inflight 400 \
    --profiling=false --v 1
  wait_for kube-apiserver 90 api_ok /readyz
}

start_controller_manager() {
  running kube-controller-manager && return 0
  local kc=$STATE/controller-manager.kubeconfig
  spawn kube-controller-manager "$KUBE_BIN/kube-controller-manager" \
    --kubeconfig "$kc" --authentication-kubeconfig "$kc" --authorization-kubeconfig "$kc" \
    --bind-address 127.0.0.1 --secure-port "$KCM_PORT" \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --use-service-account-credentials --leader-elect=false \
    --kube-api-qps 200 --kube-api-burst 400 --concurrent-gc-syncs 50 \
    --profiling=false --v 1
  wait_for kube-controller-manager 60 https_ok "https://127.0.0.1:$KCM_PORT/healthz"
}

start_scheduler() {
  running kube-scheduler && return 0
  cat >"$STATE/scheduler.yaml" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: $STATE/scheduler.kubeconfig
  qps: 200
  burst: 400
leaderElection:
  leaderElect: false
EOF
  spawn kube-scheduler "$KUBE_BIN/kube-scheduler" --config "$STATE/scheduler.yaml" \
    --authentication-kubeconfig "$STATE/scheduler.kubeconfig" --authorization-kubeconfig "$STATE/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" --profiling=false --v 1
  wait_for kube-scheduler 60 https_ok "https://127.0.0.1:$SCHEDULER_PORT/healthz"
}

# kwok simulates kubelets for the nodes annotated kwok.x-k8s.io/node=fake: their
# pods go Running/Ready without containers. Pod and node IPs it hands out are
# fake and never receive traffic.
start_kwok() {
  if ! running kwok; then
    spawn kwok "$KWOK_BIN/kwok" --kubeconfig "$STATE/kwok.kubeconfig" \
      --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
      --manage-nodes-with-label-selector= --manage-single-node= \
      --cidr 10.244.0.0/16 --node-ip 10.244.0.1 --node-lease-duration-seconds 40 \
      --server-address "127.0.0.1:$KWOK_PORT"
    wait_for kwok 30 nsrun curl -sf --max-time 2 "http://127.0.0.1:$KWOK_PORT/healthz"
  fi
  local i nodes=""
  for ((i = 0; i < SIM_NODES; i++)); do
    nodes+="---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: \"0\"}
  labels: {type: kwok, kubernetes.io/hostname: kwok-node-$i, kubernetes.io/os: linux, kubernetes.io/arch: amd64}
status:
  capacity: {cpu: \"64\", memory: 256Gi, pods: \"1000\"}
  allocatable: {cpu: \"64\", memory: 256Gi, pods: \"1000\"}
"
  done
  printf '%s' "$nodes" | kctl apply -f - >/dev/null || fail kwok "could not create the simulated nodes"
  wait_for kwok 60 kctl wait --for=condition=Ready node -l type=kwok --timeout=2s
}

# The namespace "default" must have its service account before pods can be
# created there; the controller-manager makes it.
wait_default_service_account() {
  wait_for kube-controller-manager 30 kctl -n default get serviceaccount default
}

stop_component() {
  local name=$1 pid i
  pid=$(cat "$STATE/pids/$name.pid" 2>/dev/null) || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$STATE/pids/$name.pid"
}
