"""Plan a model on devices: the peak-memory breakdown and a verdict per device."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Optional, Union

from . import _native
from ._records import Record
from .devices import DeviceLike, _split
from .models import ModelArchitecture

if TYPE_CHECKING:  # pragma: no cover
    import pandas

    from .kv import KVCodec


class AnalysisResult(Record):
    """The ``analyze --json`` document, with attribute access.

    ``components`` (memory per component), ``totals``, ``devices`` (one assessment
    per device: mode, headroom, decode ceiling, mitigations), ``summary``, ``model``,
    ``kv``, ``warnings``... ``to_dict()`` gives the plain document and
    ``to_pandas()`` a table (needs pandas).
    """

    __slots__ = ()

    def to_pandas(self, table: str = "components") -> "pandas.DataFrame":
        """``components`` or ``devices`` as a DataFrame (requires pandas)."""
        try:
            import pandas as pd
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("to_pandas() needs pandas: pip install pandas") from e
        if table not in ("components", "devices"):
            raise ValueError(f"table must be 'components' or 'devices', not {table!r}")
        return pd.DataFrame(self.to_dict()[table])


def analyze(
    model: Union[str, ModelArchitecture] = "gemma4-e2b",
    context_tokens: int = 32768,
    weight_format: Optional[str] = None,
    kv_codec: Union[str, "KVCodec", None] = None,
    devices: Optional[Iterable[DeviceLike]] = None,
    *,
    kv_bits: Optional[float] = None,
    quant_bits: Optional[float] = None,
    strip_audio: bool = True,
    strip_vision: bool = False,
    ram_mb: Optional[float] = None,
    flash_gbps: Optional[float] = None,
    target_decode_tps: float = 15.0,
    ple_hot_tokens: Optional[int] = None,
    ple_layout: str = "row",
    page_kib: int = 4,
    prefill_chunk: int = 512,
    runtime_overhead_mb: Optional[float] = None,
    min_context_tokens: int = 1024,
) -> AnalysisResult:
    """Plan ``model`` at ``context_tokens`` on ``devices`` (default: every built-in).

    ``model``: a built-in name, a YAML profile or checkpoint path, or a
    :class:`ModelArchitecture`. ``weight_format``: ``int4`` (default), ``q4_k``,
    ``bf16``, ... (``quant_bits`` instead: plain bits per weight). ``kv_codec``: a
    codec name or a codec object (its bits are used), default ``turbo-mse`` at 4
    bits; ``kv_bits`` alone charges a flat what-if width. ``devices``: slugs, YAML
    paths, or :class:`DeviceProfile` objects (custom ones are assessed after the
    named ones). ``min_context_tokens``: the shortest context a suggested mitigation
    may propose (a "shorten the context" fix below it is of little use). The same
    arguments give the same document as ``dhurandhar analyze --json``.
    """
    args: dict[str, Any] = {}
    if isinstance(model, ModelArchitecture):
        args.update(model._analyze_args())
    elif isinstance(model, str):
        args["model"] = model
    else:
        import os

        if isinstance(model, os.PathLike):
            args["model"] = os.fspath(model)
        else:
            raise TypeError(f"model must be a name, a path or a ModelArchitecture, not {type(model).__name__}")
    if kv_codec is not None and not isinstance(kv_codec, str):
        from .kv import KVCodec

        if not isinstance(kv_codec, KVCodec):
            raise TypeError(f"kv_codec must be a codec name or a KVCodec, not {type(kv_codec).__name__}")
        if kv_bits is None:
            kv_bits = kv_codec.bits
        kv_codec = kv_codec.name
    if isinstance(devices, (str, bytes)):
        devices = [devices]
    names, custom = _split(devices or [])
    doc = _native.analyze(
        context_tokens=context_tokens,
        weight_format=weight_format,
        quant_bits=quant_bits,
        kv_codec=kv_codec,
        kv_bits=kv_bits,
        strip_audio=strip_audio,
        strip_vision=strip_vision,
        devices=names,
        custom_devices=custom,
        ram_mb=ram_mb,
        flash_gbps=flash_gbps,
        target_decode_tps=target_decode_tps,
        ple_hot_tokens=ple_hot_tokens,
        ple_layout=ple_layout,
        page_kib=page_kib,
        prefill_chunk=prefill_chunk,
        runtime_overhead_mb=runtime_overhead_mb,
        min_context_tokens=min_context_tokens,
        **args,
    )
    return AnalysisResult(doc)


__all__ = ["AnalysisResult", "analyze"]
