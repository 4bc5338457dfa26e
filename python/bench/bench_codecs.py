#!/usr/bin/env python3
"""Per-vector encode/decode cost through Python vs the Rust figure.

For each codec at head_dim 128 (one thread): µs per vector when Python encodes a batch
of 4096 vectors per call, and when it encodes 1 vector per call (where the per-call
overhead of the binding shows), next to `dhurandhar kv speed --json` for the same codec
(the Rust loop, no Python). Prints the ratios; asserts nothing (speed lives in
benchmarks, not tests).

    python bench_codecs.py [--cli target/release/dhurandhar] [--codecs turbo,turbo-mse,q8_0]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time

import dhurandhar as d


def best_us_per_vector(fn, vectors: int, min_seconds: float) -> float:
    """Best of repeated timings (µs per vector), each repeated until min_seconds/5."""
    best = float("inf")
    t_end = time.perf_counter() + min_seconds
    while time.perf_counter() < t_end or best == float("inf"):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            dt = time.perf_counter() - t0
            if dt > min_seconds / 5:
                break
        best = min(best, dt / n / vectors * 1e6)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", default=os.environ.get("DHURANDHAR_BIN", "target/release/dhurandhar"))
    ap.add_argument("--codecs", default="turbo,turbo-mse,q8_0")
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--min-seconds", type=float, default=1.0)
    a = ap.parse_args()
    batch = 4096
    print(f"head_dim {a.head_dim}, 1 thread, µs per vector (best of repeats); batch = {batch} vectors/call")
    print(f"{'codec':<10} {'op':<6} {'rust':>8} {'py batch':>9} {'py 1/call':>10} {'batch/rust':>10} {'call overhead':>14}")
    for name in a.codecs.split(","):
        codec = d.make_codec(name, a.head_dim, a.bits if name not in ("q8_0",) else None)
        x = d.synthetic_kv(batch, a.head_dim, seed=1)
        one = x[:1]
        rust = json.loads(
            subprocess.run(
                [a.cli, "kv", "speed", "--codec", codec.name, "--bits", str(codec.bits), "--head-dim",
                 str(a.head_dim), "--threads", "1", "--vectors", str(batch), "--min-seconds",
                 str(a.min_seconds / 2), "--json"],
                check=True, capture_output=True, text=True,
            ).stdout
        )
        e_big, e_one = codec.encode(x), codec.encode(one)
        rows = [
            ("encode", rust["encode_ns_per_vector"] / 1000,
             best_us_per_vector(lambda: codec.encode(x), batch, a.min_seconds),
             best_us_per_vector(lambda: codec.encode(one), 1, a.min_seconds)),
            ("decode", rust["decode_ns_per_vector"] / 1000,
             best_us_per_vector(lambda: codec.decode(e_big), batch, a.min_seconds),
             best_us_per_vector(lambda: codec.decode(e_one), 1, a.min_seconds)),
        ]
        for op, r, pb, p1 in rows:
            print(f"{codec.name:<10} {op:<6} {r:8.3f} {pb:9.3f} {p1:10.3f} {pb / r:10.2f}x {p1 - r:12.3f}µs")
    print("Python tool (its README): TurboQuant d=128 ≈ 2.3–3.3 µs/vector")


if __name__ == "__main__":
    main()
