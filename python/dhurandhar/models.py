"""Model architectures: the built-in registry, YAML profiles and real checkpoints.

``ModelArchitecture`` is frozen and carries the Python tool's field names (those of its
YAML profiles): ``num_hidden_layers``, ``num_key_value_heads``, ``head_dim`` and so on.
Its checks and defaults are the Rust core's, so a profile that loads here loads in the
CLI and the other way round.
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Mapping, Optional, Union

from . import _native


class FrozenInstanceError(AttributeError):
    """Raised when a field of a frozen object is assigned."""


class ModelArchitecture:
    """A model's architecture, frozen; fields read as attributes.

    Build one from fields (``ModelArchitecture(name=..., family=..., ...)``, the YAML
    profile's names; the core validates them and fills defaults), or get one from
    :func:`get_model`, :func:`load_model_profile` or :func:`model_from_checkpoint`.
    ``replace(**changes)`` returns a modified copy; ``to_dict()`` the fields.
    """

    __slots__ = ("_fields", "_spec", "_weights", "_origin")
    _fields: dict[str, Any]
    _spec: Optional[str]
    _weights: Optional[dict[str, Any]]
    _origin: str

    def __init__(self, **fields: Any) -> None:
        checked = _native.model_from_fields(fields)
        self._init(checked, spec=None, weights=None, origin="given")

    def _init(
        self,
        fields: Mapping[str, Any],
        spec: Optional[str],
        weights: Optional[Mapping[str, Any]],
        origin: str,
    ) -> None:
        object.__setattr__(self, "_fields", dict(fields))
        object.__setattr__(self, "_spec", spec)
        object.__setattr__(self, "_weights", dict(weights) if weights else None)
        object.__setattr__(self, "_origin", origin)

    @classmethod
    def _from_native(cls, resolved: Mapping[str, Any], spec: Optional[str]) -> "ModelArchitecture":
        self = cls.__new__(cls)
        self._init(resolved["arch"], spec, resolved.get("weights"), resolved["origin"])
        return self

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._fields[name]
        except KeyError:
            raise AttributeError(f"ModelArchitecture has no field {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"ModelArchitecture is frozen: cannot set {name!r} (use replace())")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"ModelArchitecture is frozen: cannot delete {name!r}")

    def __dir__(self) -> list[str]:
        return sorted(set(object.__dir__(self)) | set(self._fields))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModelArchitecture) and self._fields == other._fields

    def __hash__(self) -> int:
        return hash((self._fields["name"], self._fields["num_hidden_layers"], self._fields["hidden_size"]))

    def __repr__(self) -> str:
        f = getattr(self, "_fields", None)
        if f is None:
            return "ModelArchitecture(<unset>)"
        return (
            f"ModelArchitecture(name={f['name']!r}, family={f['family']!r}, "
            f"param_count_b={f['param_count_b']}, num_hidden_layers={f['num_hidden_layers']}, "
            f"head_dim={f['head_dim']}, origin={self._origin!r})"
        )

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    @property
    def origin(self) -> str:
        """Where it came from: ``built-in``, a file path, or ``given``."""
        return self._origin

    @property
    def checkpoint_weights(self) -> Optional[dict[str, Any]]:
        """Exact stored bytes per component when read from a checkpoint, else None."""
        return dict(self._weights) if self._weights else None

    def to_dict(self) -> dict[str, Any]:
        """The fields (the YAML profile's names) as a plain dict."""
        return dict(self._fields)

    def replace(self, **changes: Any) -> "ModelArchitecture":
        """A copy with some fields changed (validated again)."""
        return ModelArchitecture(**{**self._fields, **changes})

    def _analyze_args(self) -> dict[str, Any]:
        """How analyze() names this model: by spec when unchanged (exact checkpoint
        bytes, same origin as the CLI), else by value."""
        if self._spec is not None:
            return {"model": self._spec}
        return {"arch": self._fields}


PathLike = Union[str, "os.PathLike[str]"]


def get_model(name: str) -> ModelArchitecture:
    """A built-in model by name (``gemma4-e2b``, ``qwen2.5-0.5b``, ...).

    Unknown names raise ``ValueError`` with the nearest names.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, not {type(name).__name__}")
    if os.sep in name or name.endswith((".yaml", ".yml", ".gguf", ".safetensors", ".json")):
        raise ValueError(f"{name!r} is a path: use load_model_profile() or model_from_checkpoint()")
    return ModelArchitecture._from_native(_native.resolve_model(name), name)


def list_models() -> list[str]:
    """Names of the built-in models."""
    return [m["name"] for m in _native.list_models()["models"]]


def list_model_architectures() -> list[ModelArchitecture]:
    """Every built-in model as a :class:`ModelArchitecture`."""
    return [get_model(n) for n in list_models()]


def load_model_profile(path: PathLike) -> ModelArchitecture:
    """A model from a YAML profile (the Python tool's format)."""
    p = os.fspath(path)
    if not p.lower().endswith((".yaml", ".yml")):
        raise ValueError(f"{p}: a model profile is a .yaml or .yml file")
    return ModelArchitecture._from_native(_native.resolve_model(p), p)


def model_from_checkpoint(path: PathLike) -> ModelArchitecture:
    """A model read from a real checkpoint: ``.gguf``, ``.safetensors``, a sharded
    index, ``config.json`` or a model directory (architecture inferred, exact bytes
    kept for :func:`dhurandhar.analyze`)."""
    p = os.fspath(path)
    if not os.path.exists(p):
        raise FileNotFoundError(f"{p}: no such file or directory")
    return ModelArchitecture._from_native(_native.resolve_model(p), p)


def model_yaml(name: str) -> str:
    """The YAML profile of a built-in model (a starting point for your own)."""
    return _native.model_yaml(name)


__all__ = [
    "FrozenInstanceError",
    "ModelArchitecture",
    "get_model",
    "list_models",
    "list_model_architectures",
    "load_model_profile",
    "model_from_checkpoint",
    "model_yaml",
]
