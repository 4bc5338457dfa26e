from __future__ import annotations

import pytest

import dhurandhar as d

from conftest import as_json, cli_json


@pytest.mark.parametrize(
    "kwargs,flags",
    [
        ({}, []),
        ({"model": "qwen2.5-0.5b", "context_tokens": 4096, "devices": ["laptop_nvme"]},
         ["-m", "qwen2.5-0.5b", "--context-tokens", "4096", "--device", "laptop_nvme"]),
        ({"model": "gemma4-e4b", "weight_format": "q4_k", "kv_codec": "turbo", "kv_bits": 3},
         ["-m", "gemma4-e4b", "--weight-format", "q4_k", "--kv-codec", "turbo", "--kv-bits", "3"]),
        ({"model": "llama-3.2-1b", "kv_bits": 8, "quant_bits": 8, "ram_mb": 700, "flash_gbps": 1.5,
          "devices": ["tablet_ufs3"]},
         ["-m", "llama-3.2-1b", "--kv-bits", "8", "--quant-bits", "8", "--ram-mb", "700",
          "--flash-gbps", "1.5", "--device", "tablet_ufs3"]),
        ({"model": "gemma4-e2b", "ple_hot_tokens": 2048, "ple_layout": "per-layer", "strip_vision": True},
         ["-m", "gemma4-e2b", "--ple-hot-tokens", "2048", "--ple-layout", "per-layer", "--strip-vision"]),
    ],
)
def test_same_document_as_cli(kwargs, flags):
    r = d.analyze(**kwargs)
    assert as_json(r.to_dict()) == cli_json("analyze", *flags)


def test_result_object():
    r = d.analyze("qwen2.5-0.5b", context_tokens=32768, devices=["low_tier_mobile_emmc"])
    kv = next(c for c in r.components if c.name == "kv_cache")
    assert kv.bytes == 106_954_752  # the facade's documented example
    assert r.kv.bits_per_value == 4.25
    assert r.totals.resident_bytes > 0
    assert [x.slug for x in r.devices] == ["low_tier_mobile_emmc"]
    assert r.devices[0].mode in ("resident", "ple_mmap", "weights_streamed", "infeasible")
    assert isinstance(r.to_dict(), dict) and r.to_dict() == dict(r)
    with pytest.raises(AttributeError, match="fields"):
        r.no_such_thing


def test_to_pandas_or_clear_import_error():
    r = d.analyze("qwen2.5-0.5b")
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pandas"):
            r.to_pandas()
    else:
        df = r.to_pandas()
        assert list(df["name"]) == [c["name"] for c in r.to_dict()["components"]]
        assert len(r.to_pandas("devices")) == len(r.devices)


def test_architecture_objects_and_custom_devices():
    m = d.get_model("llama-3.2-1b")
    same = d.analyze(m, context_tokens=8192)
    assert same.model_origin == "built-in"
    changed = d.analyze(m.replace(num_hidden_layers=8, num_attention_layers=8), context_tokens=8192)
    assert changed.model_origin == "given"
    kv = lambda r: next(c.bytes for c in r.components if c.name == "kv_cache")  # noqa: E731
    assert kv(changed) * 2 == kv(same)  # 8 of 16 layers
    phone = d.DeviceProfile(name="Phone X", ram_budget_mb=3072, flash_read_gbps=4.5, slug="phone_x")
    r = d.analyze(m, devices=["laptop_nvme", phone])
    assert [x.slug for x in r.devices] == ["laptop_nvme", "phone_x"]
    d.DEVICE_PROFILES["phone_y"] = phone
    try:
        r = d.analyze(m, devices=["phone_y"])
        assert [x.slug for x in r.devices] == ["phone_y"]
    finally:
        del d.DEVICE_PROFILES["phone_y"]


def test_codec_object_and_errors():
    codec = d.TurboQuantCodec(head_dim=64, config=d.TurboQuantConfig(residual_bits=3))
    r = d.analyze("qwen2.5-0.5b", kv_codec=codec)
    assert (r.kv.codec, r.kv.bits) == ("turbo", 3)
    with pytest.raises(ValueError, match="unknown codec"):
        d.analyze("qwen2.5-0.5b", kv_codec="turbo-xl")
    with pytest.raises(ValueError, match="weight"):
        d.analyze("qwen2.5-0.5b", weight_format="int3.5")
    with pytest.raises(ValueError, match="ram_mb"):
        d.analyze("qwen2.5-0.5b", ram_mb=100)
    with pytest.raises(TypeError):
        d.analyze(42)  # type: ignore[arg-type]


def test_help_documents_min_context_tokens():
    import pydoc
    import re

    text = pydoc.render_doc(d.analyze, renderer=pydoc.plaintext)
    assert re.search(r"min_context_tokens: '?int'? = 1024", text)  # the signature help() shows
    assert "``min_context_tokens``: the shortest context" in text  # and what it means
