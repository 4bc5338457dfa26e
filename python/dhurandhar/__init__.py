"""dhurandhar — put large language models on devices where they have no right to fit.

The Python face of the dhurandhar Rust toolkit (the same core as the ``dhurandhar``
command line; every report here is the document its ``--json`` prints):

* models and devices: :func:`get_model`, :func:`list_models`,
  :func:`load_model_profile`, :func:`model_from_checkpoint`, :func:`get_device`,
  :func:`list_devices`, :data:`DEVICE_PROFILES` / :func:`register_device`;
* planning: :func:`analyze` → :class:`AnalysisResult`;
* KV codecs on numpy arrays: :class:`TurboQuantCodec`, :class:`RotorQuantCodec`,
  :class:`SpectralQuantCodec`, :class:`OScaRCodec`, :class:`TurboMseCodec`, ...;
  :func:`compare_codecs`;
* real models: :func:`inspect`, :class:`Model` (``Model.load(path).generate(...)``);
* weights: :func:`pack`, :func:`unpack`, :func:`verify`, :func:`pack_stats`,
  :class:`TensorReader`;
* measurement: :func:`mmap_profile`.

The Python tool's import paths (``dhurandhar.models``, ``dhurandhar.config``,
``dhurandhar.turboquant``, ``dhurandhar.spectralquant``, ...) keep working; see
:mod:`dhurandhar.compat`.
"""

from __future__ import annotations

from . import _native
from ._records import Record
from .devices import (
    DEVICE_PROFILES,
    DeploymentProfile,
    DeviceProfile,
    get_device,
    list_devices,
    register_device,
    weight_formats,
)
from .kv import (
    DEFAULT_SEED,
    EncodedKV,
    Kivi2Codec,
    KVCodec,
    OScaRCodec,
    OScaRConfig,
    Q4_0Codec,
    Q4_0RotCodec,
    Q8_0Codec,
    RotorQuantCodec,
    RotorQuantConfig,
    SpectralQuantCodec,
    SpectralQuantConfig,
    TurboMseCodec,
    TurboProdCodec,
    TurboQuantCodec,
    TurboQuantConfig,
    KVCacheCompressor,
    codec_info,
    make_codec,
    read_kv_file,
    synthetic_kv,
)
from .kv import bench as kv_bench
from .kv import compare as compare_codecs
from .kv import speed as kv_speed
from .models import (
    ModelArchitecture,
    get_model,
    list_models,
    load_model_profile,
    model_from_checkpoint,
    model_yaml,
)
from .pack import TensorReader, open_pack, pack, pack_stats, unpack, verify
from .plan import AnalysisResult, analyze
from .profile import mmap_profile
from .run import Generation, Model, inspect, lora_dry_run, lora_train

__version__: str = _native.__version__

__all__ = [
    "AnalysisResult",
    "DEFAULT_SEED",
    "DEVICE_PROFILES",
    "DeploymentProfile",
    "DeviceProfile",
    "EncodedKV",
    "Generation",
    "KVCodec",
    "Kivi2Codec",
    "Model",
    "ModelArchitecture",
    "OScaRCodec",
    "OScaRConfig",
    "Q4_0Codec",
    "Q4_0RotCodec",
    "Q8_0Codec",
    "Record",
    "RotorQuantCodec",
    "RotorQuantConfig",
    "SpectralQuantCodec",
    "SpectralQuantConfig",
    "TensorReader",
    "TurboMseCodec",
    "TurboProdCodec",
    "TurboQuantCodec",
    "TurboQuantConfig",
    "KVCacheCompressor",
    "analyze",
    "codec_info",
    "compare_codecs",
    "get_device",
    "get_model",
    "inspect",
    "kv_bench",
    "kv_speed",
    "list_devices",
    "list_models",
    "lora_dry_run",
    "lora_train",
    "load_model_profile",
    "make_codec",
    "mmap_profile",
    "model_from_checkpoint",
    "model_yaml",
    "open_pack",
    "pack",
    "pack_stats",
    "read_kv_file",
    "register_device",
    "synthetic_kv",
    "unpack",
    "verify",
    "weight_formats",
]
