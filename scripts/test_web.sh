#!/usr/bin/env bash
# The dashboard's end-to-end test in headless Chromium (crates/dhurandhar-web/tests/e2e.rs).
# Installs Debian's chromium and chromium-driver when missing (as root, with apt-get);
# skips with the reason only where they cannot be installed. Screenshots land in
# target/web-e2e/ (git-ignored); UPDATE_DOCS_IMG=1 also copies them to docs/img/.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${DHURANDHAR_FIXTURES:-}" ]; then
  export DHURANDHAR_FIXTURES="$(python3 scripts/fetch_fixtures.py)"
fi

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing chromium and chromium-driver (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium chromium-driver >/dev/null
  fi
fi
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "== SKIPPING the browser test: chromium/chromedriver are missing and cannot be installed here" \
       "(needs root and apt-get; install Debian's chromium and chromium-driver)"
  exit 0
fi

echo "== dashboard end-to-end test in headless $(chromium --version 2>/dev/null | head -1)"
DHURANDHAR_E2E=1 cargo test --release -p dhurandhar-web --test e2e -- --nocapture

if [ "${UPDATE_DOCS_IMG:-0}" = 1 ]; then
  cp target/web-e2e/*.png docs/img/
  echo "== screenshots copied to docs/img/"
fi
