#!/usr/bin/env bash
# zenws-mio's client next to the baselines (tt4k = tokio-tungstenite with a
# 4 KiB read buffer, fws = fastwebsockets), same run, same echo peer, same core.
# NOT part of the test suite (scripts/test.sh): it takes minutes and its numbers are for
# people, not assertions. Prints a markdown report; raw JSONL goes to $OUTDIR.
#
#   scripts/bench-compare.sh                      # everything
#   SECTIONS="pp1 idle" scripts/bench-compare.sh  # a subset
#
# Sections: pp1 pp100 pp1000 (ping-pong, 1/100/1000 conns; besides ours, tt4k and fws also
# `bench --baseline floor`: no library, just the syscalls every client makes — the kernel's
# share of CPU/msg), idle (1000 idle ws://),
# wss (1000 idle wss:// against examples/tls_echo_peer: ours and a tungstenite+rustls
# baseline), idle10k (10,000 supervised idle conns, 1 s pings, IDLE10K_DUR seconds),
# core (zenws-core's core_bench example, if present).
# The baselines are in the repository: scripts/bench/baselines/ (a crate of its own, not a
# workspace member), built on first use with --locked into target/baselines (minutes on 2
# cores once; cargo makes it a no-op afterwards). Needs nothing outside the repository.
# Env: DUR (5), WARM (1), SIZE (64), REPS (1; >1 reports medians), CORE (1: client and peer
# share it), IDLE10K_DUR (60), OUTDIR, PEER_PORT (9003).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BASELINES=$ROOT/scripts/bench/baselines
BASE_TARGET=$ROOT/target/baselines
PEER_PORT=${PEER_PORT:-9003}
DUR=${DUR:-5}; WARM=${WARM:-1}; SIZE=${SIZE:-64}; REPS=${REPS:-1}; CORE=${CORE:-1}
IDLE10K_DUR=${IDLE10K_DUR:-60}
SECTIONS=${SECTIONS:-"pp1 pp100 pp1000 idle wss idle10k core"}
OUTDIR=${OUTDIR:-$(mktemp -d /tmp/zenws-bench.XXXXXX)}
OUT=$OUTDIR/runs.jsonl
mkdir -p "$OUTDIR"; : > "$OUT"
ulimit -n 65536 2>/dev/null || ulimit -n 20000
log() { printf '==> %s\n' "$*" >&2; }
has() { [[ " $SECTIONS " == *" $1 "* ]]; }

log "build our bench (profile profiling: release code with line tables, for perf)"
(cd "$ROOT" && cargo build --profile profiling --example bench --example tls_echo_peer 2>&1 | tail -n 2 >&2)
OURS=$ROOT/target/profiling/examples/bench
PEER_TLS=$ROOT/target/profiling/examples/tls_echo_peer

log "baselines (scripts/bench/baselines, release, --locked; the first build takes minutes)"
cargo build --release --locked --manifest-path "$BASELINES/Cargo.toml" --target-dir "$BASE_TARGET" 2>&1 | tail -n 2 >&2
WSBENCH=$BASE_TARGET/release/wsbench
ECHO=$BASE_TARGET/release/echo_server

cleanup() {
  if [ -n "${ECHO_PID:-}" ]; then kill "$ECHO_PID" 2>/dev/null || true; wait "$ECHO_PID" 2>/dev/null || true; fi
  if [ -n "${TLS_PID:-}" ]; then kill "$TLS_PID" 2>/dev/null || true; fi
  if [ -n "${TLS_FIFO_FD:-}" ]; then exec {TLS_FIFO_FD}>&- || true; fi
}
trap cleanup EXIT
# The echo peer (fastwebsockets + hyper), pinned to the client's core.
if (exec 3<>"/dev/tcp/127.0.0.1/$PEER_PORT") 2>/dev/null; then
  log "127.0.0.1:$PEER_PORT is taken; set PEER_PORT to a free port"; exit 2
fi
taskset -c "$CORE" "$ECHO" fws "127.0.0.1:$PEER_PORT" 2>"$OUTDIR/echo_server.log" &
ECHO_PID=$!
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PEER_PORT") 2>/dev/null && break; sleep 0.1; done
kill -0 "$ECHO_PID" 2>/dev/null || { log "echo_server failed to start (see $OUTDIR/echo_server.log)"; exit 1; }
URL=ws://127.0.0.1:$PEER_PORT/

run() { # run SECTION CLIENT CONNS MODE URL [extra args...]
  local sec=$1 cli=$2 n=$3 mode=$4 url=$5; shift 5
  local bin=$WSBENCH args=() line
  case $cli in
    ours) bin=$OURS ;;
    tt4k) args=(--client tt --read-buf 4096) ;;
    fws) args=(--client fws) ;;
    tung-rustls) bin=$OURS; args=(--baseline tung-rustls) ;;
    floor) bin=$OURS; args=(--baseline floor) ;;
  esac
  line=$(taskset -c "$CORE" "$bin" "${args[@]}" --url "$url" --conns "$n" --size "$SIZE" \
         --duration "${RUN_DUR:-$DUR}" --warmup "$WARM" --mode "$mode" --label "$sec/$cli" "$@" 2>>"$OUTDIR/client.err") || true
  if [ -n "$line" ]; then
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["section"]=sys.argv[2]; d["cli"]=sys.argv[3]; print(json.dumps(d))' \
      "$line" "$sec" "$cli" >> "$OUT"
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print("%-22s %9.0f/s p99 %s us cpu/msg %s rss/conn %s kB err %s" % (d["label"], d["msgs_per_sec"], d["p99_us"], d["client_cpu_us_per_msg"], d["rss_per_conn_kb"], d["errors"]))' "$line" >&2 || true
  else
    log "$sec/$cli FAILED (see $OUTDIR/client.err)"
  fi
  sleep 0.5
}

for _ in $(seq 1 "$REPS"); do
  for s in pp1 pp100 pp1000; do
    has $s || continue
    n=${s#pp}
    for c in ours tt4k fws floor; do run $s $c "$n" pingpong $URL; done
  done
  if has idle; then for c in ours tt4k fws; do run idle $c 1000 idle $URL; done; fi
done

if has wss; then
  log "wss: starting examples/tls_echo_peer on core $CORE"
  TLS_FIFO=$OUTDIR/tls.stdin; mkfifo "$TLS_FIFO"
  taskset -c "$CORE" "$PEER_TLS" < "$TLS_FIFO" > "$OUTDIR/tls.out" 2>>"$OUTDIR/tls.err" &
  TLS_PID=$!
  exec {TLS_FIFO_FD}>"$TLS_FIFO"   # keeps the peer's stdin open; closed on exit
  for _ in $(seq 1 100); do grep -q LISTENING "$OUTDIR/tls.out" 2>/dev/null && break; sleep 0.1; done
  TPORT=$(awk '/^LISTENING/{print $2}' "$OUTDIR/tls.out"); CA=$(awk '/^CA/{print $2}' "$OUTDIR/tls.out")
  for c in ours tung-rustls; do run wss $c 1000 idle "wss://localhost:$TPORT/" --ca-file "$CA"; done
  kill "$TLS_PID" 2>/dev/null || true; TLS_PID=
fi

if has idle10k; then
  log "idle10k: 10,000 supervised conns, 1 s ping heartbeat, ${IDLE10K_DUR}s"
  RUN_DUR=$IDLE10K_DUR run idle10k ours 10000 idle $URL --connect-concurrency 256
fi

CORE_OUT=
if has core && [ -f "$ROOT/core/examples/core_bench.rs" ]; then
  log "core micro-benchmark"
  CORE_OUT=$(cd "$ROOT" && taskset -c "$CORE" cargo run -q --release -p zenws-core --example core_bench 2>>"$OUTDIR/core.err" || echo "core_bench failed (see $OUTDIR/core.err)")
fi

python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(sec, cli, k):
    v = [r[k] for r in rows if r["section"] == sec and r["cli"] == cli and r.get(k) is not None]
    return statistics.median(v) if v else None
def f(v, d=2):
    return "-" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))
def ratio(a, b):
    return "-" if a is None or b in (None, 0) else f"{a / b:.2f}x"
order = ["pp1", "pp100", "pp1000", "idle", "wss", "idle10k"]
print("| section | client | runs | msgs/s | p50 µs | p99 µs | CPU µs/msg | CPU % | RSS kB | RSS/conn kB | healthy | errors |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
seen = []
for r in rows:
    if (r["section"], r["cli"]) not in seen:
        seen.append((r["section"], r["cli"]))
seen.sort(key=lambda k: order.index(k[0]) if k[0] in order else 99)
for sec, cli in seen:
    n = sum(1 for r in rows if r["section"] == sec and r["cli"] == cli)
    cpu_pct = med(sec, cli, "client_cpu_pct") or med(sec, cli, "idle_cpu_pct")
    print(f"| {sec} | {cli} | {n} | {f(med(sec, cli, 'msgs_per_sec'), 0)} | {f(med(sec, cli, 'p50_us'), 1)} | "
          f"{f(med(sec, cli, 'p99_us'), 1)} | {f(med(sec, cli, 'client_cpu_us_per_msg'))} | {f(cpu_pct, 1)} | "
          f"{f(med(sec, cli, 'rss_kb'), 0)} | {f(med(sec, cli, 'rss_per_conn_kb'), 1)} | "
          f"{f(med(sec, cli, 'healthy'), 0)} | {f(med(sec, cli, 'errors'), 0)} |")
print()
print("Ours relative to each baseline (lower is better):")
print()
print("| section | CPU/msg vs fws | CPU/msg vs tt4k | p99 vs fws | p99 vs tt4k | RSS/conn vs fws | RSS/conn vs tt4k | floor CPU/msg vs fws | ours vs floor |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for sec in ["pp1", "pp100", "pp1000", "idle"]:
    if not any(r["section"] == sec for r in rows):
        continue
    o = lambda k: med(sec, "ours", k)
    b = lambda c, k: med(sec, c, k)
    print(f"| {sec} | {ratio(o('client_cpu_us_per_msg'), b('fws', 'client_cpu_us_per_msg'))} | "
          f"{ratio(o('client_cpu_us_per_msg'), b('tt4k', 'client_cpu_us_per_msg'))} | "
          f"{ratio(o('p99_us'), b('fws', 'p99_us'))} | {ratio(o('p99_us'), b('tt4k', 'p99_us'))} | "
          f"{ratio(o('rss_per_conn_kb'), b('fws', 'rss_per_conn_kb'))} | {ratio(o('rss_per_conn_kb'), b('tt4k', 'rss_per_conn_kb'))} | "
          f"{ratio(b('floor', 'client_cpu_us_per_msg'), b('fws', 'client_cpu_us_per_msg'))} | "
          f"{ratio(o('client_cpu_us_per_msg'), b('floor', 'client_cpu_us_per_msg'))} |")
if any(r["section"] == "wss" for r in rows):
    print(f"| wss idle | | | | | RSS/conn vs tung-rustls: {ratio(med('wss', 'ours', 'rss_per_conn_kb'), med('wss', 'tung-rustls', 'rss_per_conn_kb'))} | | | |")
print()
def target(name, ok, detail):
    print(f"| {name} | {'met' if ok else ('missed' if ok is False else 'n/a')} | {detail} |")
print("| target | result | measured |")
print("|---|---|---|")
def cpu_t(sec, lim):
    o, b = med(sec, "ours", "client_cpu_us_per_msg"), med(sec, "fws", "client_cpu_us_per_msg")
    ok = None if o is None or b is None else o <= lim * b
    fl = med(sec, "floor", "client_cpu_us_per_msg")
    target(f"{sec} CPU/msg ≤ {lim}× fws", ok, f"{f(o)} vs {f(b)} µs ({ratio(o, b)}); the library-free floor: {f(fl)} µs ({ratio(fl, b)} fws)")
cpu_t("pp1", 0.9); cpu_t("pp100", 0.8); cpu_t("pp1000", 0.8)
o, b = med("pp1", "ours", "p99_us"), med("pp1", "fws", "p99_us")
target("pp1 p99 ≤ fws", None if o is None or b is None else o <= b, f"{f(o, 1)} vs {f(b, 1)} µs")
o = med("idle", "ours", "rss_per_conn_kb")
target("RSS/idle ws conn ≤ 4 KB", None if o is None else o <= 4.0, f"{f(o, 1)} KB")
o, b = med("wss", "ours", "rss_per_conn_kb"), med("wss", "tung-rustls", "rss_per_conn_kb")
target("RSS/idle wss conn ≤ 0.7× tung+rustls", None if o is None or b is None else o <= 0.7 * b, f"{f(o, 1)} vs {f(b, 1)} KB")
h, c, cp = med("idle10k", "ours", "healthy"), med("idle10k", "ours", "connected"), med("idle10k", "ours", "idle_cpu_pct")
e = med("idle10k", "ours", "errors")
target("10k idle: all healthy, CPU < 10 %", None if h is None else (h == 10000 and c == 10000 and e == 0 and cp < 10),
       f"{f(h, 0)}/{f(c, 0)} healthy, {f(e, 0)} errors, {f(cp, 1)} % CPU")
PY
if [ -n "$CORE_OUT" ]; then
  echo; echo "core micro-benchmark (cargo run --release -p zenws-core --example core_bench):"; echo
  echo '```'; echo "$CORE_OUT"; echo '```'
fi
echo; echo "raw: $OUT"
