#!/usr/bin/env bash
# Engine speed beside llama.cpp, file by file, in one run:
#
#   bash scripts/bench_engine.sh LLAMA_BIN_DIR [BASELINE_DHURANDHAR] FILE.gguf...
#
# For each file and 1 and 2 threads: `llama-bench -p 256 -n 0` and `-p 0 -n 64 -d 256`
# (`-r 3`, mmap, its default) and `dhurandhar generate --bench --bench-prompt 256
# --max-tokens 64 --weights resident` (best of its 3 repeats, as llama-bench averages
# its 3), alternating, so both see the same machine state. Both decode after the same
# 256 tokens of context: `llama-bench -p 256 -n 64` alone would time its 64 tokens from
# an empty cache while ours follow the prompt, and attention over 256 positions costs
# both engines about 1.4 ms a token on SmolLM2. Ours runs resident because llama.cpp copies the matrices it
# repacks (Q4_0 and Q4_K on x86) out of its map into RAM; resident is where ours
# interleaves Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/Q4_K/Q5_K. Set WEIGHTS=mmap to time our mapped
# path instead. With BASELINE_DHURANDHAR (another build of the binary, e.g. the previous
# commit's), it runs too and the table gains its columns: a before/after in the same run.
# Prints a markdown table of prefill and decode tokens/s with our/llama.cpp ratios.
#
# llama.cpp comes from the llama-cpp-python sdist on PyPI (docs/run.md says how to build
# llama-bench); it is never built by the test suite.
set -euo pipefail
llama=${1:?usage: bench_engine.sh LLAMA_BIN_DIR [BASELINE_BINARY] FILE.gguf...}
shift
base=""
if [ $# -gt 0 ] && [ -x "$1" ] && [[ "$1" != *.gguf ]]; then base=$1; shift; fi
[ $# -gt 0 ] || { echo "no GGUF files given" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release -q --manifest-path "$root/Cargo.toml" -p dhurandhar-cli
bin="$root/target/release/dhurandhar"

ours() { # ours BINARY FILE THREADS -> "prefill decode"
  "$1" generate --model "$2" --weights "${WEIGHTS:-resident}" --bench --bench-threads "$3" --bench-prompt 256 --max-tokens 64 --json 2>/dev/null |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["results"][0]; print(r["prefill_tokens_per_s"], r["decode_tokens_per_s"])'
}
theirs() { # theirs FILE THREADS -> "prefill decode"
  {
    "$llama/llama-bench" -m "$1" -t "$2" -p 256 -n 0 -r 3 -o jsonl 2>/dev/null
    "$llama/llama-bench" -m "$1" -t "$2" -p 0 -n 64 -d 256 -r 3 -o jsonl 2>/dev/null
  } | python3 -c '
import json, sys
rs = [json.loads(l) for l in sys.stdin if l.strip()]
pp = next(r["avg_ts"] for r in rs if r["n_prompt"] > 0)
tg = next(r["avg_ts"] for r in rs if r["n_gen"] > 0 and r["n_depth"] == 256)
print(pp, tg)'
}

echo "## $(date -u '+%F %H:%M') UTC, $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), ours --weights ${WEIGHTS:-resident}"
if [ -n "$base" ]; then
  echo "| file | threads | llama.cpp prefill | baseline | ours | ours/llama.cpp | llama.cpp decode | baseline | ours | ours/llama.cpp |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
else
  echo "| file | threads | llama.cpp prefill | ours | ours/llama.cpp | llama.cpp decode | ours | ours/llama.cpp |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
fi
for f in "$@"; do
  for t in 1 2; do
    read -r lp ld <<< "$(theirs "$f" "$t")"
    read -r op od <<< "$(ours "$bin" "$f" "$t")"
    bp="" bd=""
    if [ -n "$base" ]; then read -r bp bd <<< "$(ours "$base" "$f" "$t")"; fi
    python3 - "$(basename "$f")" "$t" "$lp" "$ld" "$op" "$od" "$bp" "$bd" <<'EOF'
import sys
name, t, lp, ld, op, od, bp, bd = sys.argv[1:]
lp, ld, op, od = map(float, (lp, ld, op, od))
b = lambda v: f" {float(v):.1f} |" if v else ""
print(f"| {name} | {t} | {lp:.1f} |{b(bp)} {op:.1f} | {op/lp:.2f} | {ld:.1f} |{b(bd)} {od:.1f} | {od/ld:.2f} |")
EOF
  done
done
