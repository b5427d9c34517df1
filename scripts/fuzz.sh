#!/usr/bin/env bash
# Coverage-guided fuzzing (AFL++ through `cargo afl`, stable Rust) of the node's input parsers and
# its sans-IO core. Not run in CI: each target runs until it has made EXECS executions.
#
#   scripts/fuzz.sh [TARGET...]        # default: every target
#   FUZZ_EXECS=10000000 scripts/fuzz.sh ws_decoder proto_codec
#   FUZZ_SECONDS=600 scripts/fuzz.sh node_core   # stop on time instead (AFL's -V)
#
# Targets (fuzz/src/bin/*.rs, each documents its checks):
#   ws_decoder   the WebSocket frame decoder against tungstenite (differential)
#   proto_codec  the edge protocol codec: round trips, hand-written encoder == prost
#   mesh_wire    node-to-node presence messages, snapshots and link frames: round trips
#   node_core    Sessions + Directory driven by scripts of frames, requests, time, presence
#
# Installs cargo-afl (pinned) and builds AFL++ on first use. Findings: fuzz/target/afl/<target>/
# default/{crashes,hangs}/ (replay one with `fuzz/target/release/<target> < FILE`); the script
# exits 1 when any target saved a crash. Prints, per target, executions, speed, corpus size,
# edge coverage, crashes and hangs (AFL's fuzzer_stats).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
AFL_VERSION=0.18.2
execs=${FUZZ_EXECS:-10000000}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(ws_decoder proto_codec mesh_wire node_core)

if ! cargo afl --version 2>/dev/null | grep -q "$AFL_VERSION"; then
  echo "fuzz: installing cargo-afl $AFL_VERSION"
  cargo install cargo-afl --version "$AFL_VERSION"
fi
# Builds AFL++ for this rustc once (an error saying it is already built is fine).
cargo afl config --build >/dev/null 2>&1 || true

cd "$root/fuzz"
echo "fuzz: building the instrumented targets (release, debug assertions on)"
cargo afl build --release
seeds=target/seeds
rm -rf "$seeds"
target/release/seeds "$seeds"

# No core dumps to wait for, no CPU governor to check (containers), no UI.
export AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_SKIP_CPUFREQ=1 AFL_NO_UI=1 AFL_NO_AFFINITY=1
stop=(-E "$execs")
[ -z "${FUZZ_SECONDS:-}" ] || stop=(-V "$FUZZ_SECONDS")

failed=0
for t in "${targets[@]}"; do
  out=target/afl/$t
  rm -rf "$out"
  mkdir -p target/afl
  echo "fuzz: $t (${stop[*]})"
  cargo afl fuzz "${stop[@]}" -i "$seeds/$t" -o "$out" "target/release/$t" >"target/afl-$t.log" 2>&1 || {
    echo "fuzz: afl-fuzz failed for $t; the end of its log:" >&2
    tail -20 "target/afl-$t.log" >&2
    failed=1
    continue
  }
  stats=$out/default/fuzzer_stats
  get() { awk -F' *: *' -v k="$1" '$1 == k { print $2 }' "$stats"; }
  echo "fuzz: $t: $(get execs_done) executions in $(get run_time) s ($(get execs_per_sec)/s)," \
    "corpus $(get corpus_count), edges $(get edges_found) ($(get bitmap_cvg))," \
    "crashes $(get saved_crashes), hangs $(get saved_hangs)"
  if [ "$(get saved_crashes)" != "0" ]; then
    echo "fuzz: $t CRASHED; inputs in $out/default/crashes/" >&2
    failed=1
  fi
done
exit $failed
