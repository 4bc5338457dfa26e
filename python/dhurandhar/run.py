"""Real models: inspect a checkpoint, load a GGUF model, generate, evaluate, capture KV."""

from __future__ import annotations

import os
import tempfile
from typing import Any, Callable, Iterable, Iterator, Optional, Union

import numpy as np

from . import _native
from ._records import Record

PathLike = Union[str, "os.PathLike[str]"]
#: ``progress(done, total_or_None, label)``; raising from it cancels the job.
ProgressCallback = Callable[[int, Optional[int], str], Any]


def lora_dry_run(
    model: Optional[str] = None,
    config: Optional[PathLike] = None,
    *,
    r: Optional[int] = None,
    max_seq_length: Optional[int] = None,
    batch_size: Optional[int] = None,
    base_format: str = "nf4",
) -> Record:
    """What a LoRA / QLoRA job costs on a model before it runs: trainable parameters per
    target module, adapter bytes and the training memory (the ``lora dry-run --json``
    document). ``config`` is a job file (``dhurandhar lora init``); the keyword arguments
    override its fields; ``model`` overrides its ``base_model``."""
    return Record(
        _native.lora_dry_run(
            model,
            None if config is None else os.fspath(config),
            r,
            max_seq_length,
            batch_size,
            base_format,
        )
    )


def lora_train(
    config: PathLike,
    *,
    threads: int = 0,
    resume: bool = False,
    max_steps: Optional[int] = None,
    output_dir: Optional[PathLike] = None,
    progress: Optional[ProgressCallback] = None,
) -> Record:
    """Train a LoRA job on the CPU over its frozen GGUF base (the ``lora train --json``
    document): loss history, validation losses, tokens/s, peak RSS beside the dry run's
    estimate. The adapter (PEFT layout) and checkpoints go to the job's ``output_dir``
    (or ``output_dir``); ``resume`` continues from the newest checkpoint there."""
    return Record(
        _native.lora_train(
            os.fspath(config),
            threads,
            resume,
            max_steps,
            None if output_dir is None else os.fspath(output_dir),
            progress,
        )
    )


def inspect(path: PathLike) -> Record:
    """What a checkpoint holds: format, tensors, dtypes, exact bytes per component and
    the inferred architecture (the ``inspect --json`` document)."""
    return Record(_native.inspect(os.fspath(path)))


class _TextFile:
    """A text given as a string, or a path, as the file the facade reads."""

    def __init__(self, text: Optional[str], text_file: Optional[PathLike]) -> None:
        if (text is None) == (text_file is None):
            raise ValueError("give exactly one of text and text_file")
        self._dir: Optional[tempfile.TemporaryDirectory[str]] = None
        if text is not None:
            self._dir = tempfile.TemporaryDirectory(prefix="dhurandhar-")
            self.path = os.path.join(self._dir.name, "text.txt")
            with open(self.path, "w", encoding="utf-8") as f:
                f.write(text)
        else:
            self.path = os.fspath(text_file)  # type: ignore[arg-type]

    def __enter__(self) -> "_TextFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._dir is not None:
            self._dir.cleanup()


class Generation:
    """An iterator of generated text pieces; :meth:`report` is the ``generate --json``
    document (final once the iterator is exhausted)."""

    def __init__(self, native: "_native.Generation") -> None:
        self._g = native

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        return next(self._g)

    def text(self) -> str:
        """Run to the end; everything generated."""
        for _ in self:
            pass
        return str(self.report()["text"])

    def report(self) -> Record:
        return Record(self._g.report())


def _budget(size: Union[int, str, None], name: str = "ram_budget") -> Optional[str]:
    """A size as the native layer parses it: bytes, or a size like ``"48MiB"``."""
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, (int, str)):
        raise TypeError(f"{name} must be bytes (int) or a size such as '48MiB', not {size!r}")
    return str(size)


class Model:
    """A GGUF model loaded once; every :meth:`generate` shares it. ``weights`` says how
    its weights are held: ``"mmap"`` (mapped, the kernel pages them), ``"resident"``
    (read into RAM) or ``"stream"`` (read layer by layer into a pool bounded by
    ``ram_budget``: bytes, or a size such as ``"48MiB"``). A streamed mixture-of-experts
    model reads its experts into a cache of ``expert_cache`` bytes (default: what the
    budget leaves), ahead of need unless ``expert_prefetch`` is false, evicting as
    ``expert_eviction`` says (``"next-use"`` or ``"lru"``; see docs/run.md)."""

    def __init__(self, native: "_native.Model") -> None:
        self._m = native

    @classmethod
    def load(
        cls,
        path: PathLike,
        *,
        weights: str = "mmap",
        ram_budget: Union[int, str, None] = None,
        expert_cache: Union[int, str, None] = None,
        expert_prefetch: bool = True,
        expert_eviction: str = "next-use",
    ) -> "Model":
        return cls(
            _native.Model.load(
                os.fspath(path),
                weights,
                _budget(ram_budget),
                _budget(expert_cache, "expert_cache"),
                bool(expert_prefetch),
                expert_eviction,
            )
        )

    @property
    def path(self) -> str:
        return os.fspath(self._m.path)

    @property
    def weights(self) -> str:
        """How the weights are held: ``"mmap"``, ``"resident"`` or ``"stream"``."""
        return str(self._m.weights)

    @property
    def ram_budget(self) -> Optional[int]:
        """The streamed weights' RAM budget in bytes, if one was given."""
        return self._m.ram_budget

    def generate(
        self,
        prompt: str = "",
        max_tokens: int = 64,
        *,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        threads: Optional[int] = None,
        f32_activations: bool = False,
        adapters: Iterable[Union[PathLike, tuple[PathLike, float]]] = (),
        messages: Optional[Iterable[dict[str, str]]] = None,
    ) -> Generation:
        """Generate from ``prompt``: iterate the result for text pieces as they come
        (greedy by default; ``temperature``/``top_p``/``seed`` for sampling).
        ``adapters``: PEFT LoRA directories (or ``(directory, weight)`` pairs) applied on
        top of this model for this generation only; the model itself is unchanged.
        ``messages`` (``[{"role": "user", "content": "…"}, …]``) is a chat rendered with
        the model's own chat template, instead of ``prompt``."""
        chat = None if messages is None else [(m["role"], m["content"]) for m in messages]
        pairs = [
            (os.fspath(a[0]), float(a[1])) if isinstance(a, tuple) else (os.fspath(a), 1.0)
            for a in adapters
        ]
        return Generation(
            self._m.generate(
                prompt, max_tokens, temperature, top_p, seed, threads, f32_activations, pairs, chat
            )
        )

    def bench(
        self,
        prompt_tokens: int = 256,
        decode_tokens: int = 64,
        *,
        threads: Iterable[int] = (1, 2),
        repeats: int = 3,
        progress: Optional[ProgressCallback] = None,
    ) -> Record:
        """Prefill and decode tokens/s for each thread count (fastest of ``repeats``)
        and the peak RSS: the ``generate --bench --json`` document. Ctrl-C stops it
        with ``KeyboardInterrupt``."""
        return Record(
            _native.generate_bench(
                self.path,
                prompt_tokens,
                decode_tokens,
                [int(t) for t in threads],
                repeats,
                progress,
                weights=self.weights,
                ram_budget=_budget(self.ram_budget),
            )
        )

    def eval(
        self,
        text: Optional[str] = None,
        *,
        text_file: Optional[PathLike] = None,
        codecs: Iterable[str] = (),
        bits: int = 4,
        max_tokens: int = 512,
        chunk: int = 128,
        calibration_tokens: int = 64,
        threads: Optional[int] = None,
        q8_activations: bool = False,
        progress: Optional[ProgressCallback] = None,
    ) -> Record:
        """Perplexity of a text with the exact KV cache and with each codec (the
        ``eval --json`` document)."""
        with _TextFile(text, text_file) as t:
            return Record(
                _native.eval(
                    self.path,
                    t.path,
                    codecs=[str(c) for c in codecs],
                    bits=bits,
                    max_tokens=max_tokens,
                    chunk=chunk,
                    calibration_tokens=calibration_tokens,
                    threads=threads,
                    q8_activations=q8_activations,
                    progress=progress,
                    weights=self.weights,
                    ram_budget=_budget(self.ram_budget),
                )
            )

    def capture_kv(
        self,
        text: Optional[str] = None,
        *,
        text_file: Optional[PathLike] = None,
        out: Optional[PathLike] = None,
        max_tokens: int = 256,
        threads: Optional[int] = None,
        progress: Optional[ProgressCallback] = None,
    ) -> tuple[dict[str, np.ndarray], Record]:
        """Run the model over a text and return every layer's queries, keys (before and
        after RoPE) and values as float32 arrays (``layers.{i}.{q,k,k_pre,v}``), with
        the ``kv capture --json`` report. ``out`` also keeps the safetensors file."""
        with _TextFile(text, text_file) as t, tempfile.TemporaryDirectory(prefix="dhurandhar-") as tmp:
            path = os.fspath(out) if out is not None else os.path.join(tmp, "kv.safetensors")
            rep = _native.capture_kv(self.path, t.path, path, max_tokens=max_tokens, threads=threads, progress=progress)
            tensors = dict(_native.read_kv_file(path))
        return tensors, Record(rep)


def load(path: PathLike) -> Model:
    """``Model.load(path)``."""
    return Model.load(path)


__all__ = ["Generation", "Model", "ProgressCallback", "inspect", "load"]
