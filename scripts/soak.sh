#!/usr/bin/env bash
# The soak test (not part of scripts/test.sh): SOAK_CONNS supervised
# connections (default 1000) through the fault proxy for SOAK_SECS seconds
# (default 600) of random faults, every client sending numbered messages to
# an echo server on 127.0.0.1; then nothing lost silently, RSS within 10 % of
# its level after warm-up, every client healthy. Prints a "soak report" line.
set -euo pipefail
cd "$(git rev-parse --show-toplevel 2>/dev/null || dirname "$0"/..)"
# Each connection costs the in-process echo server and proxy threads and
# file descriptors: raise the limit where we may.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
exec cargo test --release -p zenws-tests --test soak -- --ignored --nocapture
