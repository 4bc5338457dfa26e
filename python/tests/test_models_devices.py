from __future__ import annotations

import pytest

import dhurandhar as d
from dhurandhar.models import FrozenInstanceError

from conftest import as_json, cli_json


def test_list_models_is_the_cli_listing():
    doc = cli_json("models")
    assert d.list_models() == [m["name"] for m in doc["models"]]
    assert "gemma4-e2b" in d.list_models()
    assert [m.to_dict() for m in d.models.list_model_architectures()] == doc["models"]


def test_get_model_fields_and_frozen():
    m = d.get_model("qwen2.5-0.5b")
    assert m.name == "qwen2.5-0.5b"
    assert m.num_key_value_heads == 2 and m.head_dim == 64
    assert m.origin == "built-in"
    with pytest.raises(FrozenInstanceError):
        m.head_dim = 32  # type: ignore[misc]
    with pytest.raises(AttributeError):
        m.no_such_field
    assert "num_hidden_layers" in dir(m)


def test_unknown_model_suggests():
    with pytest.raises(ValueError, match="gemma4-e2b"):
        d.get_model("gemma4-e3b")
    with pytest.raises(TypeError):
        d.get_model(3)  # type: ignore[arg-type]


def test_architecture_from_fields_is_validated_and_replace_copies():
    m = d.get_model("llama-3.2-1b")
    again = d.ModelArchitecture(**m.to_dict())
    assert again == m and again.origin == "given"
    smaller = m.replace(num_hidden_layers=8, num_attention_layers=8)
    assert smaller.num_hidden_layers == 8 and m.num_hidden_layers != 8
    with pytest.raises(ValueError):
        m.replace(head_dim=0)
    with pytest.raises(ValueError, match="unknown field"):
        d.ModelArchitecture(**{**m.to_dict(), "no_such_field": 1})


def test_yaml_profile_round_trip(tmp_path):
    y = tmp_path / "mine.yaml"
    y.write_text(d.model_yaml("llama-3.2-1b"))
    m = d.load_model_profile(y)
    assert m.to_dict() == d.get_model("llama-3.2-1b").to_dict()
    assert m.origin == str(y)
    with pytest.raises(ValueError, match="yaml"):
        d.load_model_profile(tmp_path / "mine.txt")
    with pytest.raises(OSError):
        d.load_model_profile(tmp_path / "missing.yaml")


def test_model_from_checkpoint(gguf):
    m = d.model_from_checkpoint(gguf)
    assert m.num_hidden_layers == 30 and m.head_dim == 64
    w = m.checkpoint_weights
    assert w is not None and w["token_embeddings"] > 0 and w["decoder_layers"] > 0
    with pytest.raises(FileNotFoundError):
        d.model_from_checkpoint(str(gguf) + ".missing")


def test_devices_builtin_and_custom(tmp_path):
    doc = cli_json("devices")
    assert d.list_devices()[:5] == [x["slug"] for x in doc["devices"]]
    dev = d.get_device("laptop_nvme")
    assert as_json(dev.to_dict()) == next(x for x in doc["devices"] if x["slug"] == "laptop_nvme")
    with pytest.raises(ValueError, match="tablet_ufs3"):
        d.get_device("tablet")
    with pytest.raises(ValueError):
        d.DeviceProfile(name="broken", ram_budget_mb=0, flash_read_gbps=1.0)
    p = d.register_device(d.DeviceProfile(name="My Phone", ram_budget_mb=3072, flash_read_gbps=4.5))
    try:
        assert p.slug == "my_phone" and d.get_device("my_phone") == p
        assert "my_phone" in d.list_devices()
    finally:
        del d.DEVICE_PROFILES["my_phone"]
    fmts = d.weight_formats()
    assert as_json(fmts) == doc["weight_formats"] and "int4" in [f["name"] for f in fmts]
    y = tmp_path / "board.yaml"
    y.write_text("name: Board\nram_budget_mb: 512\nflash_read_gbps: 0.2\n")
    b = d.get_device(y)
    assert (b.slug, b.ram_budget_mb) == ("board", 512.0)
