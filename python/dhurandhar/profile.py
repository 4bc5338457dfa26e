"""mmap profiling: decode throughput and RSS of a memory-mapped embedding table."""

from __future__ import annotations

import os
from typing import Iterable, Optional, Union

from . import _native
from ._records import Record
from .run import ProgressCallback

PathLike = Union[str, "os.PathLike[str]"]


def mmap_profile(
    model: str = "gemma4-e2b",
    *,
    scale: float = 0.1,
    cache_dir: Optional[PathLike] = None,
    file: Optional[PathLike] = None,
    tensor: Optional[str] = None,
    offset: Optional[int] = None,
    length: Optional[int] = None,
    row_bytes: Optional[int] = None,
    bits: int = 4,
    num_tokens: int = 1000,
    warmup_tokens: int = 50,
    target_tps: float = 15.0,
    patterns: Iterable[str] = (),
    modes: Iterable[str] = (),
    measure_memory: bool = False,
    seed: int = 0,
    progress: Optional[ProgressCallback] = None,
) -> Record:
    """Profile a synthetic PLE-shaped table of ``model`` at ``scale`` (or a tensor /
    byte range of a real ``file``): tokens/s, MB/s, p50/p99 per access pattern, cold
    and warm, and a verdict against ``target_tps`` (the ``mmap-profile --json``
    document). ``progress(done, total, label)`` is called as it runs; Ctrl-C stops it
    cleanly with ``KeyboardInterrupt``."""
    return Record(
        _native.mmap_profile(
            model=model,
            scale=scale,
            cache_dir=None if cache_dir is None else os.fspath(cache_dir),
            file=None if file is None else os.fspath(file),
            tensor=tensor,
            offset=offset,
            length=length,
            row_bytes=row_bytes,
            bits=bits,
            num_tokens=num_tokens,
            warmup_tokens=warmup_tokens,
            target_tps=target_tps,
            patterns=list(patterns),
            modes=list(modes),
            measure_memory=measure_memory,
            seed=seed,
            progress=progress,
        )
    )


__all__ = ["mmap_profile"]
