"""Real models, weights and profiling against the fixtures, compared with the CLI."""

from __future__ import annotations

import _thread
import os

import numpy as np
import pytest

import dhurandhar as d

from conftest import REPO, as_json, cli_json

PROMPT = "The capital of France is"


def test_inspect_is_the_cli_document(gguf, safetensors_model):
    for path in (gguf, safetensors_model):
        assert as_json(d.inspect(path).to_dict()) == cli_json("inspect", str(path))
    with pytest.raises(OSError):
        d.inspect(str(gguf) + ".missing")


def test_generate_streams_the_cli_text(gguf):
    m = d.Model.load(gguf)
    g = m.generate(PROMPT, max_tokens=12, threads=2)
    pieces = list(g)
    assert len(pieces) >= 2 and all(isinstance(p, str) and p for p in pieces)
    rep = g.report()
    assert "".join(pieces) == rep.text and rep.generated_tokens == 12 and rep.stop_reason == "max_tokens"
    cli = cli_json("generate", "--model", str(gguf), "--prompt", PROMPT, "--max-tokens", "12", "--threads", "2")
    assert rep.text == cli["text"] and rep.prompt_tokens == cli["prompt_tokens"]
    # the loaded model is shared: a second generation gives the same greedy text
    assert m.generate(PROMPT, max_tokens=12, threads=2).text() == rep.text
    with pytest.raises(ValueError, match="max_tokens"):
        m.generate(PROMPT, max_tokens=10**9)
    with pytest.raises(ValueError):
        d.Model.load(__file__)


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def test_streamed_weights_under_a_budget_give_the_cli_text(gguf):
    # The budget covers the whole process (this interpreter included): its resident set
    # now plus 60 MiB leaves a pool that pins some layers and streams the rest.
    budget = _rss_bytes() + (60 << 20)
    m = d.Model.load(gguf, weights="stream", ram_budget=budget)
    assert (m.weights, m.ram_budget) == ("stream", budget)
    g = m.generate(PROMPT, max_tokens=8, threads=2)
    text = g.text()
    rep = g.report()
    cli = cli_json("generate", "--model", str(gguf), "--prompt", PROMPT, "--max-tokens", "8", "--threads", "2")
    assert text == rep.text == cli["text"]
    w = rep.weights
    assert w.mode == "stream" and w.ram_budget_bytes == budget
    assert w.plan.pinned_layers > 0 and w.plan.streamed_bytes_per_pass > 0
    assert w.bytes_read_per_token > 0 and 0 <= w.traffic.io_wait_share <= 1
    r = d.Model.load(gguf, weights="stream", ram_budget="1GiB").bench(
        prompt_tokens=8, decode_tokens=2, threads=[1], repeats=1)
    assert r.weights.plan.streamed_bytes_per_pass == 0
    with pytest.raises(ValueError, match="weights"):
        d.Model.load(gguf, weights="disk")
    with pytest.raises(ValueError, match="ram_budget"):
        d.Model.load(gguf, weights="stream", ram_budget="48 parsecs")
    with pytest.raises(TypeError):
        d.Model.load(gguf, weights="stream", ram_budget=4.5)
    with pytest.raises(ValueError, match="cannot hold the minimum"):
        d.Model.load(gguf, weights="stream", ram_budget="1MiB").generate(PROMPT, max_tokens=2)


def test_bench_reports_every_thread_count_and_stops_on_interrupt(gguf):
    m = d.Model.load(gguf)
    labels = []
    r = m.bench(prompt_tokens=16, decode_tokens=4, threads=[1, 2], repeats=1,
                progress=lambda done, total, label: labels.append(label))
    cli = cli_json("generate", "--bench", "--model", str(gguf), "--bench-prompt", "16", "--max-tokens", "4",
                   "--bench-threads", "1,2", "--bench-repeats", "1")
    assert set(r) == set(cli)
    for k in ("schema_version", "model", "gguf_tensor_bytes", "context_tokens", "kv_cache_bytes", "rss_budget_bytes"):
        assert r[k] == cli[k], k
    assert [x.threads for x in r.results] == [x["threads"] for x in cli["results"]] == [1, 2]
    assert all(x.decode_tokens_per_s > 0 for x in r.results)
    assert labels

    def ctrl_c(done, total, label):
        _thread.interrupt_main()

    with pytest.raises(KeyboardInterrupt):
        m.bench(prompt_tokens=16, decode_tokens=64, threads=[1, 1, 1, 1], repeats=3, progress=ctrl_c)


def test_eval_is_the_cli_document(gguf, tmp_path):
    text = "The quick brown fox jumps over the lazy dog. " * 8
    f = tmp_path / "t.txt"
    f.write_text(text)
    m = d.Model.load(gguf)
    r = m.eval(text_file=f, codecs=["turbo-mse"], bits=4, max_tokens=48, chunk=32, threads=2)
    cli = cli_json("eval", "--model", str(gguf), "--text-file", str(f), "--kv-codec", "turbo-mse",
                   "--kv-bits", "4", "--max-tokens", "48", "--chunk", "32", "--threads", "2")
    mine, theirs = as_json(r.to_dict()), cli
    mine.pop("seconds"), theirs.pop("seconds")
    assert mine == theirs
    assert r.exact.perplexity > 1 and r.codecs[0].codec == "turbo-mse@4"
    # the text given as a string scores the same
    same = m.eval(text, codecs=["turbo-mse"], bits=4, max_tokens=48, chunk=32, threads=2)
    assert (same.exact, same.codecs) == (r.exact, r.codecs)
    with pytest.raises(ValueError, match="exactly one"):
        m.eval()


def test_capture_kv_returns_numpy(gguf, tmp_path):
    m = d.Model.load(gguf)
    tensors, rep = m.capture_kv("Hello there, general Kenobi.", max_tokens=16, threads=2)
    n = rep.n_tokens
    k0 = tensors["layers.0.k"]
    assert k0.dtype == np.float32 and k0.shape[-1] == rep.head_dim and n in k0.shape
    assert {t.name for t in rep.tensors} == set(tensors)
    # captured keys go straight into a codec
    c = d.TurboMseCodec(rep.head_dim, 4)
    assert c.reconstruction_error(k0)["cos_sim"] > 0.95
    out = tmp_path / "kv.safetensors"
    m.capture_kv("Hello there, general Kenobi.", out=out, max_tokens=16, threads=2)
    np.testing.assert_array_equal(d.read_kv_file(out)["layers.0.k"], k0)


def _strip_paths(doc):
    doc = as_json(doc)
    for k in ("input", "output", "file", "seconds", "gb_per_s"):
        doc.pop(k, None)
    return doc


def test_pack_unpack_verify_stats_and_reader(safetensors_model, tmp_path):
    out = tmp_path / "m.dhp"
    calls = []
    r = d.pack(safetensors_model, out, progress=lambda done, total, label: calls.append(done))
    assert calls and out.is_file()
    cli_out = tmp_path / "cli.dhp"
    cli = cli_json("pack", str(safetensors_model), "-o", str(cli_out))
    assert _strip_paths(r.to_dict()) == _strip_paths(cli)
    assert out.read_bytes() == cli_out.read_bytes()
    v = d.verify(out)
    assert _strip_paths(v.to_dict()) == _strip_paths(cli_json("verify", str(out)))
    s = d.pack_stats(out)
    assert as_json(s.to_dict()) == cli_json("pack-stats", str(out))
    back = tmp_path / "back.safetensors"
    d.unpack(out, back)
    packed, orig = d.open_pack(out), d.TensorReader(safetensors_model)
    restored = d.TensorReader(back)
    assert restored.names() == orig.names()
    assert packed.names() == orig.names() and len(packed) > 0
    for name, arr in packed:
        assert isinstance(arr, np.ndarray) and arr.shape == orig.shape(name)
        np.testing.assert_array_equal(arr, orig[name])  # lossless
        np.testing.assert_array_equal(restored[name], orig[name])
    with pytest.raises(KeyError):
        packed["no.such.tensor"]
    with pytest.raises(ValueError):
        d.pack(safetensors_model, out, mode="zip")


def test_a_gguf_pack_round_trips_and_takes_the_plane_threshold(gguf, tmp_path):
    out = tmp_path / "m.dhp"
    r = d.pack(gguf, out, min_plane_saving=0.5)
    assert r.input_bytes == gguf.stat().st_size and out.is_file()
    back = tmp_path / "back.gguf"
    d.unpack(out, back)
    assert back.read_bytes() == gguf.read_bytes()
    with pytest.raises(ValueError, match="min-plane-saving|min_plane_saving"):
        d.pack(gguf, tmp_path / "x.dhp", min_plane_saving=2.0)


def test_mmap_profile_progress_and_interrupt(tmp_path):
    seen = []
    r = d.mmap_profile("qwen2.5-0.5b", scale=0.02, cache_dir=tmp_path, num_tokens=200, warmup_tokens=10,
                       modes=["warm"], progress=lambda done, total, label: seen.append(label))
    assert seen and r.schema_version >= 1
    with pytest.raises(ValueError, match="mode"):
        d.mmap_profile("qwen2.5-0.5b", scale=0.02, cache_dir=tmp_path, modes=["lukewarm"])

    def ctrl_c(done, total, label):
        _thread.interrupt_main()  # as if the user pressed Ctrl-C mid-run

    with pytest.raises(KeyboardInterrupt):
        d.mmap_profile("qwen2.5-0.5b", scale=0.02, cache_dir=tmp_path, num_tokens=100_000, warmup_tokens=10,
                       modes=["warm"], progress=ctrl_c)


def test_lora_dry_run_is_the_cli_document(gguf):
    for model, extra in (("qwen2.5-0.5b", ["--r", "8"]), (str(gguf), [])):
        py = d.lora_dry_run(model, r=8 if extra else None)
        assert as_json(py.to_dict()) == cli_json("lora", "dry-run", "-m", model, *extra)
    assert d.lora_dry_run("qwen2.5-0.5b").estimate["modules"][0]["module"] == "q_proj"
    with pytest.raises(ValueError, match="lora.r"):
        d.lora_dry_run("qwen2.5-0.5b", r=0)


def test_generate_with_an_adapter_is_the_cli_text(gguf, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "make_test_adapter.py"
    adapter = tmp_path / "adapter"
    subprocess.run([sys.executable, str(script), "--out", str(adapter)], check=True, capture_output=True)
    m = d.Model.load(gguf)
    base = m.generate(PROMPT, max_tokens=12, threads=1).text()
    with_adapter = m.generate(PROMPT, max_tokens=12, threads=1, adapters=[adapter])
    text = with_adapter.text()
    assert text != base
    assert with_adapter.report().adapters == [str(adapter)]
    cli = cli_json(
        "generate", "--model", str(gguf), "--prompt", PROMPT, "--max-tokens", "12",
        "--threads", "1", "--adapter", str(adapter),
    )
    assert text == cli["text"]
    # weight 0 is the base; the model itself never changed
    assert m.generate(PROMPT, max_tokens=12, threads=1, adapters=[(adapter, 0.0)]).text() == base
    assert m.generate(PROMPT, max_tokens=12, threads=1).text() == base


def test_chat_messages_use_the_model_template_as_the_cli(gguf):
    m = d.Model.load(gguf)
    g = m.generate(max_tokens=16, threads=1, messages=[{"role": "user", "content": "What is 2+2?"}])
    text = g.text()
    cli = cli_json(
        "generate", "--model", str(gguf), "--prompt", "What is 2+2?", "--chat",
        "--max-tokens", "16", "--threads", "1",
    )
    assert text == cli["text"] and g.report().stop_reason == cli["stop_reason"]
    with pytest.raises(ValueError, match="messages"):
        m.generate(messages=[])


def test_streamed_experts_give_the_mapped_text_and_report_the_cache():
    # The tiny Qwen2-MoE model of scripts/make_tiny_models.py (made by the Rust tests,
    # which scripts/test.sh runs first).
    p = REPO / ".cache" / "tiny-models" / "tiny-qwen2moe.gguf"
    if not p.is_file():
        if os.environ.get("DHURANDHAR_REQUIRE_FIXTURES"):
            pytest.fail(f"{p} missing: run the Rust tests (they make it) first")
        pytest.skip(f"{p} not made (scripts/make_tiny_models.py)")
    want = d.Model.load(p).generate(PROMPT, max_tokens=8).text()
    for prefetch, eviction in [(True, "next-use"), (False, "lru")]:
        m = d.Model.load(p, weights="stream", expert_cache=1, expert_prefetch=prefetch, expert_eviction=eviction)
        g = m.generate(PROMPT, max_tokens=8)
        assert g.text() == want
        e = g.report().weights.experts
        assert e.lookups > 0 and e.capacity_bytes > 1 and 0 <= e.hit_rate <= 1
        if not prefetch:
            assert e.prefetched == 0
    with pytest.raises(ValueError, match="expert_eviction"):
        d.Model.load(p, weights="stream", expert_eviction="fifo")
    with pytest.raises(TypeError, match="expert_cache"):
        d.Model.load(p, weights="stream", expert_cache=1.5)


def test_lora_train_writes_the_adapter_the_cli_would(tmp_path):
    import json
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    tiny = root / ".cache" / "tiny-models" / "tiny-llama.gguf"
    if not tiny.exists():
        pytest.skip("tiny models not made (the Rust tests make them)")
    text = (root / "data" / "eval" / "pride-and-prejudice-ch1.txt").read_text()
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"text": p}) + "\n" for p in text.split("\n\n") if len(p) > 40))
    job = tmp_path / "job.yaml"
    job.write_text(
        f"base_model: {tiny}\ndataset: {data}\noutput_dir: {tmp_path / 'cli'}\n"
        "lora:\n  r: 2\n  target_modules: [q_proj, down_proj]\n"
        "training:\n  max_seq_length: 16\n  batch_size: 1\n  gradient_accumulation_steps: 1\n"
        "  max_steps: 3\n  logging_steps: 1\n  eval_steps: 0\n  save_steps: 0\n"
    )
    seen = []
    r = d.lora_train(job, threads=1, output_dir=tmp_path / "py", progress=lambda *a: seen.append(a))
    assert r.steps == 3 and len(r.history) == 3 and seen
    cli = cli_json("lora", "train", "--threads", "1", "--config", str(job))
    assert [h["loss"] for h in cli["history"]] == [h["loss"] for h in r.history]
    same = lambda name: (tmp_path / "py" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes()
    assert same("adapter_model.safetensors")
    with pytest.raises(ValueError, match="no checkpoint"):
        d.lora_train(job, resume=True, output_dir=tmp_path / "empty")
    assert os.path.exists(tmp_path / "py" / "adapter_config.json")
