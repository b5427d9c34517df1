#!/usr/bin/env bash
# Differential fuzzing of the node's WebSocket frame decoder against tungstenite (not run in CI):
# random client frame streams (fragmentation, control frames between fragments, text, close codes
# and reasons of every kind, one corruption per stream some of the time), fed to both; any
# disagreement fails with the case's seed. See crates/ws/src/differential.rs.
#
#   scripts/fuzz-ws.sh [CASES] [SEED]    # defaults: 10000000 cases, a seed from the clock
#
# Re-run one failing case: SIGNAL_MESH_WS_DIFF_CASES=1 SIGNAL_MESH_WS_DIFF_SEED=<seed> \
#   cargo test -p signal-mesh-ws --lib differential
set -euo pipefail
cd "$(dirname "$0")/.."
cases=${1:-10000000}
seed=${2:-$(printf '%x' "$(date +%s%N)")}
echo "fuzz-ws: $cases cases from seed 0x$seed (release build)"
start=$(date +%s)
SIGNAL_MESH_WS_DIFF_CASES=$cases SIGNAL_MESH_WS_DIFF_SEED=$seed \
  cargo test --release --locked -p signal-mesh-ws --lib differential -- --nocapture
echo "fuzz-ws: $cases cases, no disagreement, $(( $(date +%s) - start )) s"
