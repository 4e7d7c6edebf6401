"""Human durations as users type them: ``90s``, ``30m``, ``1h``, ``1h30m``, ``7d``."""

from __future__ import annotations

import re
from datetime import timedelta

from inventory.errors import InvalidArgument, quoted

_PART = re.compile(r"(\d+)(ms|s|m|h|d)")
_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_MAX_TEXT = 32  # "1h30m" is typical; anything this long is not a duration a person meant

#: The longest duration anything accepts unless it says otherwise: a hundred years is far
#: beyond every setting, and far inside what ``timedelta`` and a ``datetime`` minus it hold,
#: so no value a user types can overflow later.
MAX_DURATION = timedelta(days=36500)


def parse_duration(
    text: str,
    *,
    what: str = "duration",
    allow_zero: bool = False,
    at_least: timedelta | None = None,
    at_most: timedelta = MAX_DURATION,
) -> timedelta:
    """Parse ``text`` into a timedelta within bounds, or raise InvalidArgument naming
    ``what``: longer than zero (or zero, with ``allow_zero``), at least ``at_least`` when
    given, at most ``at_most``. The bounds are part of parsing: a caller never holds a
    duration it would have to check again."""
    compact = text.strip().replace(" ", "")
    if compact.isdigit():
        compact += "s"
    parts = _PART.findall(compact) if len(compact) <= _MAX_TEXT else []
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise InvalidArgument(
            f"invalid {what} {quoted(text)}: use a number with a unit, like 90s, 30m, 1h or 1h30m"
        )
    # Whole milliseconds in an int: no float rounding, and no overflow before the bound.
    millis = sum(int(n) * _UNITS_MS[u] for n, u in parts)
    lowest = at_least if at_least is not None else timedelta(0)
    if (millis == 0 and not allow_zero) or millis < _millis(lowest) or millis > _millis(at_most):
        raise InvalidArgument(
            f"invalid {what} {quoted(text)}: {_bounds(allow_zero, at_least, at_most)}"
        )
    return timedelta(milliseconds=millis)


def _millis(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _bounds(allow_zero: bool, at_least: timedelta | None, at_most: timedelta) -> str:
    if at_least is not None and at_least > timedelta(0):
        low = f"at least {format_duration(at_least)}"
    else:
        low = "zero or more" if allow_zero else "longer than zero"
    return f"must be {low} and at most {format_duration(at_most)}"


def format_duration(delta: timedelta) -> str:
    """The inverse of parse_duration for whole seconds: 5400 s -> ``1h30m``."""
    seconds = int(delta.total_seconds())
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            out.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(out) or "0s"
