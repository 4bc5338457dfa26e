#!/usr/bin/env bash
# Build the Python package's abi3 wheel, install it into a throwaway venv and run its
# pytest suite (python/tests). Needs only Rust, Python 3 and pip: maturin, pytest and
# numpy come from PyPI into the venv. Called at the end of scripts/test.sh; the release
# build shares the workspace target dir, so only the extension crate is new work.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "== python: venv + maturin/pytest/numpy from PyPI"
python3 -m venv "$tmp/venv"
py="$tmp/venv/bin/python"
"$py" -m pip install --quiet --disable-pip-version-check "maturin>=1.7,<2" pytest numpy

echo "== python: build the wheel (maturin build --release)"
(cd python && "$tmp/venv/bin/maturin" build --release --quiet -o "$tmp/wheels")
whl=$(ls "$tmp"/wheels/dhurandhar-*-abi3-*.whl)
echo "   $(basename "$whl"): $(du -k "$whl" | cut -f1) KiB"
"$py" -m pip install --quiet --disable-pip-version-check --no-deps "$whl"

# The CLI the tests compare against (same target dir; a no-op when already built).
cargo build --release --quiet -p dhurandhar-cli --bin dhurandhar
export DHURANDHAR_BIN="$CARGO_TARGET_DIR/release/dhurandhar"

echo "== python: pytest"
# Run from outside the source tree so `import dhurandhar` is the installed wheel.
cd "$tmp" && "$py" -m pytest -q -p no:cacheprovider "$root/python/tests" "$@"
