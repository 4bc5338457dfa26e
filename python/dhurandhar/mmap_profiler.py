"""The Python tool's `dhurandhar.mmap_profiler` import path (see :mod:`dhurandhar.compat`)."""

from .compat import profile_mmap

__all__ = ["profile_mmap"]
