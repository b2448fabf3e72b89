#!/usr/bin/env bash
# Operator benchmark, ours vs dask-kubernetes', on the sim tier. Prints figures.
#   bench/operator.sh [N=1000] [WORKERS=4]
# Knobs: BENCH_OPERATORS=rs,py  BENCH_TIMEOUT=1800 (s, per phase)  SIM_NODES=16
#        BENCH_RATE=5 BENCH_DURATION=120 (steady load; 0 skips it)  BENCH_CONCURRENCY=64
#        N=0 skips the burst.
#        BENCH_OPERATOR_BIN=path: time that dask-operator binary (e.g. a saved
#        build, for a before/after) instead of building this checkout's.
#        BENCH_OPERATOR_ARGS="--debounce 0.1": extra flags for ours.
#        BENCH_NAMESPACE=bench: prefix of the namespaces the runs use.
source "$(dirname "${BASH_SOURCE[0]}")/../tests/lib/env.sh"
cd "$root"
if [[ -z ${BENCH_OPERATOR_BIN:-} ]]; then
  cargo build --release --locked -p dask-operator -p dask-crds
fi
operator_bin=${BENCH_OPERATOR_BIN:-$CARGO_TARGET_DIR/release/dask-operator}
# A sim (or pods) tier that is already up is used as it is: it may be shared.
# (The status goes to a variable first: `grep -q` in a pipeline under pipefail
# would fail the test by SIGPIPE and run `up` on a live control plane.)
status=$(tests/k8s/cluster status)
if [[ $status != *"kube-scheduler: running"* ]]; then
  SIM_NODES=${SIM_NODES:-16} tests/k8s/cluster up sim
fi
eval "$(tests/k8s/cluster env)"
kubectl apply --server-side --force-conflicts -f crds/yaml/ >/dev/null

# Each operator runs as its own user, matched by its own FlowSchema (at the
# exempt priority level, as an admin would be), so the API server counts its
# requests apart from every other client's.
for op in rs py; do
  kubeconfig=$(tests/k8s/cluster user "bench-operator-$op" bench-operators)
  export "BENCH_KUBECONFIG_${op^^}=$kubeconfig"
  kubectl apply -f - >/dev/null <<YAML
apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: FlowSchema
metadata: {name: bench-operator-$op}
spec:
  matchingPrecedence: 500
  priorityLevelConfiguration: {name: exempt}
  rules:
  - subjects: [{kind: User, user: {name: bench-operator-$op}}]
    resourceRules: [{verbs: ["*"], apiGroups: ["*"], resources: ["*"], clusterScope: true, namespaces: ["*"]}]
    nonResourceRules: [{verbs: ["*"], nonResourceURLs: ["*"]}]
YAML
done
kubectl apply -f - >/dev/null <<YAML
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: bench-operators}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: bench-operators}]
YAML

VENV=$(tests/python/env)
# The operator never contacts a simulated pod's fake address; the bench adds
# `--namespace NS` (one namespace, as kopf does with --namespace).
export DASK_OPERATOR_CMD="$operator_bin --resolve-schedulers-to 127.0.0.1 --metrics-addr 127.0.0.1:0 ${BENCH_OPERATOR_ARGS:-}"
exec "$VENV/bin/python" bench/operator_bench.py "$@"
