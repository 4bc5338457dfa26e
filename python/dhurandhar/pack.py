"""Weights: pack checkpoints into ``.dhp`` files, unpack, verify, and read tensors
from a pack as numpy arrays without unpacking it."""

from __future__ import annotations

import os
from typing import Iterator, Optional, Union

import numpy as np

from . import _native
from ._records import Record
from .run import ProgressCallback

PathLike = Union[str, "os.PathLike[str]"]


def pack(
    input: PathLike,
    output: PathLike,
    *,
    mode: str = "lossless",
    bits: Optional[int] = None,
    group: Optional[int] = None,
    residual_frac: Optional[float] = None,
    chunk_kib: int = 1024,
    min_plane_saving: Optional[float] = None,
    progress: Optional[ProgressCallback] = None,
) -> Record:
    """Pack a checkpoint (safetensors, sharded index, model dir, GGUF) into a ``.dhp``
    (``lossless`` or ``quant-residual``; a GGUF packed lossless is held whole and
    unpacks to the same file); the ``pack --json`` document. ``min_plane_saving``: the
    least share of a byte plane entropy coding must save to be used (default 0.02, 0.10
    for a GGUF's quant blocks)."""
    return Record(
        _native.pack(
            os.fspath(input),
            os.fspath(output),
            mode,
            bits,
            group,
            residual_frac,
            chunk_kib,
            min_plane_saving,
            progress,
        )
    )


def unpack(input: PathLike, output: PathLike, *, progress: Optional[ProgressCallback] = None) -> Record:
    """A ``.dhp`` back to the file it holds (``.gguf`` or ``.safetensors``); the
    ``unpack --json`` document."""
    return Record(_native.unpack(os.fspath(input), os.fspath(output), progress))


def verify(input: PathLike, *, quick: bool = False, progress: Optional[ProgressCallback] = None) -> Record:
    """Check a ``.dhp``'s checksums (and, unless ``quick``, decode and hash every
    lossless tensor); the ``verify --json`` document."""
    return Record(_native.verify(os.fspath(input), quick, progress))


def pack_stats(input: PathLike) -> Record:
    """What a ``.dhp`` holds and how well each tensor compressed."""
    return Record(_native.pack_stats(os.fspath(input)))


_NUMPY = {
    "F32": np.float32,
    "F16": np.float16,
    "F64": np.float64,
    "I8": np.int8,
    "U8": np.uint8,
    "I16": np.int16,
    "U16": np.uint16,
    "I32": np.int32,
    "U32": np.uint32,
    "I64": np.int64,
    "U64": np.uint64,
    "BOOL": np.bool_,
}


class TensorReader:
    """Named tensors of a ``.dhp`` pack (or any checkpoint), decoded one at a time.

    ``reader[name]`` is a numpy array of the tensor's shape: its own dtype for
    F32/F16/F64 and integers, float32 for BF16 (numpy has no bfloat16), raw uint8
    bytes for block-quantized GGUF types. Iterating yields ``(name, array)``.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = os.fspath(path)
        self._r = _native.TensorReader(self.path)
        self._meta = {n: (dt, tuple(int(s) for s in shape), nb) for n, dt, shape, nb in self._r.list()}

    def names(self) -> list[str]:
        return list(self._meta)

    def dtype(self, name: str) -> str:
        return self._meta[name][0]

    def shape(self, name: str) -> tuple[int, ...]:
        return self._meta[name][1]

    def __len__(self) -> int:
        return len(self._meta)

    def __contains__(self, name: object) -> bool:
        return name in self._meta

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._meta:
            raise KeyError(name)
        dt, shape, _ = self._meta[name]
        raw = self._r.read_bytes(name)
        if dt == "BF16":
            return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(shape)
        if dt in _NUMPY:
            return raw.view(_NUMPY[dt]).reshape(shape)
        return raw

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        for n in self._meta:
            yield n, self[n]

    def __repr__(self) -> str:
        return f"TensorReader({self.path!r}, {len(self)} tensors)"


def open_pack(path: PathLike) -> TensorReader:
    """A :class:`TensorReader` over a ``.dhp`` (or a checkpoint)."""
    return TensorReader(path)


__all__ = ["TensorReader", "open_pack", "pack", "pack_stats", "unpack", "verify"]
