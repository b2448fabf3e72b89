#!/usr/bin/env bash
# bench/chaos.py on the sim tier with this checkout's (or BENCH_*_BIN) binaries; see its docstring.
#   bench/chaos.sh [ARGS...]
source "$(dirname "${BASH_SOURCE[0]}")/../tests/lib/env.sh"
cd "$root"
source bench/sim.sh
exec "$VENV/bin/python" bench/chaos.py "$@"
