# shellcheck shell=bash
# The set-up every script of the checkout shares. Source it first:
#   source "$(dirname "${BASH_SOURCE[0]}")/../tests/lib/env.sh"   (path relative to the script)
# It sets:
#   root            the checkout (callers `cd "$root"` when they work from it)
#   DASK_RS_CACHE   heavy artefacts kept outside the clone: kube binaries, images,
#                   the Python venv, the cargo target dir
#   PATH            with the Rust and Go toolchains
#   CARGO_TARGET_DIR  unless the caller chose one
# and the strict mode (errexit, nounset, pipefail).
set -euo pipefail
# shellcheck disable=SC2034 # used by the scripts that source this
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DASK_RS_CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/dask-rs
export PATH=$HOME/.cargo/bin:/usr/local/go/bin:$PATH
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$DASK_RS_CACHE/target}
