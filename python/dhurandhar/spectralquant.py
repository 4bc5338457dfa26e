"""The Python tool's `dhurandhar.spectralquant` import path (see :mod:`dhurandhar.compat`)."""

from .compat import SpectralQuantCodec, SpectralQuantConfig, synthesize_spectral_kv_tensor

__all__ = ["SpectralQuantCodec", "SpectralQuantConfig", "synthesize_spectral_kv_tensor"]
