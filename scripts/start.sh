#!/usr/bin/env bash
# The main job: build everything and run a local mesh of signal nodes serving the demo chat.
#
#   ./scripts/start.sh                 # a 3-node mesh on ports 4000, 4001, 4002: open two of them
#   NODES=1 ./scripts/start.sh         # a lone node on port 4000
#   PORT=5000 ./scripts/start.sh       # first port (default 4000)
#   HOST=0.0.0.0 ./scripts/start.sh    # listen address (default 127.0.0.1)
#   SKIP_BUILD=1 ./scripts/start.sh    # reuse the last build (target/release, pkg/)
#   NODE_ARGS="--flag x" ./scripts/start.sh   # extra flags for every node
#   SIGNAL_MESH_NODE_BIN=path ./scripts/start.sh  # run this node binary instead of the release build
#
# On a fresh Debian 12 machine with rustup, Node.js and npm it installs what it needs:
# scripts/build-pkg.sh adds the wasm target and the pinned wasm-bindgen-cli and writes pkg/.
# The site (www/ + pkg/) is assembled in target/site; node logs go to target/start/.
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

NODES=${NODES:-3}
PORT=${PORT:-4000}
HOST=${HOST:-127.0.0.1}
SKIP_BUILD=${SKIP_BUILD:-0}
NODE_ARGS=${NODE_ARGS:-}

site=$repo/target/site
run_dir=$repo/target/start
bin=${SIGNAL_MESH_NODE_BIN:-$repo/target/release/signal-mesh-node}

step() { printf '\n==> %s\n' "$*"; }
die() { echo "start.sh: $*" >&2; exit 1; }

[[ "$NODES" =~ ^[1-9][0-9]*$ ]] || die "NODES must be a positive number (got '$NODES')"
[[ "$PORT" =~ ^[0-9]+$ ]] || die "PORT must be a number (got '$PORT')"
command -v cargo >/dev/null || { [ -f "$HOME/.cargo/env" ] && source "$HOME/.cargo/env"; }
command -v cargo >/dev/null || die "cargo not found: install Rust with rustup first"
command -v node >/dev/null || die "node not found: install Node.js (>= 20) and npm first"

# --- build ---------------------------------------------------------------------------------------
if [ "$SKIP_BUILD" != 1 ]; then
  step "npm package (scripts/build-pkg.sh -> pkg/)"
  scripts/build-pkg.sh
  step "signal-mesh-node (release)"
  cargo build --release --locked -p signal-mesh-node
fi
[ -x "$bin" ] || die "$bin is missing (run without SKIP_BUILD=1)"
[ -f pkg/package.json ] || die "pkg/ is missing (run without SKIP_BUILD=1)"

# --- site: www/ + pkg/ ---------------------------------------------------------------------------
step "site (www/ + pkg/ -> target/site)"
rm -rf "$site"
mkdir -p "$site"
cp -R www/. "$site/"
mkdir -p "$site/pkg"
# The package as published: only what package.json's `files` lists is needed, but copying the
# whole directory is harmless and keeps this independent of the package layout.
cp -R pkg/. "$site/pkg/"
# Point the demo's import map at the package's ES module entry.
node --input-type=module - "$site" <<'EOF'
import fs from 'node:fs';
import path from 'node:path';
const site = process.argv[2];
const meta = JSON.parse(fs.readFileSync(path.join(site, 'pkg', 'package.json'), 'utf8'));
const pick = (t) => {
  if (typeof t === 'string') return t;
  if (Array.isArray(t)) return t.map(pick).find(Boolean);
  if (t && typeof t === 'object') {
    for (const c of ['browser', 'import', 'module', 'default']) if (c in t) { const r = pick(t[c]); if (r) return r; }
  }
  return undefined;
};
let entry;
if (meta.exports !== undefined) {
  const root = meta.exports && typeof meta.exports === 'object' && '.' in meta.exports ? meta.exports['.'] : meta.exports;
  entry = pick(root);
}
entry ??= meta.module ?? meta.browser ?? meta.main;
if (typeof entry !== 'string') throw new Error('no ES module entry in pkg/package.json');
entry = entry.replace(/^\.\//, '');
for (const file of fs.readdirSync(site).filter((f) => f.endsWith('.html'))) {
  const p = path.join(site, file);
  const html = fs.readFileSync(p, 'utf8').replace(/"signal-mesh"\s*:\s*"[^"]*"/, `"signal-mesh": "./pkg/${entry}"`);
  fs.writeFileSync(p, html);
}
console.log(`signal-mesh -> ./pkg/${entry}`);
EOF

# --- nodes ---------------------------------------------------------------------------------------
mkdir -p "$run_dir"
# The mesh: node 0 listens for other nodes on a fixed port (PORT + 100, TCP and QUIC); the
# others bootstrap from it. Its node id comes from its key file, before anything starts.
p2p_port=$((PORT + 100))
open_host=$HOST
[ "$open_host" = 0.0.0.0 ] && open_host=127.0.0.1
node0_id=$("$bin" id --key-file "$run_dir/node0.key" | awk '{ print $NF }')
[ -n "$node0_id" ] || die "cannot read the node id of $run_dir/node0.key"
bootstrap="/ip4/$open_host/tcp/$p2p_port/p2p/$node0_id"

# Flags for node number $1 (0-based).
node_args() {
  local i=$1 port=$((PORT + $1))
  local args=(--listen "$HOST:$port" --static-dir "$site" --key-file "$run_dir/node$i.key")
  args+=(--public-url "ws://$open_host:$port/signal")
  if [ "$i" -eq 0 ]; then
    args+=(--p2p-listen "/ip4/$HOST/tcp/$p2p_port" --p2p-listen "/ip4/$HOST/udp/$p2p_port/quic-v1")
  else
    args+=(--bootstrap "$bootstrap")
  fi
  # shellcheck disable=SC2206 # word splitting of NODE_ARGS is intended
  args+=($NODE_ARGS)
  printf '%s\n' "${args[@]}"
}

pids=()
cleanup() {
  trap - INT TERM EXIT
  if [ "${#pids[@]}" -gt 0 ]; then
    echo
    echo "start.sh: stopping ${#pids[@]} node(s)"
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "starting $NODES node(s)"
for ((i = 0; i < NODES; i++)); do
  log=$run_dir/node$i.log
  mapfile -t args < <(node_args "$i")
  "$bin" "${args[@]}" >"$log" 2>&1 &
  pids+=("$!")
  # Wait (bounded) for the node's "listening" line.
  for ((t = 0; t < 300; t++)); do
    if grep -q '^signal-mesh-node listening on ' "$log"; then break; fi
    if ! kill -0 "${pids[-1]}" 2>/dev/null; then
      cat "$log" >&2
      die "node $i exited during startup (log: $log)"
    fi
    sleep 0.1
  done
  grep -q '^signal-mesh-node listening on ' "$log" || die "node $i did not start within 30 s (log: $log)"
  echo "node $i: $(grep -m1 '^signal-mesh-node listening on ' "$log")   (log: ${log#"$repo/"})"
done

echo
echo "  Demo chat, one URL per node of the mesh:"
for ((i = 0; i < NODES; i++)); do echo "    http://$open_host:$((PORT + i))/"; done
echo "  Open two of them (on different nodes) in two tabs: they find each other through the mesh"
echo "  and chat over a direct data channel (add #room-name to pick a room)."
echo "  Mesh bootstrap address: $bootstrap"

echo "  Ctrl-C stops everything."
echo

# Run until Ctrl-C or until a node exits.
set +e
wait -n "${pids[@]}"
status=$?
# On Ctrl-C the nodes (same process group) may exit before this shell runs its INT trap: give the
# trap a moment so an interrupt is not reported as a node failure.
sleep 0.3
echo "start.sh: a node exited (status $status); see $run_dir/*.log" >&2
exit "$status"
