#!/usr/bin/env bash
# Gateway benchmark: the same workload (bench/gateway_bench.py) against the
# Python dask-gateway-server and against ours, one after the other, in one run,
# both with the local backend on 127.0.0.1, next to the physical limit: a
# minimal responder (bench/responder.c: fixed bytes, no parsing). Prints a
# side-by-side table.
#   bench/gateway.sh
# Knobs: BENCH_LIFECYCLE_RUNS=20 (new_cluster and scale(2) runs per server);
#        BENCH_GATEWAY_POOL_CONFIG=FILE: extra gateway TOML (e.g. a warm pool)
#        for a third run of ours, "dask-rs pool"; without it that column is n/a.
source "$(dirname "${BASH_SOURCE[0]}")/../tests/lib/env.sh"
cd "$root"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --locked -p dask-gateway
responder=$DASK_RS_CACHE/bench/responder
if [ ! -x "$responder" ] || [ bench/responder.c -nt "$responder" ]; then
  mkdir -p "$(dirname "$responder")"
  cc -O2 -Wall -Wextra -pthread -o "$responder" bench/responder.c
fi
VENV=$(tests/python/env)
export PATH=$VENV/bin:$PATH
out=$(mktemp -d)
# Our servers' state (clusters' records) in the run's own directory: the
# default one is taken while another gateway runs on this machine.
export XDG_STATE_HOME=$out/state
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT

# bench NAME URL [--load-only] -- CMD...: start a server, wait until it answers,
# measure, stop it.
bench() {
  local name=$1 url=$2 args=() pid i; shift 2
  while [ "$1" != -- ]; do args+=("$1"); shift; done; shift
  (cd "$out" && exec "$@") >"$out/$name.log" 2>&1 &
  pid=$!
  for ((i = 0; i < 100; i++)); do curl -sf "$url/api/health" >/dev/null && break; sleep 0.2; done
  python bench/gateway_bench.py "$name" "$url" "$pid" "${args[@]}" >"$out/$name.json" || { tail -20 "$out/$name.log"; exit 1; }
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

bench responder http://127.0.0.1:18300 --load-only -- "$responder" 18300
BENCH_PY_PORT=18100 bench python http://127.0.0.1:18100 -- dask-gateway-server -f "$root/bench/dask_gateway_config.py"
bench dask-rs http://127.0.0.1:18200 -- "$CARGO_TARGET_DIR/release/dask-gateway" \
  --listen 127.0.0.1:18200 --dask "$VENV/bin/dask"
if [ -n "${BENCH_GATEWAY_POOL_CONFIG:-}" ]; then
  bench pool http://127.0.0.1:18400 -- "$CARGO_TARGET_DIR/release/dask-gateway" \
    --config "$(realpath "$BENCH_GATEWAY_POOL_CONFIG")" --listen 127.0.0.1:18400 --dask "$VENV/bin/dask"
fi

python bench/gateway_report.py "$out"
