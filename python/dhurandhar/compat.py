"""The Python tool's names, kept.

The old import paths are modules of this package that re-export the supported names:

=========================  ====================================================
old import                 here
=========================  ====================================================
``dhurandhar.models``      :mod:`dhurandhar.models` (same names)
``dhurandhar.config``      ``DEVICE_PROFILES``, ``DeploymentProfile``
``dhurandhar.turboquant``  ``TurboQuantCodec``, ``TurboQuantConfig``,
                           ``KVCacheCompressor``
``dhurandhar.rotorquant``  ``RotorQuantCodec``, ``RotorQuantConfig``
``dhurandhar.spectralquant``  ``SpectralQuantCodec``, ``SpectralQuantConfig``,
                           ``synthesize_spectral_kv_tensor``
``dhurandhar.oscarquant``  ``OScaRCodec``, ``OScaRConfig``
``dhurandhar.ple_analysis``  ``analyze_ple`` (= :func:`dhurandhar.analyze`)
``dhurandhar.mmap_profiler``  ``profile_mmap`` (= :func:`dhurandhar.mmap_profile`)
=========================  ====================================================

``docs/python.md`` maps every public name of the Python tool (same, renamed, or
dropped and why).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .devices import DEVICE_PROFILES, DeploymentProfile
from .kv import (
    DEFAULT_SEED,
    OScaRCodec,
    OScaRConfig,
    RotorQuantCodec,
    RotorQuantConfig,
    SpectralQuantCodec,
    SpectralQuantConfig,
    TurboQuantCodec,
    TurboQuantConfig,
    KVCacheCompressor,
    synthetic_kv,
)
from .models import ModelArchitecture, get_model, list_models
from .plan import analyze as analyze_ple
from .profile import mmap_profile as profile_mmap


def synthesize_spectral_kv_tensor(
    seq_len: int, num_kv_heads: int, head_dim: int, seed: int = 0
) -> tuple[np.ndarray, dict[str, Any]]:
    """Synthetic KV with a decaying eigenspectrum (the ``low-rank`` generator), shape
    ``[num_kv_heads, seq_len, head_dim]`` float32, and a dict describing it."""
    heads = [synthetic_kv(seq_len, head_dim, "low-rank", seed=seed, head=h) for h in range(num_kv_heads)]
    kv = np.stack(heads)
    return kv, {"distribution": "low-rank", "seed": seed, "shape": kv.shape}


__all__ = [
    "DEFAULT_SEED",
    "DEVICE_PROFILES",
    "DeploymentProfile",
    "ModelArchitecture",
    "OScaRCodec",
    "OScaRConfig",
    "RotorQuantCodec",
    "RotorQuantConfig",
    "SpectralQuantCodec",
    "SpectralQuantConfig",
    "TurboQuantCodec",
    "TurboQuantConfig",
    "KVCacheCompressor",
    "analyze_ple",
    "get_model",
    "list_models",
    "profile_mmap",
    "synthesize_spectral_kv_tensor",
]
