#!/usr/bin/env bash
# Scale benchmark of our operator and gateway on the sim tier. Prints figures.
#   bench/scale.sh [N=10000] [WORKERS=2]
# Knobs: BENCH_CONCURRENCY=64 (creates in flight)  BENCH_PROBES=50 (latency probes)
#        BENCH_LIST_REQUESTS=200  BENCH_TIMEOUT=1800 (s)  BENCH_NAMESPACE=bench
#        BENCH_OPERATOR_BIN / BENCH_GATEWAY_BIN: binaries to time (else this
#        checkout's release build).
source "$(dirname "${BASH_SOURCE[0]}")/../tests/lib/env.sh"
cd "$root"
source bench/sim.sh
exec "$VENV/bin/python" bench/scale.py "${1:-10000}" "${2:-2}"
