#!/usr/bin/env python3
"""Tiny random-weight GGUFs in llama.cpp's real layout, one per architecture the engine
runs, for end-to-end tests against llama.cpp goldens.

Each model has a few small layers (hidden 64, GQA, F32 weights) under llama.cpp's tensor
names and metadata keys for its architecture, and the byte-level BPE vocabulary of the
SmolLM2 fixture (tokens, types, merges copied from it), so both llama.cpp and the engine
load it with their GPT-2-style tokenizers. Weights come from a fixed seed per model, so
the files are byte-identical on every run (the committed goldens depend on it).

    make_tiny_models.py --vocab-from SmolLM2-135M-Instruct.Q4_1.gguf --out DIR [ARCH ...]

writes DIR/tiny-<arch>.gguf (all architectures when none is named) and prints one line
per file: its path and sha256. `moe-bench` (only when named) is a larger Qwen3-MoE-layout
model for the expert-streaming benchmark (scripts/bench_moe.sh): 8 layers, hidden 512,
32 experts of width 512 with 4 used, Q8_0 (about 250 MiB, nearly all experts); each
layer's attention and expert outputs are scaled by 0.25 so a layer updates the residual
stream by a fraction of its size, as in trained transformers (unit-scale random layers
would replace it, and no router could be predicted from the layer before). `dense-0.5b`
(only when named) has Qwen2.5-0.5B's shape in F32, for streaming and planning
benchmarks at that size once quantized (scripts/bench_dense_0_5b.sh).
Exit status 3 when the gguf package cannot be imported (tests treat that as "skip").
"""

import argparse
import hashlib
import os
import sys

try:
    import numpy as np
    import gguf
except ImportError as e:  # pragma: no cover - environment check
    print(f"gguf not importable: {e}", file=sys.stderr)
    sys.exit(3)

HIDDEN = 64
FFN = 128
HEADS = 4
KV_HEADS = 2
CONTEXT = 256

# Per architecture: what makes it that architecture (see docs/run.md's support matrix).
MODELS = {
    # Separate output head, interleaved RoPE, Llama 3 style RoPE frequency factors.
    "llama": dict(layers=2, head_dim=16, untied=True, rope_freqs=True, seed=11),
    # Q/K/V biases.
    "qwen2": dict(layers=2, head_dim=16, qkv_bias=True, seed=12),
    # QK-norm; head_dim 32 so the attention width (128) differs from hidden.
    "qwen3": dict(layers=2, head_dim=32, qk_norm=True, seed=13),
    # Six layers: llama.cpp's default pattern makes 0-4 sliding (window 8) and 5 global;
    # local layers keep the default RoPE base, global ones use freq_base. Final logits
    # soft-capped at 30 (logits reach about that, so the cap bends them).
    "gemma3": dict(layers=6, head_dim=32, qk_norm=True, gemma=True, window=8, softcap=30.0, seed=14),
    # Fused attn_qkv and gate/up, partial rotary (12 of 16 dims).
    "phi3": dict(layers=2, head_dim=16, fused=True, rope_dims=12, seed=15),
    # Mixture of experts (stacked `ffn_*_exps` tensors and a router `ffn_gate_inp`):
    # Qwen1.5-MoE layout: Q/K/V biases, 4 experts with 2 used (softmax, weights not
    # renormalized) and a shared expert behind a sigmoid gate; separate head.
    "qwen2moe": dict(layers=2, head_dim=16, qkv_bias=True, untied=True, experts=4, used=2, expert_ffn=32, shared_ffn=64, seed=16),
    # Qwen3-MoE layout: QK-norm, 8 experts with 2 used, top weights renormalized.
    "qwen3moe": dict(layers=2, head_dim=32, qk_norm=True, experts=8, used=2, expert_ffn=32, seed=17),
    # Mixtral layout: general.architecture `llama` with experts of the FFN width.
    "mixtral": dict(arch="llama", layers=2, head_dim=16, untied=True, experts=4, used=2, seed=18),
}

# Made only when named: not a golden, a benchmark subject.
BENCH_MODELS = {
    "moe-bench": dict(arch="qwen3moe", layers=8, hidden=512, ffn=1024, heads=8, kv_heads=4, head_dim=64,
                      qk_norm=True, experts=32, used=4, expert_ffn=512, q8_0=True, context=2048, update=0.25, seed=19),
    # Qwen2.5-0.5B's shape with SmolLM2's vocabulary, F32 (1.6 GB): a stand-in for the
    # real 0.5B file, which is not reachable here; `dhurandhar quantize` makes it K-quant.
    "dense-0.5b": dict(arch="qwen2", layers=24, hidden=896, ffn=4864, heads=14, kv_heads=2, head_dim=64,
                       qkv_bias=True, context=4096, seed=20),
}


def read_vocab(path):
    r = gguf.GGUFReader(path)

    def field(name):
        f = r.fields[name]
        return f

    def strings(name):
        f = field(name)
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    def ints(name):
        f = field(name)
        return [int(f.parts[i][0]) for i in f.data]

    def scalar(name):
        f = field(name)
        return f.parts[f.data[0]][0]

    return dict(
        tokens=strings("tokenizer.ggml.tokens"),
        types=ints("tokenizer.ggml.token_type"),
        merges=strings("tokenizer.ggml.merges"),
        pre=bytes(field("tokenizer.ggml.pre").parts[-1]).decode(),
        bos=int(scalar("tokenizer.ggml.bos_token_id")),
        eos=int(scalar("tokenizer.ggml.eos_token_id")),
    )


def write_model(arch, cfg, vocab, path):
    rng = np.random.default_rng(cfg["seed"])
    n_vocab = len(vocab["tokens"])
    hd = cfg["head_dim"]
    HIDDEN = cfg.get("hidden", globals()["HIDDEN"])
    FFN = cfg.get("ffn", globals()["FFN"])
    HEADS = cfg.get("heads", globals()["HEADS"])
    KV_HEADS = cfg.get("kv_heads", globals()["KV_HEADS"])
    qd, kvd = HEADS * hd, KV_HEADS * hd

    def mat(rows, cols):
        # Unit-variance outputs for unit-variance inputs.
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    def vec(n, scale):
        return (scale * rng.standard_normal(n)).astype(np.float32)

    w = gguf.GGUFWriter(path, cfg.get("arch", arch))
    if cfg.get("q8_0"):
        # Matrices in Q8_0 (norms, routers and 1-D tensors stay F32, as llama.cpp keeps
        # them).
        add = w.add_tensor

        def add_q8(name, t):
            if t.ndim >= 2 and t.shape[-1] % 32 == 0 and "gate_inp" not in name:
                q = gguf.quants.quantize(t, gguf.GGMLQuantizationType.Q8_0)
                add(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            else:
                add(name, t)

        w.add_tensor = add_q8
    # A name without the architecture in it: llama.cpp changes special-token attributes
    # for models named like "phi3", and these models have no such tokens.
    w.add_name("dhurandhar tiny test model")
    w.add_block_count(cfg["layers"])
    w.add_context_length(cfg.get("context", CONTEXT))
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_rope_dimension_count(cfg.get("rope_dims", hd))
    w.add_rope_freq_base(1e6 if cfg.get("gemma") else 1e4)
    w.add_layer_norm_rms_eps(1e-6 if cfg.get("gemma") else 1e-5)
    if cfg.get("window"):
        w.add_sliding_window(cfg["window"])
    if cfg.get("experts"):
        w.add_expert_count(cfg["experts"])
        w.add_expert_used_count(cfg["used"])
        if cfg.get("expert_ffn"):
            w.add_expert_feed_forward_length(cfg["expert_ffn"])
        if cfg.get("shared_ffn"):
            w.add_expert_shared_feed_forward_length(cfg["shared_ffn"])
    if cfg.get("softcap"):
        w.add_final_logit_softcapping(cfg["softcap"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if cfg.get("q8_0") else gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(vocab["pre"])
    w.add_token_list(vocab["tokens"])
    w.add_token_types(vocab["types"])
    w.add_token_merges(vocab["merges"])
    w.add_bos_token_id(vocab["bos"])
    w.add_eos_token_id(vocab["eos"])
    w.add_add_bos_token(True)

    # Embedding rows of norm ~4 give logits spread over a few units through a tied head.
    w.add_tensor("token_embd.weight", (4.0 * rng.standard_normal((n_vocab, HIDDEN)) / np.sqrt(HIDDEN)).astype(np.float32))
    w.add_tensor("output_norm.weight", norm(HIDDEN))
    if cfg.get("untied"):
        w.add_tensor("output.weight", 4.0 * mat(n_vocab, HIDDEN))
    if cfg.get("rope_freqs"):
        rot = cfg.get("rope_dims", hd)
        w.add_tensor("rope_freqs.weight", (1.0 + 7.0 * rng.random(rot // 2)).astype(np.float32))
    for i in range(cfg["layers"]):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", norm(HIDDEN))
        if cfg.get("fused"):
            w.add_tensor(p + "attn_qkv.weight", mat(qd + 2 * kvd, HIDDEN))
        else:
            w.add_tensor(p + "attn_q.weight", mat(qd, HIDDEN))
            w.add_tensor(p + "attn_k.weight", mat(kvd, HIDDEN))
            w.add_tensor(p + "attn_v.weight", mat(kvd, HIDDEN))
        if cfg.get("qkv_bias"):
            w.add_tensor(p + "attn_q.bias", vec(qd, 0.5))
            w.add_tensor(p + "attn_k.bias", vec(kvd, 0.5))
            w.add_tensor(p + "attn_v.bias", vec(kvd, 0.5))
        if cfg.get("qk_norm"):
            w.add_tensor(p + "attn_q_norm.weight", norm(hd))
            w.add_tensor(p + "attn_k_norm.weight", norm(hd))
        w.add_tensor(p + "attn_output.weight", cfg.get("update", 1.0) * mat(HIDDEN, qd))
        if cfg.get("gemma"):
            w.add_tensor(p + "post_attention_norm.weight", norm(HIDDEN))
        w.add_tensor(p + "ffn_norm.weight", norm(HIDDEN))
        if cfg.get("experts"):
            ne, ef = cfg["experts"], cfg.get("expert_ffn", FFN)
            # A router scaled up so the softmax separates experts (no near-ties).
            w.add_tensor(p + "ffn_gate_inp.weight", 3.0 * mat(ne, HIDDEN))
            w.add_tensor(p + "ffn_gate_exps.weight", np.stack([mat(ef, HIDDEN) for _ in range(ne)]))
            w.add_tensor(p + "ffn_up_exps.weight", np.stack([mat(ef, HIDDEN) for _ in range(ne)]))
            w.add_tensor(p + "ffn_down_exps.weight", np.stack([cfg.get("update", 1.0) * mat(HIDDEN, ef) for _ in range(ne)]))
            if cfg.get("shared_ffn"):
                sf = cfg["shared_ffn"]
                w.add_tensor(p + "ffn_gate_inp_shexp.weight", vec(HIDDEN, 1.0 / np.sqrt(HIDDEN)))
                w.add_tensor(p + "ffn_gate_shexp.weight", mat(sf, HIDDEN))
                w.add_tensor(p + "ffn_up_shexp.weight", mat(sf, HIDDEN))
                w.add_tensor(p + "ffn_down_shexp.weight", mat(HIDDEN, sf))
        elif cfg.get("fused"):
            w.add_tensor(p + "ffn_up.weight", mat(2 * FFN, HIDDEN))
        else:
            w.add_tensor(p + "ffn_gate.weight", mat(FFN, HIDDEN))
            w.add_tensor(p + "ffn_up.weight", mat(FFN, HIDDEN))
        if not cfg.get("experts"):
            w.add_tensor(p + "ffn_down.weight", mat(HIDDEN, FFN))
        if cfg.get("gemma"):
            w.add_tensor(p + "post_ffw_norm.weight", norm(HIDDEN))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vocab-from", required=True, help="GGUF whose gpt2 vocabulary to copy")
    ap.add_argument("--out", required=True, help="directory to write tiny-<arch>.gguf into")
    ap.add_argument("arch", nargs="*", help=f"architectures (default: {' '.join(MODELS)})")
    a = ap.parse_args()
    names = a.arch or list(MODELS)
    known = {**MODELS, **BENCH_MODELS}
    unknown = [n for n in names if n not in known]
    if unknown:
        ap.error(f"unknown architecture(s) {unknown}; known: {' '.join(known)}")
    vocab = read_vocab(a.vocab_from)
    os.makedirs(a.out, exist_ok=True)
    for name in names:
        path = os.path.join(a.out, f"tiny-{name}.gguf")
        tmp = path + f".tmp{os.getpid()}"
        write_model(name, known[name], vocab, tmp)
        with open(tmp, "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()
        os.replace(tmp, path)
        print(path, sha)


if __name__ == "__main__":
    main()
