#!/usr/bin/env bash
# Regenerate the llama.cpp golden files the engine tests compare against.
#
#   bash scripts/goldens/make_goldens.sh /path/to/llama.cpp
#
# The llama.cpp source ships in the llama-cpp-python sdist on PyPI
# (pip download --no-deps --no-binary llama-cpp-python llama-cpp-python==0.3.36);
# build it first (see docs/run.md). Needs the SmolLM2 fixture
# (python3 scripts/fetch_fixtures.py). Writes small JSON files (top-k logits,
# token ids) into crates/dhurandhar-engine/tests/goldens/. Never run in CI.
set -euo pipefail
llama=${1:?usage: make_goldens.sh LLAMA_CPP_DIR}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$root/crates/dhurandhar-engine/tests/goldens"
fixtures=$(python3 "$root/scripts/fetch_fixtures.py" "$root/.cache/fixtures" | tail -n 1)
model="$fixtures/SmolLM2-135M-Instruct.Q4_1.gguf"
tool=$(mktemp -d)/llama_logits
g++ -O2 -std=c++17 -I"$llama/include" -I"$llama/ggml/include" "$here/llama_logits.cpp" \
  -L"$llama/build/bin" -lllama -lggml -lggml-base -Wl,-rpath,"$llama/build/bin" -o "$tool"
mkdir -p "$out"
# Teacher-forced top-8 logits over the first 64 tokens of the shipped evaluation text.
"$tool" "$model" "$root/data/eval/pride-and-prejudice-ch1.txt" 64 8 2>/dev/null \
  | python3 -c 'import json,sys; d=json.load(sys.stdin); d["tokens"]=d["tokens"][:64]; d.pop("text"); d["text_file"]="data/eval/pride-and-prejudice-ch1.txt"; print(json.dumps(d))' \
  > "$out/smollm2-q4_1-logits.json"
# The same 64 positions with a LoRA adapter (scripts/make_test_adapter.py, fixed seed),
# exported by dhurandhar to llama.cpp's LoRA GGUF and applied by llama.cpp; the adapter's
# sha256 is recorded so the test knows it compares against the same bytes.
adapter=$(mktemp -d)/adapter
lora_sha=$(python3 "$root/scripts/make_test_adapter.py" --out "$adapter")
(cd "$root" && cargo run --release -q -- lora export-gguf "$adapter" --base "$model" -o "$adapter.gguf")
mkdir -p "$root/crates/dhurandhar/tests/goldens"
LORA="$adapter.gguf" "$tool" "$model" "$root/data/eval/pride-and-prejudice-ch1.txt" 64 8 2>/dev/null \
  | SHA="$lora_sha" python3 -c 'import json,os,sys; d=json.load(sys.stdin); d["tokens"]=d["tokens"][:64]; d.pop("text"); d["text_file"]="data/eval/pride-and-prejudice-ch1.txt"; d["adapter"]="scripts/make_test_adapter.py"; d["adapter_sha256"]=os.environ["SHA"]; print(json.dumps(d))' \
  > "$root/crates/dhurandhar/tests/goldens/smollm2-lora-logits.json"
# Token ids for a multilingual text (digits, code, whitespace runs, emoji).
"$tool" "$model" "$here/tokenizer-multilingual.txt" 0 0 2>/dev/null > "$out/smollm2-tokenizer.json"
# Tiny random-weight models, one per architecture (scripts/make_tiny_models.py, fixed
# seeds): teacher-forced top-8 over the same 64 tokens with an F32 KV cache, plus a
# greedy continuation of 24 tokens after the first 16; the model's sha256 is recorded so
# the test knows it compares against the same bytes.
tiny="$root/.cache/tiny-models"
python3 "$root/scripts/make_tiny_models.py" --vocab-from "$model" --out "$tiny" |
while read -r path sha; do
  arch=$(basename "$path" .gguf)
  "$tool" "$path" "$root/data/eval/pride-and-prejudice-ch1.txt" 64 8 24 2>/dev/null \
    | SHA="$sha" python3 -c 'import json,os,sys; d=json.load(sys.stdin); d["tokens"]=d["tokens"][:64]; d.pop("text"); d["text_file"]="data/eval/pride-and-prejudice-ch1.txt"; d["model_sha256"]=os.environ["SHA"]; d["model"]="scripts/make_tiny_models.py"; print(json.dumps(d))' \
    > "$out/$arch.json"
done
echo "llama.cpp from the llama-cpp-python 0.3.36 sdist; generated $(date -u +%F) by scripts/goldens/make_goldens.sh" > "$out/SOURCE"
cp "$out/SOURCE" "$root/crates/dhurandhar/tests/goldens/SOURCE"
ls -l "$out"
