#!/usr/bin/env bash
# Expert streaming benchmark: a mixture-of-experts model streamed with its expert cache
# at a share of the expert bytes, reads ahead on and off, side by side in one run.
#
#   bash scripts/bench_moe.sh [CACHE_SHARE=0.25] [TOKENS=256] [REPEATS=6] [THREADS=1]
#
# The model is `moe-bench` from scripts/make_tiny_models.py (Qwen3-MoE layout, random
# weights, Q8_0, 8 layers × 32 experts with 4 used; ~250 MiB), made into
# .cache/tiny-models. Each run is `dhurandhar eval --chunk 1` over the first TOKENS
# tokens of the shipped text: one token per forward pass, as decoding runs, over real
# text (a random model's own samples repeat a few tokens, whose experts stay cached).
# Weights are streamed with `--ram-budget 1GiB --expert-cache SHARE×experts`: the budget
# pins the dense layers and the head, so only experts are read. Four configurations —
# reads ahead on and off, each with the default next-use eviction and with LRU — run in
# turn REPEATS times; the table gives the median of each, beside a mapped run (page
# cache warm) and a run with every expert cached. This virtual disk's speed drifts
# between runs by more than the effect measured, so reads ahead are judged by pairs:
# each repeat runs "on" and "off" back to back (which goes first alternates), and the
# last lines give every pair's ratio, how many pairs "on" won, and the one-sided
# sign-test p-value of that count (the chance of as many wins if reads ahead made no
# difference). Needs python3 with the gguf package; builds the release binary if needed.
set -euo pipefail
share=${1:-0.25}
tokens=${2:-256}
repeats=${3:-6}
threads=${4:-1}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build --release -q
bin="$root/target/release/dhurandhar"
vocab=$(python3 scripts/fetch_fixtures.py .cache/fixtures 2>/dev/null | tail -n 1)/SmolLM2-135M-Instruct.Q4_1.gguf
model=.cache/tiny-models/tiny-moe-bench.gguf
python3 scripts/make_tiny_models.py --vocab-from "$vocab" --out .cache/tiny-models moe-bench >/dev/null
run() { "$bin" eval --model "$model" --text-file data/eval/pride-and-prejudice-ch1.txt --max-tokens "$tokens" \
  --chunk 1 --q8-activations --threads "$threads" --json "$@"; }
experts=$("$bin" generate --model "$model" --prompt hi --max-tokens 1 --weights stream --json |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["weights"]["plan"]["expert_bytes"])')
cache=$(python3 -c "print(int($experts * $share))")
out=$(mktemp -d)
trap 'rm -r "$out"' EXIT
run > "$out/mmap.json"
streamed() { # streamed on|off EVICTION REPEAT
  run --weights stream --ram-budget 1GiB --expert-cache "$cache" --expert-eviction "$2" \
    $([ "$1" = off ] && echo --no-expert-prefetch) > "$out/$1-$2-$3.json"
}
for i in $(seq "$repeats"); do
  for ev in next-use lru; do
    # Alternate which goes first, so a drift of the disk within a pair favours neither.
    if ((i % 2)); then streamed on $ev $i; streamed off $ev $i; else streamed off $ev $i; streamed on $ev $i; fi
  done
done
run --weights stream --ram-budget 1GiB --expert-cache "$experts" > "$out/all.json"
python3 - "$out" "$repeats" "$share" <<'PY'
import json, statistics, sys
out, repeats, share = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
mib = 1 << 20
def load(name): return json.load(open(f"{out}/{name}.json"))
def tps(r): return r["tokens"] / r["seconds"]
def row(label, runs):
    med = lambda f: statistics.median(f(x) for x in runs)
    speeds = [tps(x) for x in runs]
    speed = f"{statistics.median(speeds):.1f}" + (f" ({min(speeds):.1f}–{max(speeds):.1f})" if len(runs) > 1 else "")
    e = runs[0]["weights"].get("experts")
    if e is None:
        return f"| {label} | {speed} | | | | | |"
    ex = lambda k: (lambda x: x["weights"]["experts"][k])
    acc = f"{med(ex('prefetch_accuracy')) * 100:.0f}%" if e["prefetch_accuracy"] is not None else "—"
    wait = med(lambda x: (x["weights"]["traffic"] or {}).get("io_wait_share", 0.0))
    return (f"| {label} | {speed} | {e['capacity_bytes'] / mib:.1f} MiB | {med(ex('hit_rate')) * 100:.0f}% | "
            f"{acc} | {med(ex('bytes_read_per_token')) / mib:.2f} MiB | {wait * 100:.0f}% |")
runs = lambda kind, ev: [load(f"{kind}-{ev}-{i}") for i in range(1, repeats + 1)]
on, off = runs("on", "next-use"), runs("off", "next-use")
plan = on[0]["weights"]["plan"]
print(f"{on[0]['model']}, {on[0]['tokens']} tokens of the shipped text one per pass, "
      f"expert cache {share:.0%} of {plan['expert_bytes'] / mib:.1f} MiB of experts; medians of {repeats}")
print("| run | tokens/s (median, range) | expert cache | hit rate | prefetch accuracy | experts read/token | I/O wait |")
print("|---|---:|---:|---:|---:|---:|---:|")
print(row("mmap (page cache warm)", [load("mmap")]))
print(row("stream, next-use eviction, reads ahead", on))
print(row("stream, next-use eviction, no reads ahead", off))
print(row("stream, LRU, reads ahead", runs("on", "lru")))
print(row("stream, LRU, no reads ahead", runs("off", "lru")))
print(row("stream, every expert cached", [load("all")]))
speed = lambda rs: statistics.median(map(tps, rs))
from math import comb
for ev in ("next-use", "lru"):
    ratios = [tps(a) / tps(b) for a, b in zip(runs("on", ev), runs("off", ev))]
    wins = sum(r > 1 for r in ratios)
    p = sum(comb(repeats, k) for k in range(wins, repeats + 1)) / 2 ** repeats
    print(f"reads ahead / none, {ev}, pair by pair: " + " ".join(f"{r:.2f}" for r in ratios)
          + f"; median {statistics.median(ratios):.2f}x; faster in {wins} of {repeats} pairs"
          + f" (sign test p = {p:.3f})")
print(f"next-use / LRU without reads ahead: {speed(off) / speed(runs('off', 'lru')):.2f}x")
PY
