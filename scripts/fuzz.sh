#!/usr/bin/env bash
# Run cargo-fuzz targets concurrently until each has used CPU_SECONDS of CPU (utime +
# stime from /proc, so a busy shared machine lengthens the wall time, not shortens the
# campaign), at nice 19; stop each with SIGINT so libFuzzer prints its final stats; then
# merge each corpus into fuzz/seeds/<target>/ (replayed by `cargo test`,
# tests/fuzz_seeds.rs), reduce it with -set_cover_merge, and print one summary line per
# target. Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# Usage: scripts/fuzz.sh [CPU_SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-3600}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(yaml_profiles pack_index gguf_header safetensors_header config_json pack_reader)
cargo +nightly fuzz build -s none -a
bin=target/x86_64-unknown-linux-gnu/release
# pack_reader writes each input to a file under TMPDIR: keep that in memory so the target
# measures the reader, not the disk.
[ -w /dev/shm ] && export TMPDIR=/dev/shm
tick=$(getconf CLK_TCK)
mkdir -p logs
declare -A pids
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  cp -n "seeds/$t"/* "corpus/$t/" 2>/dev/null || true
  # -rss_limit_mb / -malloc_limit_mb turn a memory bomb into a reported crash.
  nice -n 19 "$bin/$t" "corpus/$t" -artifact_prefix="artifacts/$t/" \
    -rss_limit_mb=1024 -malloc_limit_mb=512 -timeout=10 \
    -max_len=16384 -print_final_stats=1 > "logs/$t.log" 2>&1 &
  pids[$t]=$!
done
cpu_of() { awk -v tick="$tick" '{print int(($14 + $15) / tick)}' "/proc/$1/stat" 2>/dev/null || echo -1; }
declare -A cpu
running=${#targets[@]}
while [ "$running" -gt 0 ]; do
  sleep 10
  running=0
  for t in "${targets[@]}"; do
    p=${pids[$t]}
    [ -d "/proc/$p" ] || continue
    c=$(cpu_of "$p")
    [ "$c" -ge 0 ] && cpu[$t]=$c
    if [ "$c" -ge "$secs" ]; then kill -INT "$p"; else running=$((running + 1)); fi
  done
done
wait || true
for t in "${targets[@]}"; do
  rm -rf "seeds/$t.new" "seeds/$t.min" && mkdir -p "seeds/$t.new" "seeds/$t.min"
  "$bin/$t" -merge=1 "seeds/$t.new" "corpus/$t" "artifacts/$t" > "logs/merge_$t.log" 2>&1
  "$bin/$t" -set_cover_merge=1 "seeds/$t.min" "seeds/$t.new" > "logs/setcover_$t.log" 2>&1
  rm -rf "seeds/$t" "seeds/$t.new" && mv "seeds/$t.min" "seeds/$t"
  echo "$t: ${cpu[$t]:-?} CPU s," \
    "$(grep -a 'stat::number_of_executed_units' "logs/$t.log" | awk '{print $2}') execs," \
    "$(grep -a 'stat::peak_rss_mb' "logs/$t.log" | awk '{print $2}') MiB peak RSS," \
    "$(ls "corpus/$t" | wc -l) corpus files, $(ls "seeds/$t" | wc -l) seeds," \
    "$(ls "artifacts/$t" | wc -l) crashes"
done
