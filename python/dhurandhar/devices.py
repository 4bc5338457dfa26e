"""Device profiles: the built-in ones, YAML profiles, and your own.

``DEVICE_PROFILES`` maps a slug to a :class:`DeviceProfile`; assigning a new entry
registers a custom device that :func:`get_device`, :func:`list_devices` and
:func:`dhurandhar.analyze` then know by that slug (the Python tool's way of adding a
device). Profiles are checked by the Rust core (positive RAM and bandwidth).
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from typing import Any, Dict, Iterable, Mapping, Optional, Union

from . import _native


@dataclass(frozen=True)
class DeviceProfile:
    """A target device: RAM budget (MiB) and sequential flash bandwidth (GB/s)."""

    name: str
    ram_budget_mb: float
    flash_read_gbps: float
    supports_npu: bool = False
    notes: str = ""
    slug: str = ""
    # What the speed bounds read (None: not known for this device).
    flash_random_read_iops: Optional[float] = None
    memory_bandwidth_gbps: Optional[float] = None
    compute_f32_gflops: Optional[float] = None
    compute_int8_gops: Optional[float] = None
    cpu_cores: Optional[int] = None
    source: str = ""
    measured_at: Optional[str] = None

    def __post_init__(self) -> None:
        checked = _native.device_from_fields(self.to_dict())
        for k in ("ram_budget_mb", "flash_read_gbps"):
            object.__setattr__(self, k, float(checked[k]))

    def to_dict(self) -> dict[str, Any]:
        """The device's fields as the ``devices --json`` document has them (unknown
        optional figures left out)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def _from_native(cls, d: Mapping[str, Any]) -> "DeviceProfile":
        return cls(
            name=d["name"],
            ram_budget_mb=d["ram_budget_mb"],
            flash_read_gbps=d["flash_read_gbps"],
            supports_npu=d.get("supports_npu", False),
            notes=d.get("notes", ""),
            slug=d.get("slug", ""),
            **{k: d.get(k) for k in _OPTIONAL},
            source=d.get("source", ""),
        )


_OPTIONAL = (
    "flash_random_read_iops",
    "memory_bandwidth_gbps",
    "compute_f32_gflops",
    "compute_int8_gops",
    "cpu_cores",
    "measured_at",
)

#: The Python tool's name for :class:`DeviceProfile`.
DeploymentProfile = DeviceProfile


def _slugify(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "device"


class _Registry(Dict[str, DeviceProfile]):
    """slug → DeviceProfile; the built-ins are loaded first, assignments add devices."""

    def __init__(self) -> None:
        super().__init__()
        self._builtin: dict[str, DeviceProfile] = {}
        for d in _native.list_devices()["devices"]:
            p = DeviceProfile._from_native(d)
            self._builtin[p.slug] = p
            super().__setitem__(p.slug, p)

    def __setitem__(self, slug: str, profile: DeviceProfile) -> None:
        if not isinstance(profile, DeviceProfile):
            raise TypeError(f"DEVICE_PROFILES[{slug!r}] must be a DeviceProfile, not {type(profile).__name__}")
        if profile.slug != slug:
            profile = DeviceProfile(**{**profile.to_dict(), "slug": slug})
        super().__setitem__(slug, profile)

    def is_builtin(self, slug: str) -> bool:
        return slug in self._builtin and self.get(slug) == self._builtin[slug]


DEVICE_PROFILES: _Registry = _Registry()

DeviceLike = Union[str, DeviceProfile]


def register_device(profile: DeviceProfile, slug: str = "") -> DeviceProfile:
    """Add a custom device; its slug is ``slug``, else its own, else made from its name."""
    slug = slug or profile.slug or _slugify(profile.name)
    DEVICE_PROFILES[slug] = profile
    return DEVICE_PROFILES[slug]


def get_device(name: Union[str, "os.PathLike[str]"]) -> DeviceProfile:
    """A device by slug (built-in or registered) or from a YAML device profile."""
    spec = os.fspath(name)
    if spec in DEVICE_PROFILES:
        return DEVICE_PROFILES[spec]
    return DeviceProfile._from_native(_native.resolve_device(spec))


def list_devices() -> list[str]:
    """Slugs of the built-in and registered devices."""
    return list(DEVICE_PROFILES)


def weight_formats() -> list[dict[str, Any]]:
    """The named weight formats ``analyze(weight_format=...)`` takes, with their bits
    per weight (at a 2048-weight row) and grouping."""
    return list(_native.list_devices()["weight_formats"])


def _split(devices: Iterable[DeviceLike]) -> tuple[list[str], list[dict[str, Any]]]:
    """Names the core resolves itself, and custom profiles passed as values."""
    names: list[str] = []
    custom: list[dict[str, Any]] = []
    for d in devices:
        if isinstance(d, DeviceProfile):
            custom.append({**d.to_dict(), "slug": d.slug or _slugify(d.name)})
        elif isinstance(d, (str, os.PathLike)):
            s = os.fspath(d)
            if s in DEVICE_PROFILES and not DEVICE_PROFILES.is_builtin(s):
                custom.append(DEVICE_PROFILES[s].to_dict())
            else:
                names.append(s)
        else:
            raise TypeError(f"a device is a slug, a YAML path or a DeviceProfile, not {type(d).__name__}")
    return names, custom


__all__ = [
    "DEVICE_PROFILES",
    "DeploymentProfile",
    "DeviceProfile",
    "get_device",
    "list_devices",
    "register_device",
    "weight_formats",
]
