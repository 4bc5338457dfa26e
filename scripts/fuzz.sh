#!/usr/bin/env bash
# Run every cargo-fuzz target for SECONDS each (default 3600), at nice 19, then merge
# each corpus into fuzz/seeds/<target>/ (replayed by `cargo test`, tests/fuzz_seeds.rs).
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-3600}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(yaml_profiles pack_index gguf_header safetensors_header config_json pack_reader)
cargo +nightly fuzz build -s none -a
bin=target/x86_64-unknown-linux-gnu/release
mkdir -p logs
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  cp -n "seeds/$t"/* "corpus/$t/" 2>/dev/null || true
  # -rss_limit_mb / -malloc_limit_mb turn a memory bomb into a reported crash.
  nice -n 19 /usr/bin/time -v "$bin/$t" "corpus/$t" -artifact_prefix="artifacts/$t/" \
    -max_total_time="$secs" -rss_limit_mb=1024 -malloc_limit_mb=512 -timeout=10 \
    -max_len=16384 -print_final_stats=1 > "logs/$t.log" 2>&1 &
done
wait
for t in "${targets[@]}"; do
  rm -rf "seeds/$t.new" && mkdir -p "seeds/$t.new"
  "$bin/$t" -merge=1 "seeds/$t.new" "corpus/$t" "artifacts/$t" > "logs/merge_$t.log" 2>&1
  rm -rf "seeds/$t" && mv "seeds/$t.new" "seeds/$t"
  echo "$t: $(grep -a 'stat::number_of_executed_units' "logs/$t.log" | awk '{print $2}') execs," \
    "$(grep -a 'User time' "logs/$t.log" | awk '{print $4}') CPU s user," \
    "$(ls "corpus/$t" | wc -l) corpus files, $(ls "seeds/$t" | wc -l) seeds," \
    "$(ls "artifacts/$t" | wc -l) crashes"
done
