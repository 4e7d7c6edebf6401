"""Deterministic randomness per record: the same (seed, id) always yields the same words.

Seeding a Mersenne Twister costs about 6 us, more than the rest of a record's core; a
BLAKE2b digest unpacked into sixteen 32-bit words costs under 1 us and is just as
reproducible, so every record draws from digests keyed by (seed, id, purpose).
"""

from __future__ import annotations

import hashlib
import struct
from bisect import bisect_right
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TypeVar

T = TypeVar("T")

_UNPACK = struct.Struct("<16I").unpack
_BASE36 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_BASE36_PAIRS = tuple(a + b for a in _BASE36 for b in _BASE36)
_TWO_DIGITS = tuple(f"{n:02d}" for n in range(100))
_THREE_DIGITS = tuple(f"{n:03d}" for n in range(1000))
_DAY_MS = 86_400_000
_days: dict[int, str] = {}
_SUFFIX_SPACE = 36**9
#: Odd and not a multiple of 3, so i -> i * _STRIDE mod 36**9 is a bijection.
_STRIDE = 2_654_435_761
U32 = 1 << 32


def words(seed: int, ident: int, purpose: bytes) -> tuple[int, ...]:
    """Sixteen 32-bit words that depend only on (seed, ident, purpose)."""
    digest = hashlib.blake2b(b"%d:%d:%s" % (seed, ident, purpose), digest_size=64).digest()
    return _UNPACK(digest)


def scaled(word: int, n: int) -> int:
    """A word mapped evenly onto 0..n-1 (``%`` would favour the low values for large n)."""
    return word * n >> 32


def chance(word: int, probability: float) -> bool:
    return word < probability * U32


def pick(items: Sequence[T], word: int) -> T:
    return items[word % len(items)]


def pick_weighted(items: Sequence[T], cumulative: Sequence[int], total: int, word: int) -> T:
    return items[bisect_right(cumulative, word % total)]


def serial_offset(seed: int) -> int:
    return int.from_bytes(hashlib.blake2b(b"serial:%d" % seed, digest_size=8).digest())


def serial_suffix(offset: int, ident: int) -> str:
    """Nine base-36 characters, distinct for every ident below 36**9 under one offset."""
    n = (ident * _STRIDE + offset) % _SUFFIX_SPACE
    n, a = divmod(n, 1296)
    n, b = divmod(n, 1296)
    n, c = divmod(n, 1296)
    n, d = divmod(n, 1296)
    pairs = _BASE36_PAIRS
    return _BASE36[n] + pairs[d] + pairs[c] + pairs[b] + pairs[a]


def uuid_from(w: Sequence[int], upper: bool = True) -> str:
    """A version-4 UUID made of four words."""
    text = "%08x-%04x-4%03x-%04x-%04x%08x" % (  # noqa: UP031 - fastest here
        w[0],
        w[1] >> 16,
        w[1] & 0xFFF,
        (w[2] >> 16) & 0x3FFF | 0x8000,
        w[2] & 0xFFFF,
        w[3],
    )
    return text.upper() if upper else text


def iso_ms(epoch_ms: int) -> str:
    """Jamf's timestamp format: ``2026-11-20T10:00:00.123Z``."""
    day, rest = divmod(epoch_ms, _DAY_MS)
    date = _days.get(day)
    if date is None:
        date = _days[day] = datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y-%m-%dT")
    hours, rest = divmod(rest, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    two = _TWO_DIGITS
    return f"{date}{two[hours]}:{two[minutes]}:{two[seconds]}.{_THREE_DIGITS[millis]}Z"


def epoch_ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)
