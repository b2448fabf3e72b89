#!/usr/bin/env bash
# Gateway benchmark: the same workload (bench/gateway_bench.py) against the
# Python dask-gateway-server and against ours, one after the other, in one run,
# both with the local backend on 127.0.0.1. Prints a side-by-side table.
#   bench/gateway.sh
source "$(dirname "${BASH_SOURCE[0]}")/../tests/lib/env.sh"
cd "$root"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --locked -p dask-gateway
VENV=$(tests/python/env)
export PATH=$VENV/bin:$PATH
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT

# bench NAME URL CMD...: start a server, wait for its health check, measure, stop it.
bench() {
  local name=$1 url=$2 pid i; shift 2
  (cd "$out" && exec "$@") >"$out/$name.log" 2>&1 &
  pid=$!
  for ((i = 0; i < 100; i++)); do curl -sf "$url/api/health" >/dev/null && break; sleep 0.2; done
  python bench/gateway_bench.py "$name" "$url" "$pid" >"$out/$name.json" || { tail -20 "$out/$name.log"; exit 1; }
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

BENCH_PY_PORT=18100 bench python http://127.0.0.1:18100 dask-gateway-server -f "$root/bench/dask_gateway_config.py"
bench dask-rs http://127.0.0.1:18200 "$CARGO_TARGET_DIR/release/dask-gateway" \
  --listen 127.0.0.1:18200 --dask "$VENV/bin/dask"

python - "$out/python.json" "$out/dask-rs.json" <<'PY'
import json, sys
py, rs = (json.load(open(p)) for p in sys.argv[1:])
print(f"{'figure':34} {'python':>12} {'dask-rs':>12} {'ratio':>8}")
def row(label, a, b, better="higher"):
    ratio = (b / a) if better == "higher" else (a / b)
    print(f"{label:34} {a:12.2f} {b:12.2f} {ratio:7.1f}x")
for key in (k for k in py if k.endswith(("c1", "c200"))):
    row(f"{key} req/s", py[key]["rps"], rs[key]["rps"])
    row(f"{key} p99 ms", py[key]["p99_ms"], rs[key]["p99_ms"], "lower")
row("new_cluster -> running (s)", py["new_cluster_s"], rs["new_cluster_s"], "lower")
row("scale(2) -> 2 workers (s)", py["scale2_s"], rs["scale2_s"], "lower")
row("proxy round trip (MiB/s)", py["proxy_mib_s"], rs["proxy_mib_s"])
print(f"{'proxy vs direct TLS':34} {py['proxy_mib_s'] / py['direct_mib_s']:11.0%} {rs['proxy_mib_s'] / rs['direct_mib_s']:11.0%}")
row("RSS idle (MiB)", py["rss_idle_mib"], rs["rss_idle_mib"], "lower")
row("RSS after load (MiB)", py["rss_after_load_mib"], rs["rss_after_load_mib"], "lower")
PY
