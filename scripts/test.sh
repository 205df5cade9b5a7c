#!/usr/bin/env bash
# The whole test suite: what README.md tells a new user to run and what CI runs.
# Installs what the tests need (no_std target, interop peers, Autobahn venv) on
# first use; everything runs on 127.0.0.1.
set -euo pipefail
cd "$(git rev-parse --show-toplevel 2>/dev/null || dirname "$0"/..)"

step() { printf '\n==> %s\n' "$*"; }

step "install: no_std target, interop peers (pinned: Python websockets, Node ws)"
rustup target add thumbv7em-none-eabihf >/dev/null 2>&1 || rustup target add thumbv7em-none-eabihf
tests/peers/setup.sh

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

step "zenws-core builds for a bare-metal target (no_std, no alloc)"
cargo build -p zenws-core --no-default-features --target thumbv7em-none-eabihf

step "unit, property, simulation, integration and interop tests"
cargo test --workspace

step "Autobahn|Testsuite against the zenws-mio client (all cases but permessage-deflate)"
if [ "${ZENWS_SKIP_AUTOBAHN:-0}" = 1 ]; then
  echo "skipped (ZENWS_SKIP_AUTOBAHN=1)"
else
  scripts/autobahn.sh
fi
