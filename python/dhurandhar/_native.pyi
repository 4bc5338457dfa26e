"""Type stubs of the extension module (crates/dhurandhar-py). Reports are the CLI's
``--json`` documents as plain dicts; the typed surface is the package around it."""

from os import PathLike
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

__version__: str

_Path = Union[str, PathLike[str]]
_Progress = Optional[Callable[[int, Optional[int], str], Any]]
_Array = npt.NDArray[Union[np.float32, np.float16]]

class EncodedKV:
    @property
    def data(self) -> bytes: ...
    def __bytes__(self) -> bytes: ...
    def __len__(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def role(self) -> str: ...
    @property
    def codec(self) -> str: ...
    @property
    def bits(self) -> int: ...
    @property
    def head_dim(self) -> int: ...
    @property
    def bits_per_value(self) -> float: ...

class Codec:
    def __init__(
        self,
        codec: str,
        bits: int,
        head_dim: int,
        seed: int = ...,
        calibration_keys: Optional[_Array] = None,
        calibration_values: Optional[_Array] = None,
    ) -> None: ...
    @property
    def name(self) -> str: ...
    @property
    def bits(self) -> int: ...
    @property
    def head_dim(self) -> int: ...
    @property
    def seed(self) -> int: ...
    def token_group(self, role: str = "key") -> int: ...
    def side_bytes(self, role: str = "key") -> int: ...
    def encoded_len(self, tokens: int, role: str = "key") -> int: ...
    def encode(self, kv: _Array, role: str = "key") -> EncodedKV: ...
    def decode(self, encoded: EncodedKV) -> npt.NDArray[np.float32]: ...
    def decode_bytes(self, data: bytes, shape: Sequence[int], role: str = "key") -> npt.NDArray[np.float32]: ...
    def reconstruction(self, kv: _Array, role: str = "key") -> dict[str, Any]: ...

class CompressedLayer:
    @property
    def layer(self) -> int: ...
    @property
    def role(self) -> str: ...
    @property
    def tokens(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    @property
    def nbytes(self) -> int: ...

class KvCacheCompressor:
    def __init__(
        self,
        codec: str,
        bits: int,
        model: Optional[str] = None,
        arch: Optional[dict[str, Any]] = None,
        seed: int = ...,
    ) -> None: ...
    @property
    def num_layers(self) -> int: ...
    def compress_layer(self, layer: int, kv: _Array, role: str = "key") -> Optional[CompressedLayer]: ...
    def decompress_layer(self, compressed: CompressedLayer) -> npt.NDArray[np.float32]: ...

def codec_names() -> list[dict[str, Any]]: ...
def synthetic_kv(
    distribution: str, n: int, head_dim: int, seed: int = 0, head: int = 0, value: bool = False
) -> npt.NDArray[np.float32]: ...
def reads_in_place(kv: _Array) -> bool: ...
def list_models() -> dict[str, Any]: ...
def model_yaml(name: str) -> str: ...
def resolve_model(spec: str) -> dict[str, Any]: ...
def model_from_fields(fields: dict[str, Any]) -> dict[str, Any]: ...
def list_devices(extra: Sequence[str] = ...) -> dict[str, Any]: ...
def resolve_device(spec: str) -> dict[str, Any]: ...
def device_from_fields(fields: dict[str, Any]) -> dict[str, Any]: ...
def analyze(
    model: Optional[str] = None,
    arch: Optional[dict[str, Any]] = None,
    context_tokens: int = 32768,
    weight_format: Optional[str] = None,
    quant_bits: Optional[float] = None,
    kv_codec: Optional[str] = None,
    kv_bits: Optional[float] = None,
    strip_audio: bool = True,
    strip_vision: bool = False,
    devices: Sequence[str] = ...,
    custom_devices: Sequence[dict[str, Any]] = ...,
    ram_mb: Optional[float] = None,
    flash_gbps: Optional[float] = None,
    target_decode_tps: float = 15.0,
    ple_hot_tokens: Optional[int] = None,
    ple_layout: str = "row",
    page_kib: int = 4,
    prefill_chunk: int = 512,
    runtime_overhead_mb: Optional[float] = None,
    min_context_tokens: int = 1024,
) -> dict[str, Any]: ...
def compare(
    codecs: Sequence[str] = ...,
    bits: Sequence[int] = ...,
    data: Optional[_Path] = None,
    keys: Optional[Any] = None,
    values: Optional[Any] = None,
    head_dim: int = 256,
    kv_heads: int = 4,
    seq_len: int = 2048,
    distribution: str = "outlier-channels",
    tensor: Optional[str] = None,
    layers: Sequence[int] = ...,
    queries: int = 64,
    amortize_tokens: Optional[int] = None,
    timing: bool = True,
    seed: int = 0,
    progress: _Progress = None,
) -> dict[str, Any]: ...
def kv_bench(
    model: str = ...,
    seq_len: int = ...,
    codec: str = ...,
    bits: int = 4,
    distribution: str = ...,
    samples: int = 512,
    queries: int = 32,
    seed: int = 0,
) -> dict[str, Any]: ...
def kv_speed(
    head_dims: Sequence[int] = ...,
    codecs: Sequence[str] = ...,
    bits: int = 4,
    threads: Sequence[int] = ...,
    role: str = "key",
    vectors: int = 4096,
    min_seconds: float = 0.2,
) -> dict[str, Any]: ...
def inspect(path: _Path) -> dict[str, Any]: ...
def lora_dry_run(
    model: Optional[str] = None,
    config: Optional[_Path] = None,
    r: Optional[int] = None,
    max_seq_length: Optional[int] = None,
    batch_size: Optional[int] = None,
    base_format: str = "nf4",
) -> dict[str, Any]: ...

def lora_train(
    config: _Path,
    threads: int = 0,
    resume: bool = False,
    max_steps: Optional[int] = None,
    output_dir: Optional[_Path] = None,
    progress: _Progress = None,
) -> dict[str, Any]: ...

class Generation:
    def __iter__(self) -> Iterator[str]: ...
    def __next__(self) -> str: ...
    def report(self) -> dict[str, Any]: ...

class Model:
    @staticmethod
    def load(
        path: _Path,
        weights: str = "mmap",
        ram_budget: Optional[str] = None,
        expert_cache: Optional[str] = None,
        expert_prefetch: bool = True,
        expert_eviction: str = "next-use",
    ) -> "Model": ...
    @property
    def path(self) -> str: ...
    @property
    def weights(self) -> str: ...
    @property
    def ram_budget(self) -> Optional[int]: ...
    def generate(
        self,
        prompt: str,
        max_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        threads: Optional[int] = None,
        f32_activations: bool = False,
        adapters: Sequence[tuple[_Path, float]] = ...,
        messages: Optional[Sequence[tuple[str, str]]] = None,
    ) -> Generation: ...

def generate_bench(
    model: _Path,
    prompt_tokens: int = 256,
    decode_tokens: int = 64,
    threads: Sequence[int] = ...,
    repeats: int = 3,
    progress: _Progress = None,
    weights: str = "mmap",
    ram_budget: Optional[str] = None,
) -> dict[str, Any]: ...
def eval(
    model: _Path,
    text_file: _Path,
    codecs: Sequence[str] = ...,
    bits: int = 4,
    max_tokens: int = 512,
    chunk: int = 128,
    calibration_tokens: int = 64,
    seed: int = ...,
    threads: Optional[int] = None,
    q8_activations: bool = False,
    progress: _Progress = None,
    weights: str = "mmap",
    ram_budget: Optional[str] = None,
) -> dict[str, Any]: ...
def capture_kv(
    model: _Path,
    text_file: _Path,
    out: _Path,
    max_tokens: int = 256,
    threads: Optional[int] = None,
    progress: _Progress = None,
) -> dict[str, Any]: ...
def read_kv_file(path: _Path) -> dict[str, npt.NDArray[np.float32]]: ...
def pack(
    input: _Path,
    output: _Path,
    mode: str = "lossless",
    bits: Optional[int] = None,
    group: Optional[int] = None,
    residual_frac: Optional[float] = None,
    chunk_kib: int = 1024,
    min_plane_saving: Optional[float] = None,
    progress: _Progress = None,
) -> dict[str, Any]: ...
def unpack(input: _Path, output: _Path, progress: _Progress = None) -> dict[str, Any]: ...
def verify(input: _Path, quick: bool = False, progress: _Progress = None) -> dict[str, Any]: ...
def pack_stats(input: _Path) -> dict[str, Any]: ...

class TensorReader:
    def __init__(self, path: _Path) -> None: ...
    def list(self) -> list[tuple[str, str, list[int], int]]: ...
    def read_bytes(self, name: str) -> npt.NDArray[np.uint8]: ...

def mmap_profile(
    model: str = ...,
    scale: float = 0.1,
    cache_dir: Optional[_Path] = None,
    file: Optional[_Path] = None,
    tensor: Optional[str] = None,
    offset: Optional[int] = None,
    length: Optional[int] = None,
    row_bytes: Optional[int] = None,
    bits: int = 4,
    num_tokens: int = 1000,
    warmup_tokens: int = 50,
    target_tps: float = 15.0,
    patterns: Sequence[str] = ...,
    modes: Sequence[str] = ...,
    measure_memory: bool = False,
    seed: int = 0,
    progress: _Progress = None,
) -> dict[str, Any]: ...
