#!/usr/bin/env bash
# The whole test suite: what README.md tells a new user to run and what CI runs.
# Installs what the tests need (no_std target, the MSRV toolchain, interop peers,
# Autobahn venv) on first use, from the repository's own recipes (nothing outside
# the repository is read); everything runs on 127.0.0.1.
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

# The declared rust-version (workspace Cargo.toml) is checked, not assumed: the published
# crates with the locked dependencies, on that exact toolchain (installed once, minimal
# profile; its build cache is target/msrv).
MSRV="$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml | head -1)"
step "MSRV $MSRV: zenws-core, zenws-mio and the zenws CLI build with Rust $MSRV (--locked)"
if ! rustup run "$MSRV" rustc --version >/dev/null 2>&1; then
  rustup toolchain install "$MSRV" --profile minimal
fi
rustup target add --toolchain "$MSRV" thumbv7em-none-eabihf >/dev/null 2>&1 \
  || rustup target add --toolchain "$MSRV" thumbv7em-none-eabihf
cargo +"$MSRV" check --locked --target-dir target/msrv -p zenws-core -p zenws-mio -p zenws
cargo +"$MSRV" check --locked --target-dir target/msrv -p zenws-core --no-default-features --target thumbv7em-none-eabihf

step "the publishable crates package, and build from their packaged sources"
# zenws-mio's verify build takes zenws-core from a local registry that cargo unpacks into
# $CARGO_HOME/registry/src/-<hash>/ once and never refreshes (the version stays 0.1.0 while
# the code changes): drop those stale copies of our own crates first.
rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/zenws-core-* \
       "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/zenws-mio-*
cargo package -p zenws-core -p zenws-mio -p zenws --allow-dirty --quiet

step "documentation builds without warnings (every feature, as on docs.rs)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features

step "unit, property, simulation, integration and interop tests"
cargo test --workspace

step "Autobahn|Testsuite against the zenws-mio client (all cases but permessage-deflate)"
if [ "${ZENWS_SKIP_AUTOBAHN:-0}" = 1 ]; then
  echo "skipped (ZENWS_SKIP_AUTOBAHN=1)"
else
  scripts/autobahn.sh
fi
