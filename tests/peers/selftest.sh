#!/usr/bin/env bash
# Self-check of the interop peers: runs setup.sh, makes a throwaway TLS
# certificate (CN=localhost, SAN DNS:localhost + IP:127.0.0.1) in a temp dir,
# then selftest.py spawns each peer, plain and TLS, and checks the contract
# (echo, 16 MiB, __close, __ping, __headers, exit on stdin EOF / SIGTERM).
#
#   usage: tests/peers/selftest.sh          env: ZENWS_PEERS_SKIP_NODE=1 skips Node
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${ZENWS_PEERS_VENV:-$ROOT/.venv-peers}"

bash "$HERE/setup.sh"
command -v openssl >/dev/null 2>&1 || { echo "selftest: ERROR: openssl not found" >&2; exit 1; }

TMP="$(mktemp -d "${TMPDIR:-/tmp}/zenws-peers.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
openssl req -x509 -newkey rsa:2048 -nodes -days 1 \
  -keyout "$TMP/key.pem" -out "$TMP/cert.pem" \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null \
  || { echo "selftest: ERROR: openssl could not make a test certificate" >&2; exit 1; }

PEERS=("python=$VENV/bin/python $HERE/python/ws_peer.py")
[ "${ZENWS_PEERS_SKIP_NODE:-0}" = 1 ] || PEERS+=("node=node $HERE/node/ws_peer.js")

start=$(date +%s%N)
"$VENV/bin/python" "$HERE/selftest.py" --cert "$TMP/cert.pem" --key "$TMP/key.pem" -- "${PEERS[@]}"
ms=$(( ($(date +%s%N) - start) / 1000000 ))
echo "selftest: took $((ms / 1000)).$(printf '%03d' $((ms % 1000))) s"
