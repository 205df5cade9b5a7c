#!/usr/bin/env bash
# Autobahn|Testsuite conformance run for the zenws client.
#
#   usage: scripts/autobahn.sh [--quick] [--no-build] [--server-check] [-- CLIENT_CMD...]
#
#   (default)       install wstest into <repo>/.autobahn-venv (idempotent),
#                   cargo build --release --example autobahn_client,
#                   run scripts/autobahn/run-client.sh with it, print the summary line
#   --quick         skip the 9.* limits/performance cases (AUTOBAHN_EXCLUDE="9.* 12.* 13.*")
#   --no-build      do not run cargo; use the already built example
#   --server-check  install, then only check that the fuzzingserver starts on loopback
#                   and answers /getCaseCount; stop it (no Rust needed)
#   -- CLIENT_CMD   run this client instead of the Rust example (implies --no-build)
#
# The recipe lives in the repository (scripts/autobahn/: install.sh with pinned PyPI packages,
# the py3port.py patch of the Python-2-only suite, fuzzingserver.json, run-client.sh,
# summarize.py; see scripts/autobahn/README.md). Nothing outside the repository is needed
# but python3 and access to PyPI on the first run; the venv is the git-ignored .autobahn-venv/.
# Other knobs go straight to run-client.sh: AUTOBAHN_CASES, AUTOBAHN_EXCLUDE, AUTOBAHN_PORT,
# AUTOBAHN_TIMEOUT, AUTOBAHN_OUTDIR (default <repo>/reports/clients), AUTOBAHN_SUMMARY_ARGS.
# Exit status: run-client.sh's (non-zero if any case FAILED, nothing ran, or the client failed).
set -euo pipefail

say() { echo "autobahn.sh: $*" >&2; }
die() { echo "autobahn.sh: ERROR: $*" >&2; exit 2; }

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(git -C "$HERE" rev-parse --show-toplevel 2>/dev/null || (cd "$HERE/.." && pwd))"

QUICK=0 BUILD=1 SERVER_CHECK=0 CLIENT=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --no-build) BUILD=0 ;;
    --server-check) SERVER_CHECK=1 ;;
    --) shift; CLIENT=("$@"); BUILD=0; break ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done

AB="$HERE/autobahn"
[ -f "$AB/run-client.sh" ] && [ -f "$AB/install.sh" ] \
  || die "no Autobahn recipe at $AB (expected install.sh, run-client.sh)"

export AUTOBAHN_VENV="$ROOT/.autobahn-venv"
export AUTOBAHN_OUTDIR="${AUTOBAHN_OUTDIR:-$ROOT/reports/clients}"
[ "$QUICK" = 1 ] && export AUTOBAHN_EXCLUDE="9.* 12.* 13.*"
cd "$ROOT"

# 1. wstest (idempotent: install.sh keeps a stamp and returns at once when done)
t0=$(date +%s%N)
bash "$AB/install.sh" "$AUTOBAHN_VENV" >&2 || die "install.sh failed (python3 + access to PyPI needed)"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
say "wstest ready in $AUTOBAHN_VENV ($((ms / 1000)).$(printf '%03d' $((ms % 1000))) s)"
VPY="$AUTOBAHN_VENV/bin/python"

if [ "$SERVER_CHECK" = 1 ]; then
  # Start the fuzzingserver exactly as run-client.sh does (spec with a free loopback
  # port, `wstest -m fuzzingserver -s SPEC -u 0`), ask /getCaseCount, stop it by PID.
  TMP="$(mktemp -d "${TMPDIR:-/tmp}/zenws-autobahn.XXXXXX")"
  SERVER_PID=""
  stop_server() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
      kill "$SERVER_PID" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$SERVER_PID" 2>/dev/null || true
    fi
    [ -n "$SERVER_PID" ] && wait "$SERVER_PID" 2>/dev/null || true
    rm -rf "$TMP"
  }
  trap stop_server EXIT
  PORT="$("$VPY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  SPEC_IN="$AB/fuzzingserver.json" SPEC_OUT="$TMP/spec.json" PORT="$PORT" OUT="$TMP/reports" "$VPY" - <<'PY'
import json, os
spec = json.load(open(os.environ["SPEC_IN"]))
spec["url"] = "ws://127.0.0.1:%s" % os.environ["PORT"]
spec["outdir"] = os.environ["OUT"]
json.dump(spec, open(os.environ["SPEC_OUT"], "w"))
PY
  (cd "$TMP" && exec "$AUTOBAHN_VENV/bin/wstest" -m fuzzingserver -s "$TMP/spec.json" -u 0) >"$TMP/server.log" 2>&1 &
  SERVER_PID=$!
  PORT="$PORT" "$VPY" - <<'PY' || { tail -20 "$TMP/server.log" >&2; die "fuzzingserver check failed"; }
import base64, os, socket, sys, time
port = int(os.environ["PORT"])
deadline = time.time() + 30
while True:
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=10); break
    except OSError:
        if time.time() > deadline: sys.exit("fuzzingserver did not listen on 127.0.0.1:%d in 30 s" % port)
        time.sleep(0.1)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(("GET /getCaseCount HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (port, key)).encode())
buf = b""
while b"\r\n\r\n" not in buf:
    chunk = s.recv(4096)
    if not chunk: sys.exit("connection closed during handshake")
    buf += chunk
head, buf = buf.split(b"\r\n\r\n", 1)
if b" 101 " not in head.split(b"\r\n")[0]: sys.exit("handshake failed: %r" % head[:200])
while len(buf) < 2 or len(buf) < 2 + (buf[1] & 0x7f):
    buf += s.recv(4096)
opcode, n = buf[0] & 0x0f, buf[1] & 0x7f
assert opcode == 1 and n < 126, "unexpected first frame %r" % buf[:16]
print("autobahn.sh: fuzzingserver on 127.0.0.1:%d answered getCaseCount = %s" % (port, buf[2:2 + n].decode()))
PY
  grep -m1 "will run" "$TMP/server.log" >&2 || true
  stop_server
  SERVER_PID=""
  trap - EXIT
  say "server check OK (server stopped)"
  exit 0
fi

# 2. the Rust client
if [ ${#CLIENT[@]} -eq 0 ]; then
  TARGET_DIR="$(cargo metadata --format-version 1 --no-deps 2>/dev/null \
    | "$VPY" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null \
    || echo "${CARGO_TARGET_DIR:-$ROOT/target}")"
  BIN="$TARGET_DIR/release/examples/autobahn_client"
  if [ "$BUILD" = 1 ]; then
    say "cargo build --release --example autobahn_client"
    cargo build --release --example autobahn_client || die "cargo build failed"
  fi
  [ -x "$BIN" ] || die "no client binary at $BIN (build it: cargo build --release --example autobahn_client)"
  CLIENT=("$BIN")
fi

# 3. run it against the fuzzingserver, keep the log, repeat the summary line at the end
LOG="$(mktemp "${TMPDIR:-/tmp}/zenws-autobahn-run.XXXXXX")"
trap 'rm -f "$LOG"' EXIT
say "run-client.sh ${CLIENT[*]}  (reports: $AUTOBAHN_OUTDIR${AUTOBAHN_EXCLUDE:+, exclude: $AUTOBAHN_EXCLUDE})"
set +e
bash "$AB/run-client.sh" "${CLIENT[@]}" 2>&1 | tee "$LOG"
rc=${PIPESTATUS[0]}
set -e
summary="$(grep -E '^autobahn: [0-9]+ OK' "$LOG" | tail -1 || true)"
echo "${summary:-autobahn: no summary (see output above)} [exit $rc]"
exit "$rc"
