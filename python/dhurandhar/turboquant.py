"""The Python tool's `dhurandhar.turboquant` import path (see :mod:`dhurandhar.compat`)."""

from .compat import TurboQuantCodec, TurboQuantConfig

__all__ = ["TurboQuantCodec", "TurboQuantConfig"]
