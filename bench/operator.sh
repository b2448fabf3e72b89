#!/usr/bin/env bash
# Operator benchmark, ours vs dask-kubernetes', on the sim tier. Prints figures.
#   bench/operator.sh [N=1000] [WORKERS=4]
source "$(dirname "${BASH_SOURCE[0]}")/../tests/lib/env.sh"
cd "$root"
cargo build --release --locked -p dask-operator -p dask-crds
SIM_NODES=${SIM_NODES:-16} tests/k8s/cluster up sim
eval "$(tests/k8s/cluster env)"
kubectl apply --server-side --force-conflicts -f crds/yaml/ >/dev/null
VENV=$(tests/python/env)
# The operator never contacts a simulated pod's fake address.
# Watching one namespace, as kopf does with --namespace.
export DASK_OPERATOR_CMD="$CARGO_TARGET_DIR/release/dask-operator --namespace bench-rs --resolve-schedulers-to 127.0.0.1"
exec "$VENV/bin/python" bench/operator_bench.py "$@"
