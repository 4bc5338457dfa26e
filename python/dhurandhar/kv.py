"""KV-cache codecs on numpy arrays.

One class per codec. ``encode(kv)`` takes a float32 or float16 array of any shape
``[..., head_dim]`` (C- or Fortran-ordered; a C-contiguous float32 array is read in
place, without a copy) and returns an :class:`EncodedKV` (the packed bytes, ``len()``
of them); ``decode`` gives back a float32 array of the original shape. The work runs
in Rust with the GIL released, so threads encode in parallel.

Codecs with the Python tool's names and configs: :class:`TurboQuantCodec`
(:class:`TurboQuantConfig`), :class:`RotorQuantCodec`, :class:`SpectralQuantCodec`
(``calibrate`` first), :class:`OScaRCodec`; and the new ones: :class:`TurboMseCodec`,
:class:`TurboProdCodec`, :class:`Q8_0Codec`, :class:`Q4_0Codec`,
:class:`Q4_0RotCodec`, :class:`Kivi2Codec`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Optional, Union

import numpy as np

from . import _native
from ._native import EncodedKV
from ._records import Record

#: Default rotation seed (the Python tool's).
DEFAULT_SEED = 20260421


class KVCodec:
    """Base of the codec classes: one codec built for one ``head_dim``."""

    codec_name: ClassVar[str] = ""
    default_bits: ClassVar[int] = 4

    def __init__(self, head_dim: int, bits: Optional[int] = None, seed: int = DEFAULT_SEED) -> None:
        _check_int("head_dim", head_dim)
        self._bits = int(bits if bits is not None else self.default_bits)
        self._seed = int(seed)
        self._head_dim = int(head_dim)
        self._native: Optional[_native.Codec] = None
        if not self.needs_calibration:
            self._native = _native.Codec(self.codec_name, self._bits, self._head_dim, self._seed)

    needs_calibration: ClassVar[bool] = False

    @property
    def name(self) -> str:
        """Canonical codec name (as in the CLI and JSON reports)."""
        return self.codec_name

    @property
    def bits(self) -> int:
        return self._bits

    @property
    def head_dim(self) -> int:
        return self._head_dim

    @property
    def seed(self) -> int:
        return self._seed

    def _codec(self) -> "_native.Codec":
        if self._native is None:
            raise ValueError(f"{type(self).__name__} needs calibrate(kv) before it can encode")
        return self._native

    def token_group(self, role: str = "key") -> int:
        """Vectors per encoded record; ``encode`` takes whole groups only."""
        return self._codec().token_group(role)

    def encoded_len(self, tokens: int, role: str = "key") -> int:
        """Encoded bytes of ``tokens`` vectors."""
        return self._codec().encoded_len(tokens, role)

    def encode(self, kv: np.ndarray, role: str = "key") -> EncodedKV:
        """Encode ``kv`` (``[..., head_dim]``, float32/float16) as keys or values."""
        return self._codec().encode(kv, role)

    def decode(self, encoded: EncodedKV) -> np.ndarray:
        """Decode what :meth:`encode` made: float32, the original shape."""
        if not isinstance(encoded, EncodedKV):
            raise TypeError(f"decode takes an EncodedKV from encode(), not {type(encoded).__name__}")
        return self._codec().decode(encoded)

    def decode_bytes(self, data: bytes, shape: Iterable[int], role: str = "key") -> np.ndarray:
        """Decode raw bytes (``EncodedKV.data``) into a float32 array of ``shape``."""
        return self._codec().decode_bytes(bytes(data), [int(s) for s in shape], role)

    def round_trip(self, kv: np.ndarray, role: str = "key") -> np.ndarray:
        """``decode(encode(kv))``."""
        return self.decode(self.encode(kv, role))

    def reconstruction_error(self, kv: np.ndarray, role: str = "key") -> dict[str, Any]:
        """Round-trip ``kv`` and measure it.

        Keys: ``cos_sim`` (mean cosine), ``mse`` (per value), ``nmse``,
        ``norm_preservation`` (mean ‖x̂‖/‖x‖), ``bits_per_value`` (stored, a trailing
        partial token group kept as bf16), ``compression_vs_bf16``, ``d_eff``
        (SpectralQuant), plus the Python tool's spellings ``effective_bits`` and
        ``compression_ratio``.
        """
        r = dict(self._codec().reconstruction(kv, role))
        if r.get("d_eff") is None:
            r.pop("d_eff", None)
        r["effective_bits"] = r["bits_per_value"]
        r["compression_ratio"] = r["compression_vs_bf16"]
        return r

    def __repr__(self) -> str:
        return f"{type(self).__name__}(head_dim={self._head_dim}, bits={self._bits}, seed={self._seed})"


def _check_int(name: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an int, not {type(v).__name__}")


# ------------------------------------------------------------------ the Python tool's


@dataclass(frozen=True)
class TurboQuantConfig:
    """TurboQuant (sign bit + L2 norm + residual): ``residual_bits`` in 2..8."""

    residual_bits: int = 4
    seed: int = DEFAULT_SEED


@dataclass(frozen=True)
class RotorQuantConfig:
    """RotorQuant (Cl(3,0) rotor per 3-channel block + TurboQuant stage 2)."""

    residual_bits: int = 4
    seed: int = DEFAULT_SEED


@dataclass(frozen=True)
class SpectralQuantConfig:
    """SpectralQuant: PCA basis + water-filled bit allocation at ``avg_bits``."""

    avg_bits: int = 4
    seed: int = DEFAULT_SEED


@dataclass(frozen=True)
class OScaRConfig:
    """OScaR: per-channel keys over 32-token groups, per-token values, at ``bits``."""

    bits: int = 4
    seed: int = DEFAULT_SEED


class _Configured(KVCodec):
    config_class: ClassVar[type] = TurboQuantConfig
    config_bits: ClassVar[str] = "residual_bits"

    def __init__(self, head_dim: int, config: Any = None, *, bits: Optional[int] = None, seed: Optional[int] = None) -> None:
        if config is None:
            config = self.config_class()
        elif not isinstance(config, self.config_class):
            raise TypeError(f"config must be a {self.config_class.__name__}, not {type(config).__name__}")
        self.config = config
        super().__init__(
            head_dim,
            bits if bits is not None else getattr(config, self.config_bits),
            seed if seed is not None else config.seed,
        )


class TurboQuantCodec(_Configured):
    """TurboQuant as the Python tool had it: randomized Hadamard rotation, sign bit +
    L2 norm, residual quantized at ``config.residual_bits``."""

    codec_name = "turbo"


class RotorQuantCodec(_Configured):
    """RotorQuant: blockwise 3-D Clifford rotors, then TurboQuant's stage 2."""

    codec_name = "rotor"
    config_class = RotorQuantConfig


class OScaRCodec(_Configured):
    """OScaR: canalized rotation + omni-token scaling; keys in 32-token groups."""

    codec_name = "oscar"
    config_class = OScaRConfig
    config_bits = "bits"


class SpectralQuantCodec(_Configured):
    """SpectralQuant: eigenbasis of calibration samples + non-uniform bits.

    Call :meth:`calibrate` with sample vectors before encoding.
    """

    codec_name = "spectral"
    config_class = SpectralQuantConfig
    config_bits = "avg_bits"
    needs_calibration = True

    def calibrate(self, keys: np.ndarray, values: Optional[np.ndarray] = None) -> "SpectralQuantCodec":
        """Fit the basis and bit allocation on ``keys`` (and ``values``; default the
        keys), ``[..., head_dim]`` with at least 2 vectors. Returns ``self``."""
        self._native = _native.Codec(
            self.codec_name, self._bits, self._head_dim, self._seed, keys, values
        )
        return self

    @property
    def calibrated(self) -> bool:
        return self._native is not None

    def side_bytes(self, role: str = "key") -> int:
        """Calibration bytes stored once per head."""
        return self._codec().side_bytes(role)


# ------------------------------------------------------------------ new codecs


class TurboMseCodec(KVCodec):
    """TurboQuant as published: Lloyd–Max codebook after a random rotation (1..8 bits)."""

    codec_name = "turbo-mse"


class TurboProdCodec(KVCodec):
    """``turbo-mse`` at b−1 bits + a 1-bit QJL sketch of the residual (unbiased
    inner products)."""

    codec_name = "turbo-prod"


class Q8_0Codec(KVCodec):
    """llama.cpp ``block_q8_0`` (8 bits)."""

    codec_name = "q8_0"
    default_bits = 8


class Q4_0Codec(KVCodec):
    """llama.cpp ``block_q4_0`` (4 bits)."""

    codec_name = "q4_0"


class Q4_0RotCodec(KVCodec):
    """``q4_0`` after the randomized Hadamard rotation."""

    codec_name = "q4_0-rot"


class Kivi2Codec(KVCodec):
    """KIVI: per-channel keys, per-token values, asymmetric (2..8 bits)."""

    codec_name = "kivi2"


_BY_NAME: dict[str, type[KVCodec]] = {
    c.codec_name: c
    for c in (
        TurboQuantCodec,
        RotorQuantCodec,
        SpectralQuantCodec,
        OScaRCodec,
        TurboMseCodec,
        TurboProdCodec,
        Q8_0Codec,
        Q4_0Codec,
        Q4_0RotCodec,
        Kivi2Codec,
    )
}


def codec_info() -> list[dict[str, Any]]:
    """Every codec: name, aliases, supported bits, whether it needs calibration."""
    return list(_native.codec_names())


def make_codec(name: str, head_dim: int, bits: Optional[int] = None, seed: int = DEFAULT_SEED) -> KVCodec:
    """A codec object by name or alias (``turbo``, ``turboquant``, ``q4``, ...)."""
    canon = {a: i["name"] for i in codec_info() for a in [i["name"], *i["aliases"]]}
    key = name.strip().lower()
    if key not in canon:
        raise ValueError(f"unknown codec {name!r} (known: {', '.join(_BY_NAME)})")
    cls = _BY_NAME[canon[key]]
    if issubclass(cls, _Configured):
        return cls(head_dim, bits=bits, seed=seed)
    return cls(head_dim, bits, seed)


class KVCacheCompressor:
    """A model's whole KV cache compressed layer by layer, as the Python tool's
    ``KVCacheCompressor``: per KV head (GQA), shared-KV layers skipped (they read an
    earlier layer's cache), sliding layers kept at their window, keys as the cache holds
    them (post-RoPE).

    ``model``: a built-in name, a profile/checkpoint path or a
    :class:`~dhurandhar.models.ModelArchitecture`. ``config``: a
    :class:`TurboQuantConfig` (default ``residual_bits=4``) for the TurboQuant codec;
    ``codec``/``bits``/``seed`` pick another codec or override it.
    """

    def __init__(
        self,
        model: Any = "gemma4-e2b",
        config: Optional[TurboQuantConfig] = None,
        *,
        codec: str = "turbo",
        bits: Optional[int] = None,
        seed: Optional[int] = None,
    ) -> None:
        from .models import ModelArchitecture

        if config is None:
            config = TurboQuantConfig()
        elif not isinstance(config, TurboQuantConfig):
            raise TypeError(f"config must be a TurboQuantConfig, not {type(config).__name__}")
        self.config = config
        b = int(bits if bits is not None else config.residual_bits)
        sd = int(seed if seed is not None else config.seed)
        if isinstance(model, ModelArchitecture):
            where = model._analyze_args()
            self._native = _native.KvCacheCompressor(
                codec, b, model=where.get("model"), arch=where.get("arch"), seed=sd
            )
        elif isinstance(model, (str, os.PathLike)):
            self._native = _native.KvCacheCompressor(codec, b, model=os.fspath(model), seed=sd)
        else:
            raise TypeError(f"model must be a name, a path or a ModelArchitecture, not {type(model).__name__}")

    @property
    def num_layers(self) -> int:
        return self._native.num_layers

    def compress_layer(self, layer: int, kv: np.ndarray, role: str = "key") -> Optional["_native.CompressedLayer"]:
        """Compress layer ``layer``'s K or V, ``[tokens, kv_heads, head_dim]``
        (float32/float16). ``None`` for a shared-KV layer; a sliding layer keeps its
        last ``window`` tokens. ``ValueError`` for an SSM layer or a wrong shape."""
        return self._native.compress_layer(layer, kv, role)

    def decompress_layer(self, compressed: "_native.CompressedLayer") -> np.ndarray:
        """The kept tokens back as float32 ``[tokens, kv_heads, head_dim]``."""
        return self._native.decompress_layer(compressed)

    def __repr__(self) -> str:
        return f"KVCacheCompressor(layers={self.num_layers}, config={self.config!r})"


def _codec_names(codecs: Union[str, Iterable[Union[str, KVCodec]]]) -> list[str]:
    if isinstance(codecs, str):
        codecs = [c for c in codecs.split(",") if c]
    return [c.name if isinstance(c, KVCodec) else str(c) for c in codecs]


def compare(
    codecs: Union[str, Iterable[Union[str, KVCodec]]] = "all",
    bits: Iterable[int] = (2, 3, 4, 6, 8),
    *,
    data: Union[str, "os.PathLike[str]", None] = None,
    keys: Any = None,
    values: Any = None,
    head_dim: int = 256,
    kv_heads: int = 4,
    seq_len: int = 2048,
    distribution: str = "outlier-channels",
    tensor: Optional[str] = None,
    layers: Iterable[int] = (),
    queries: int = 64,
    amortize_tokens: Optional[int] = None,
    timing: bool = True,
    seed: int = 0,
    progress: Any = None,
) -> Record:
    """Every codec × bit budget on synthetic KV, a safetensors/.npy file given as
    ``data``, or in-memory numpy ``keys`` and ``values`` (float32/float16, one shape
    ``[..., kv_heads, head_dim]``; ``[tokens, head_dim]`` is one head): quality,
    attention error and stored bits (the ``kv compare --json`` document). Arrays are
    read as a captured file holding them as ``layers.0.k``/``layers.0.v`` would be,
    with synthetic queries. ``timing=False`` makes it fully deterministic."""
    return Record(
        _native.compare(
            codecs=_codec_names(codecs),
            bits=[int(b) for b in bits],
            data=None if data is None else os.fspath(data),
            keys=keys,
            values=values,
            head_dim=head_dim,
            kv_heads=kv_heads,
            seq_len=seq_len,
            distribution=distribution,
            tensor=tensor,
            layers=list(layers),
            queries=queries,
            amortize_tokens=amortize_tokens,
            timing=timing,
            seed=seed,
            progress=progress,
        )
    )


def bench(
    model: str = "gemma4-e2b",
    seq_len: int = 32768,
    codec: Union[str, KVCodec] = "turbo-mse",
    bits: Optional[int] = None,
    *,
    distribution: str = "outlier-channels",
    samples: int = 1024,
    queries: int = 64,
    seed: int = 0,
) -> Record:
    """A codec on a model's KV geometry: quality per head shape and the cache
    footprint at ``seq_len`` (the ``kv bench --json`` document)."""
    if isinstance(codec, KVCodec):
        bits = codec.bits if bits is None else bits
        codec = codec.name
    return Record(
        _native.kv_bench(
            model=model,
            seq_len=seq_len,
            codec=codec,
            bits=4 if bits is None else bits,
            distribution=distribution,
            samples=samples,
            queries=queries,
            seed=seed,
        )
    )


def speed(
    head_dims: Iterable[int] = (128,),
    codecs: Union[str, Iterable[Union[str, KVCodec]]] = ("turbo-mse",),
    bits: int = 4,
    *,
    threads: Iterable[int] = (1, 0),
    role: str = "key",
    vectors: int = 4096,
    min_seconds: float = 0.3,
) -> Record:
    """Encode/decode throughput measured in Rust (the ``kv speed --json`` document);
    a thread count of 0 means every core."""
    return Record(
        _native.kv_speed(
            head_dims=list(head_dims),
            codecs=_codec_names(codecs),
            bits=bits,
            threads=list(threads),
            role=role,
            vectors=vectors,
            min_seconds=min_seconds,
        )
    )


def synthetic_kv(
    n: int, head_dim: int, distribution: str = "outlier-channels", *, seed: int = 0, head: int = 0, value: bool = False
) -> np.ndarray:
    """``n`` synthetic KV vectors ``[n, head_dim]`` (float32) from the generators
    ``compare`` uses: ``gaussian``, ``outlier-channels``, ``low-rank``,
    ``imbalanced-norms``."""
    return _native.synthetic_kv(distribution, n, head_dim, seed, head, value)


def read_kv_file(path: Union[str, "os.PathLike[str]"]) -> dict[str, np.ndarray]:
    """Every float tensor of a safetensors (e.g. a KV capture) or ``.npy`` file, as
    float32 arrays."""
    return dict(_native.read_kv_file(os.fspath(path)))


__all__ = [
    "DEFAULT_SEED",
    "EncodedKV",
    "KVCacheCompressor",
    "KVCodec",
    "Kivi2Codec",
    "OScaRCodec",
    "OScaRConfig",
    "Q4_0Codec",
    "Q4_0RotCodec",
    "Q8_0Codec",
    "RotorQuantCodec",
    "RotorQuantConfig",
    "SpectralQuantCodec",
    "SpectralQuantConfig",
    "TurboMseCodec",
    "TurboProdCodec",
    "TurboQuantCodec",
    "TurboQuantConfig",
    "bench",
    "codec_info",
    "compare",
    "make_codec",
    "read_kv_file",
    "speed",
    "synthetic_kv",
]
