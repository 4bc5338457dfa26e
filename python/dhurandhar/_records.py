"""Report documents as Python objects.

Every report comes from the Rust facade through serde, so it is exactly the JSON
document the CLI prints with ``--json``. :class:`Record` is that dict with attribute
access (``r.totals.peak_bytes``) on top; ``dict(record)`` and ``json.dumps(record)``
still see a plain dict.
"""

from __future__ import annotations

import copy
from typing import Any


class Record(dict):  # type: ignore[type-arg]
    """A report node: a ``dict`` whose keys also read as attributes."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return _wrap(self[name])
        except KeyError:
            raise AttributeError(
                f"{type(self).__name__} has no field {name!r} (fields: {', '.join(self)})"
            ) from None

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self))

    def to_dict(self) -> dict[str, Any]:
        """A deep copy as plain dicts and lists (what ``json.dumps`` writes)."""
        return copy.deepcopy(_plain(self))


def _wrap(v: Any) -> Any:
    if isinstance(v, dict) and not isinstance(v, Record):
        return Record(v)
    if isinstance(v, list):
        return [_wrap(x) for x in v]
    return v


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def record(v: Any) -> Any:
    """Wrap a native report (dicts become :class:`Record`, lists stay lists)."""
    return _wrap(v)
