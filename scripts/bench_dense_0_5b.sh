#!/usr/bin/env bash
# Streaming and the planner at 0.5B scale, on a stand-in for Qwen2.5-0.5B Q4_K_M (no
# real 0.5B GGUF is reachable from the package registries here):
#
#   bash scripts/bench_dense_0_5b.sh [LLAMA_BENCH]
#
# Makes `dense-0.5b` (scripts/make_tiny_models.py: Qwen2.5-0.5B's shape — 24 layers,
# hidden 896, FFN 4864, 14 query and 2 KV heads of 64, Q/K/V biases, tied head — with
# SmolLM2's vocabulary and random F32 weights) and quantizes it with `dhurandhar quantize
# --type q4_k_m`; rows of 896 are not whole Q4_K super-blocks, so most matrices fall back
# to Q5_0 as in the real file. Both land in .cache/tiny-models (git-ignored) and are
# reused. Then, as root with cgroup v1: `bench-stream` under a cap of a third of the
# file (with llama.cpp's `llama-bench` under the same cap when its path is given), and
# `plan-check` on 1 and 2 threads with the streamed runs' budget at a third. plan-check
# needs `dhurandhar devices --probe` first. Random weights: the text is noise; what is
# measured is bytes, memory and speed, which do not depend on what the weights say.
set -euo pipefail
llama_bench=${1:-}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build --release -q -p dhurandhar-cli
bin="$root/target/release/dhurandhar"
dir=.cache/tiny-models
model=$dir/dense-0.5b-q4_k_m.gguf
if [ ! -f "$model" ]; then
  vocab=$(python3 scripts/fetch_fixtures.py .cache/fixtures 2>/dev/null | tail -n 1)/SmolLM2-135M-Instruct.Q4_1.gguf
  python3 scripts/make_tiny_models.py --vocab-from "$vocab" --out "$dir" dense-0.5b >/dev/null
  "$bin" quantize "$dir/tiny-dense-0.5b.gguf" -o "$model" --type q4_k_m | tail -n 4
  rm "$dir/tiny-dense-0.5b.gguf"
fi
third=$(( $(stat -c %s "$model") / 3 ))
"$bin" bench-stream --model "$model" --cap "$third" ${llama_bench:+--llama-bench "$llama_bench"}
for threads in 1 2; do
  "$bin" plan-check --model "$model" --cap-fraction 0.3333 --threads "$threads"
done
