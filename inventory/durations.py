"""Human durations as users type them: ``90s``, ``30m``, ``1h``, ``1h30m``, ``7d``."""

from __future__ import annotations

import re
from datetime import timedelta

from inventory.errors import InvalidArgument

_PART = re.compile(r"(\d+)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, *, what: str = "duration", allow_zero: bool = False) -> timedelta:
    """Parse ``text`` into a positive timedelta (or zero, with ``allow_zero``), or raise
    InvalidArgument naming ``what``."""
    compact = text.strip().replace(" ", "")
    if compact.isdigit():
        compact += "s"
    parts = _PART.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise InvalidArgument(
            f"invalid {what} {text!r}: use a number with a unit, like 90s, 30m, 1h or 1h30m"
        )
    seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise InvalidArgument(f"invalid {what} {text!r}: must be longer than zero")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """The inverse of parse_duration for whole seconds: 5400 s -> ``1h30m``."""
    seconds = int(delta.total_seconds())
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            out.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(out) or "0s"
