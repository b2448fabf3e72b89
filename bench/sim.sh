# shellcheck shell=bash
# Shared set-up of the sim-tier benches (scale, load, soak, chaos). Source it
# after tests/lib/env.sh, from $root. It:
#   - uses the sim tier as it is when it is up (it may be shared), else starts it;
#   - applies the checkout's CRDs;
#   - mints the client certificate `bench-operator-rs` (group bench-operators,
#     cluster-admin) with its own exempt FlowSchema, so the API server counts
#     our operator's requests apart (BENCH_KUBECONFIG_RS);
#   - exports DASK_OPERATOR_BIN / DASK_GATEWAY_BIN (BENCH_OPERATOR_BIN /
#     BENCH_GATEWAY_BIN, else this checkout's release build), DASK_OPERATOR_CMD
#     and VENV (the test venv's Python).
if [[ -z ${BENCH_OPERATOR_BIN:-} || -z ${BENCH_GATEWAY_BIN:-} ]]; then
  cargo build --release --locked -p dask-operator -p dask-gateway
fi
export DASK_OPERATOR_BIN=${BENCH_OPERATOR_BIN:-$CARGO_TARGET_DIR/release/dask-operator}
export DASK_GATEWAY_BIN=${BENCH_GATEWAY_BIN:-$CARGO_TARGET_DIR/release/dask-gateway}
status=$(tests/k8s/cluster status)
if [[ $status != *"kube-scheduler: running"* ]]; then
  SIM_NODES=${SIM_NODES:-16} tests/k8s/cluster up sim
fi
eval "$(tests/k8s/cluster env)"
kubectl apply --server-side --force-conflicts -f crds/yaml/ >/dev/null
BENCH_KUBECONFIG_RS=$(tests/k8s/cluster user bench-operator-rs bench-operators)
export BENCH_KUBECONFIG_RS
kubectl apply -f - >/dev/null <<YAML
apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: FlowSchema
metadata: {name: bench-operator-rs}
spec:
  matchingPrecedence: 500
  priorityLevelConfiguration: {name: exempt}
  rules:
  - subjects: [{kind: User, user: {name: bench-operator-rs}}]
    resourceRules: [{verbs: ["*"], apiGroups: ["*"], resources: ["*"], clusterScope: true, namespaces: ["*"]}]
    nonResourceRules: [{verbs: ["*"], nonResourceURLs: ["*"]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: bench-operators}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: bench-operators}]
YAML
VENV=$(tests/python/env)
export VENV
# The operator never contacts a simulated pod's fake address.
export DASK_OPERATOR_CMD="$DASK_OPERATOR_BIN --resolve-schedulers-to 127.0.0.1 --metrics-addr 127.0.0.1:0 ${BENCH_OPERATOR_ARGS:-}"
