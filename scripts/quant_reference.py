#!/usr/bin/env python3
"""Independent reference for the engine's quant kernels.

For each requested ggml type, writes random but valid blocks and their dequantization by
the `gguf` Python package (`gguf.quants.dequantize`) into a directory:

    OUT/<TYPE>.bin   raw blocks, ggml byte layout
    OUT/<TYPE>.f32   the dequantized values, little-endian float32

Blocks are random bytes whose f16 scale fields are then overwritten with values of
magnitude in [1e-3, 1e-1] and random sign, so every block is one a quantizer could have
written (no NaN/inf scales). F16/BF16 "blocks" are single random finite values.

Usage: quant_reference.py --seed 7 --values 3072 --out DIR Q4_K Q6_K ...
Exit status 3 when the gguf package cannot be imported (the test treats that as "skip").
"""

import argparse
import os
import sys

try:
    import numpy as np
    from gguf import GGMLQuantizationType as T
    from gguf.constants import GGML_QUANT_SIZES
    from gguf.quants import dequantize
except ImportError as e:  # pragma: no cover - environment check
    print(f"gguf not importable: {e}", file=sys.stderr)
    sys.exit(3)

# Byte offsets of the f16 scale fields inside one block of each type (ggml block_* structs).
F16_FIELDS = {
    "Q8_0": [0],
    "Q4_0": [0],
    "Q4_1": [0, 2],
    "Q5_0": [0],
    "Q5_1": [0, 2],
    "Q2_K": [80, 82],
    "Q3_K": [108],
    "Q4_K": [0, 2],
    "Q5_K": [0, 2],
    "Q6_K": [208],
    "IQ4_NL": [0],
    "IQ4_XS": [0],
}


def make_blocks(rng, name, n_blocks):
    qtype = T[name]
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    if name in ("F16", "BF16"):
        vals = rng.standard_normal(n_blocks).astype(np.float32)
        if name == "F16":
            raw = vals.astype(np.float16).view(np.uint8)
        else:
            raw = (vals.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
        return qtype, np.ascontiguousarray(raw)
    raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for off in F16_FIELDS[name]:
        mag = rng.uniform(1e-3, 1e-1, size=n_blocks)
        sign = rng.choice([-1.0, 1.0], size=n_blocks)
        raw[:, off:off + 2] = (mag * sign).astype(np.float16).view(np.uint8).reshape(n_blocks, 2)
    return qtype, raw.reshape(-1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--values", type=int, default=4096,
                    help="values per type (a multiple of 256, so whole blocks of every type)")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("types", nargs="+", help="ggml type names, e.g. Q4_K")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.values % 256:
        ap.error("--values must be a multiple of 256")
    for name in args.types:
        if name not in F16_FIELDS and name not in ("F16", "BF16"):
            ap.error(f"unsupported type {name}")
        # One stream per (seed, type), so adding a type does not change the others' data.
        rng = np.random.default_rng([args.seed, *name.encode()])
        qtype, raw = make_blocks(rng, name, args.values // GGML_QUANT_SIZES[T[name]][0])
        vals = dequantize(raw, qtype).astype("<f4").reshape(-1)
        raw.tofile(os.path.join(args.out, f"{name}.bin"))
        vals.tofile(os.path.join(args.out, f"{name}.f32"))


if __name__ == "__main__":
    main()
