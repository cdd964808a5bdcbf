#!/usr/bin/env bash
# The project's one test command: installs the peers, checks formatting and lints, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-peers.sh libcoap3-bin
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --all-targets
cargo test --workspace --doc
