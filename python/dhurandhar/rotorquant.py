"""The Python tool's `dhurandhar.rotorquant` import path (see :mod:`dhurandhar.compat`)."""

from .compat import RotorQuantCodec, RotorQuantConfig

__all__ = ["RotorQuantCodec", "RotorQuantConfig"]
