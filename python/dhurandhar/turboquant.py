"""The Python tool's `dhurandhar.turboquant` import path (see :mod:`dhurandhar.compat`)."""

from .compat import KVCacheCompressor, TurboQuantCodec, TurboQuantConfig

__all__ = ["KVCacheCompressor", "TurboQuantCodec", "TurboQuantConfig"]
