#!/usr/bin/env bash
# Decode speed and peak memory of `generate` under a Linux cgroup-v1 memory cap, with the
# weights memory-mapped (the kernel pages them) and streamed (`--weights stream` with the
# cap as `--ram-budget`). Needs root and the v1 memory controller; not part of the test
# suite (it times things).
#
#   scripts/stream_cgroup.sh [MODEL.gguf] [CAP_BYTES] [MAX_TOKENS]
#
# CAP defaults to half the model file. The model is copied to a private temporary file
# (pages of a file other processes use are charged to their cgroups and cannot be
# dropped), and each run starts with its pages dropped from the page cache
# (posix_fadvise DONTNEED), so both modes read from the disk.
# Prints one line per mode: decode tok/s, prefill tok/s, the cgroup's
# memory.max_usage_in_bytes (RSS + page cache charged to the run), its failcnt, and
# whether the OOM killer fired.
set -euo pipefail
SRC=${1:-${DHURANDHAR_FIXTURES:-.cache/fixtures}/SmolLM2-135M-Instruct.Q4_1.gguf}
SIZE=$(stat -c %s "$SRC")
CAP=${2:-$((SIZE / 2))}
TOKENS=${3:-64}
BIN=${BIN:-target/release/dhurandhar}
ROOT=/sys/fs/cgroup/memory
[ -w "$ROOT" ] || { echo "cgroup v1 memory controller not writable at $ROOT (need root)" >&2; exit 3; }
CG=$ROOT/dhurandhar-stream-$$
MODEL=$(mktemp --suffix .gguf)
mkdir "$CG"
trap 'rmdir "$CG" 2>/dev/null || true; rm -f "$MODEL"' EXIT
cp "$SRC" "$MODEL"

drop_cache() {
  python3 -c 'import os,sys; f=os.open(sys.argv[1], os.O_RDONLY); os.posix_fadvise(f, 0, 0, os.POSIX_FADV_DONTNEED)' "$1"
}

echo "model $SRC ($SIZE bytes), cap $CAP bytes, $TOKENS tokens"
for mode in mmap stream; do
  extra=()
  [ "$mode" = stream ] && extra=(--ram-budget "$CAP")
  drop_cache "$MODEL"
  echo "$CAP" > "$CG/memory.limit_in_bytes"
  echo 0 > "$CG/memory.max_usage_in_bytes"
  echo 0 > "$CG/memory.failcnt" 2>/dev/null || true
  out=$(sh -c 'echo $$ > "$1/cgroup.procs"; shift; exec "$@"' sh "$CG" \
        "$BIN" generate --model "$MODEL" --prompt "The capital of France is" \
        --max-tokens "$TOKENS" --threads 2 --weights "$mode" "${extra[@]}" --json 2>&1) \
        && status=0 || status=$?
  usage=$(cat "$CG/memory.max_usage_in_bytes")
  fail=$(cat "$CG/memory.failcnt")
  oom=$(awk '/oom_kill /{print $2}' "$CG/memory.oom_control")
  if [ "$status" = 0 ]; then
    echo "$out" | python3 -c '
import json, sys
d = json.load(sys.stdin); w = d["weights"]
print("%-6s decode %6.1f tok/s  prefill %6.1f tok/s  peak RSS %5.1f MiB  read/token %5.1f MiB" % (
    sys.argv[1], d["decode_tokens_per_s"], d["prefill_tokens_per_s"],
    d["peak_rss_bytes"] / 2**20, w["bytes_read_per_token"] / 2**20), end="")' "$mode"
  else
    echo -n "$mode   failed (exit $status): $(echo "$out" | tail -1)"
  fi
  echo "  cgroup max usage $((usage / 1048576)) MiB, failcnt $fail, oom_kill ${oom:-n/a}"
  # Move nothing back: the process has exited; empty the group's page cache charge.
  echo 0 > "$CG/memory.force_empty" 2>/dev/null || true
done
