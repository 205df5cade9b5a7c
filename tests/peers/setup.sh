#!/usr/bin/env bash
# Install what the interop peers need, into repo-local ignored folders:
#   .venv-peers/                  python3 -m venv + pip install -r tests/peers/python/requirements.txt
#   tests/peers/node/node_modules npm ci (from package-lock.json)
#
#   usage: tests/peers/setup.sh            (from anywhere)
#   env:   PYTHON=python3                  interpreter for the venv (3.9+)
#          ZENWS_PEERS_VENV=<dir>          venv location (default <repo>/.venv-peers)
#          ZENWS_PEERS_SKIP_NODE=1         skip the Node peer (no node/npm on this machine)
#
# Idempotent: each part records a stamp (hash of its pin file) and is skipped
# when the stamp matches and the installed thing still works.
# Needs: python3 with venv (or pip), node >= 18 + npm, access to PyPI and npm.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="${ZENWS_PEERS_VENV:-$ROOT/.venv-peers}"
REQ="$HERE/python/requirements.txt"
NODE_DIR="$HERE/node"

say() { echo "peers-setup: $*"; }
die() { echo "peers-setup: ERROR: $*" >&2; exit 1; }
t0=$(date +%s%N)

# ---- Python peer -----------------------------------------------------------
command -v "$PYTHON" >/dev/null 2>&1 || die "'$PYTHON' not found; install Python 3.9+ or set PYTHON="
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 9))' \
  || die "$("$PYTHON" --version 2>&1) is too old; websockets needs Python 3.9+"

VPY="$VENV/bin/python"
PY_STAMP="$VENV/.zenws-peers.stamp"
py_want="$( (cat "$REQ"; "$PYTHON" --version 2>&1) | sha256sum | cut -d' ' -f1)"
ws_pin="$(sed -n 's/^websockets==\([^ ]*\).*/\1/p' "$REQ")"
[ -n "$ws_pin" ] || die "no 'websockets==X' pin in $REQ"

py_ok() {
  [ -f "$PY_STAMP" ] && [ "$(cat "$PY_STAMP")" = "$py_want" ] \
    && "$VPY" -c "import websockets, sys; sys.exit(websockets.__version__ != '$ws_pin')" 2>/dev/null
}

if py_ok; then
  say "python: websockets $ws_pin already installed in $VENV"
else
  if [ ! -x "$VPY" ]; then
    say "python: creating venv $VENV ($("$PYTHON" --version 2>&1))"
    if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
      say "python: '$PYTHON -m venv' failed (no ensurepip?); retrying --without-pip"
      rm -rf "$VENV"
      "$PYTHON" -m venv --without-pip "$VENV" \
        || die "cannot create a venv with $PYTHON (Debian/Ubuntu: apt-get install python3-venv)"
    fi
  fi
  if ! "$VPY" -m pip --version >/dev/null 2>&1; then
    say "python: venv has no pip; installing it with the system pip"
    "$PYTHON" -m pip --python "$VPY" install -q pip \
      || die "venv has no pip and '$PYTHON -m pip --python' failed (apt-get install python3-venv python3-pip)"
  fi
  say "python: pip install -r ${REQ#"$ROOT/"}"
  "$VPY" -m pip install -q --disable-pip-version-check -r "$REQ" \
    || die "pip install -r $REQ failed (network to PyPI? see above)"
  "$VPY" -c "import websockets, sys; sys.exit(websockets.__version__ != '$ws_pin')" \
    || die "websockets $ws_pin did not import from $VENV"
  echo "$py_want" > "$PY_STAMP"
  say "python: installed websockets $ws_pin in $VENV"
fi

# ---- Node peer -------------------------------------------------------------
if [ "${ZENWS_PEERS_SKIP_NODE:-0}" = 1 ]; then
  say "node: skipped (ZENWS_PEERS_SKIP_NODE=1)"
else
  command -v node >/dev/null 2>&1 || die "node not found; install Node.js 18+ (or set ZENWS_PEERS_SKIP_NODE=1)"
  command -v npm >/dev/null 2>&1 || die "npm not found; install npm (or set ZENWS_PEERS_SKIP_NODE=1)"
  node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)' \
    || die "node $(node --version) is too old; need 18+"
  [ -f "$NODE_DIR/package-lock.json" ] || die "missing $NODE_DIR/package-lock.json"
  NODE_STAMP="$NODE_DIR/node_modules/.zenws-peers.stamp"
  node_want="$( (cat "$NODE_DIR/package-lock.json"; node --version) | sha256sum | cut -d' ' -f1)"
  ws_node="$(cd "$NODE_DIR" && node -p 'require("./package-lock.json").packages["node_modules/ws"].version' 2>/dev/null || true)"
  [ -n "$ws_node" ] || die "no node_modules/ws entry in $NODE_DIR/package-lock.json"
  node_ok() {
    [ -f "$NODE_STAMP" ] && [ "$(cat "$NODE_STAMP")" = "$node_want" ] \
      && (cd "$NODE_DIR" && node -e "process.exit(require('ws/package.json').version === '$ws_node' ? 0 : 1)") 2>/dev/null
  }
  if (cd "$NODE_DIR" && node_ok); then
    say "node: ws $ws_node already installed in ${NODE_DIR#"$ROOT/"}/node_modules"
  else
    say "node: npm ci in ${NODE_DIR#"$ROOT/"} ($(node --version), npm $(npm --version))"
    (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error) \
      || die "npm ci failed in $NODE_DIR (network to the npm registry? see above)"
    (cd "$NODE_DIR" && node -e "process.exit(require('ws/package.json').version === '$ws_node' ? 0 : 1)") \
      || die "ws $ws_node did not load from $NODE_DIR/node_modules"
    echo "$node_want" > "$NODE_STAMP"
    say "node: installed ws $ws_node in ${NODE_DIR#"$ROOT/"}/node_modules"
  fi
fi

ms=$(( ($(date +%s%N) - t0) / 1000000 ))
say "ready in $((ms / 1000)).$(printf '%03d' $((ms % 1000))) s"
say "  python peer: $VPY $HERE/python/ws_peer.py --port 0"
[ "${ZENWS_PEERS_SKIP_NODE:-0}" = 1 ] || say "  node peer:   node $NODE_DIR/ws_peer.js --port 0"
