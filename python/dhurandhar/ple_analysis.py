"""The Python tool's `dhurandhar.ple_analysis` import path (see :mod:`dhurandhar.compat`)."""

from .compat import analyze_ple

__all__ = ["analyze_ple"]
