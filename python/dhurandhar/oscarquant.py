"""The Python tool's `dhurandhar.oscarquant` import path (see :mod:`dhurandhar.compat`)."""

from .compat import OScaRCodec, OScaRConfig

__all__ = ["OScaRCodec", "OScaRConfig"]
