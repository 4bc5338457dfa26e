#!/usr/bin/env bash
# The long kill -9 campaign (docs/reliability.md): the fault suite's test with more
# seeded kill points per writer (pack lossless + quant, unpack, delta apply, kv capture).
# Usage: scripts/kill9.sh [KILLS_PER_WRITER]   (default 40: 200 runs with the fixture)
set -euo pipefail
cd "$(dirname "$0")/.."
export DHURANDHAR_FIXTURES="${DHURANDHAR_FIXTURES:-$(python3 scripts/fetch_fixtures.py)}"
DHURANDHAR_KILL_RUNS="${1:-40}" cargo test --release -p dhurandhar-cli --test faults \
  kill9_never_leaves_a_partial_output -- --nocapture 2>&1 | grep -E "kill -9|test result"
