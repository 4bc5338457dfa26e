#!/usr/bin/env python3
"""A PEFT LoRA adapter for the SmolLM2-135M fixture, from a fixed seed, for the tests
that check `--adapter` against llama.cpp's `--lora` (golden:
crates/dhurandhar/tests/goldens/smollm2-lora-logits.json).

r = 8, alpha = 16 on all seven projections of every layer; A and B from numpy's
RandomState(seed) (the same bytes on every platform), in HF's layout and key names
(`base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight`, A `r x in`,
B `out x r`, f32). The safetensors file is written by hand (8-byte header length,
JSON header, data) so nothing but numpy is needed.

    make_test_adapter.py --out DIR

writes DIR/adapter_config.json and DIR/adapter_model.safetensors and prints the
sha256 of the safetensors file. Exit status 3 when numpy cannot be imported.
"""

import argparse
import hashlib
import json
import os
import struct
import sys

try:
    import numpy as np
except ImportError as e:  # pragma: no cover - environment check
    print(f"numpy not importable: {e}", file=sys.stderr)
    sys.exit(3)

LAYERS, HIDDEN, Q, KV, FFN = 30, 576, 576, 192, 1536
R, ALPHA, SEED = 8, 16, 1234
SHAPES = [
    ("self_attn", "q_proj", HIDDEN, Q),
    ("self_attn", "k_proj", HIDDEN, KV),
    ("self_attn", "v_proj", HIDDEN, KV),
    ("self_attn", "o_proj", Q, HIDDEN),
    ("mlp", "gate_proj", HIDDEN, FFN),
    ("mlp", "up_proj", HIDDEN, FFN),
    ("mlp", "down_proj", FFN, HIDDEN),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    out = ap.parse_args().out
    rng = np.random.RandomState(SEED)
    tensors = []
    for layer in range(LAYERS):
        for parent, module, fin, fout in SHAPES:
            stem = f"base_model.model.model.layers.{layer}.{parent}.{module}"
            # Kaiming-like A, and a B large enough to move the logits by whole units
            # (perplexity of the shipped text 34.8 -> 76.7), far above rounding noise.
            a = (rng.standard_normal((R, fin)) / np.sqrt(fin)).astype("<f4")
            b = (rng.standard_normal((fout, R)) * 0.1).astype("<f4")
            tensors.append((f"{stem}.lora_A.weight", a))
            tensors.append((f"{stem}.lora_B.weight", b))
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, t in tensors:
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "adapter_model.safetensors")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for _, t in tensors:
            f.write(t.tobytes())
    config = {
        "peft_type": "LORA",
        "r": R,
        "lora_alpha": ALPHA,
        "target_modules": [m for _, m, _, _ in SHAPES],
        "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "lora_dropout": 0.0,
        "bias": "none",
        "task_type": "CAUSAL_LM",
    }
    with open(os.path.join(out, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(path, "rb") as f:
        print(hashlib.sha256(f.read()).hexdigest())


if __name__ == "__main__":
    main()
