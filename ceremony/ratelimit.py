"""Per-key rate limits, such as a user's auto-enrollment attempts.

A limiter allows ``limit`` attempts per key in any ``window`` (a sliding window: each
attempt counts for exactly ``window`` after it was made). :meth:`RateLimiter.hit`
records one attempt, or raises :class:`RateLimited` (a 429 naming the key and the
seconds to wait) without recording it, so a refused client that waits ``retry_after``
seconds is let in. Two kinds, picked by :func:`rate_limiter_for`:

- :class:`RedisRateLimiter`, for service instances spread over several hosts: they
  share one count per key. Each key is a sorted set of attempt times, trimmed, counted
  and extended by one Lua script, atomically and on the server's clock (so the hosts'
  clocks need not agree); it expires by itself once its last attempt is out of the
  window.
- :class:`LocalRateLimiter`, in this process's memory, for the embedded set-up on one
  machine; it forgets keys whose attempts are all out of the window.

A Redis that cannot be used raises :class:`RateLimiterUnavailable`, a 503 whose one-line
message names the server (never its password): the service refuses the attempt rather
than failing with a 500 or letting attempts through uncounted.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import timedelta
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from redis import Redis, SSLConnection
from redis.exceptions import RedisError

from ceremony.errors import RateLimited, RateLimiterUnavailable
from inventory.errors import ConfigurationError

__all__ = [
    "DEFAULT_PREFIX",
    "LocalRateLimiter",
    "RateLimited",
    "RateLimiter",
    "RateLimiterUnavailable",
    "RedisRateLimiter",
    "rate_limiter_for",
]

DEFAULT_PREFIX = "devtrust:ratelimit:"

# Seconds to wait for Redis: a limiter sits in a request's path, so a Redis that hangs
# must turn into a prompt 503 rather than a client timing out.
_REDIS_TIMEOUT = 2.0


class RateLimiter(Protocol):
    """Counts attempts per key; ``hit`` records one or raises :class:`RateLimited`."""

    def hit(self, key: str) -> None: ...

    def close(self) -> None: ...


def _checked(limit: int, window: timedelta) -> float:
    """The window in seconds, once ``limit`` and ``window`` are known to make sense."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"a rate limit must allow at least 1 attempt, not {limit!r}")
    seconds = window.total_seconds()
    if seconds < 0.001:
        raise ValueError(f"a rate-limit window must be at least 1 ms, not {window}")
    return seconds


def _retry_after(seconds: float) -> int:
    return max(1, math.ceil(seconds))


# -- one process ---------------------------------------------------------------------------


class LocalRateLimiter:
    """Attempts counted in this process's memory, for one service on one machine.

    Thread-safe. Each key keeps at most ``limit`` attempt times; about once per window
    every key whose attempts have all left the window is dropped, so memory grows with
    the keys seen in the last two windows, not with every key ever seen. ``clock`` gives
    seconds on a clock that never goes back (tests pass a fake one).
    """

    def __init__(
        self,
        limit: int,
        window: timedelta,
        what: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window = _checked(limit, window)
        self.limit = limit
        self.window = window
        self.what = what
        self._clock = clock
        self._lock = threading.Lock()
        self._attempts: dict[str, deque[float]] = {}
        self._next_sweep = clock() + self._window

    def hit(self, key: str) -> None:
        with self._lock:
            now = self._clock()
            if now >= self._next_sweep:
                self._sweep(now)
            attempts = self._attempts.get(key)
            if attempts is None:
                attempts = self._attempts[key] = deque()
            while attempts and attempts[0] + self._window <= now:
                attempts.popleft()
            if len(attempts) >= self.limit:
                raise RateLimited(self.what, key, _retry_after(attempts[0] + self._window - now))
            attempts.append(now)

    def _sweep(self, now: float) -> None:
        expired = [k for k, a in self._attempts.items() if not a or a[-1] + self._window <= now]
        for key in expired:
            del self._attempts[key]
        self._next_sweep = now + self._window

    def __len__(self) -> int:
        """How many keys it remembers (some of them may be out of the window already)."""
        with self._lock:
            return len(self._attempts)

    def close(self) -> None:
        with self._lock:
            self._attempts.clear()

    def __repr__(self) -> str:
        return f"<LocalRateLimiter {self.limit} {self.what} per {self.window}>"


# -- Redis ---------------------------------------------------------------------------------

# KEYS[1]: the key's sorted set of attempts, scored by the millisecond they were made.
# ARGV: limit, window in ms, a member unique to this attempt.
# Returns 0 when the attempt was recorded, else the milliseconds until one is let in.
_HIT = """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
    redis.call('ZADD', KEYS[1], now, ARGV[3])
    redis.call('PEXPIRE', KEYS[1], window)
    return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return tonumber(oldest[2]) + window - now
"""


def _shown_url(url: str) -> str:
    """The URL without its password or query (which may carry one)."""
    try:
        parts = urlsplit(url)
        userinfo, at, hostinfo = parts.netloc.rpartition("@")
        netloc = parts.netloc
        if at and ":" in userinfo:
            netloc = f"{userinfo.partition(':')[0]}:***@{hostinfo}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    except ValueError:  # malformed: show no part of it that may hold a secret
        return url.partition("://")[0] + "://..."


def _client_url(client: Redis) -> str:
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    scheme = "rediss" if issubclass(pool.connection_class, SSLConnection) else "redis"
    host, port, db = kwargs.get("host", "localhost"), kwargs.get("port", 6379), kwargs.get("db", 0)
    return f"{scheme}://{host}:{port}/{db}"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class RedisRateLimiter:
    """Attempts counted as keys ``<prefix><key>`` on a Redis server shared by every
    service instance.

    Takes a URL (the limiter then owns the connection and :meth:`close` closes it) or a
    :class:`redis.Redis` client (left to its owner). Connects lazily: building it checks
    the URL only.
    """

    def __init__(
        self,
        redis: str | Redis,
        limit: int,
        window: timedelta,
        what: str,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        seconds = _checked(limit, window)
        self.limit = limit
        self.window = window
        self.what = what
        self.prefix = prefix
        self._window_ms = math.ceil(seconds * 1000)
        if isinstance(redis, str):
            self.where = _shown_url(redis)
            try:
                self._redis = Redis.from_url(
                    redis, socket_connect_timeout=_REDIS_TIMEOUT, socket_timeout=_REDIS_TIMEOUT
                )
            except ValueError as exc:
                raise ConfigurationError(
                    f"invalid rate-limit server URL {self.where}: {_first_line(exc)}"
                ) from None
            self._owned = True
        else:
            self.where = _client_url(redis)
            self._redis = redis
            self._owned = False
        self._script = self._redis.register_script(_HIT)  # EVALSHA, EVAL if not cached

    def hit(self, key: str) -> None:
        try:
            wait_ms = self._script(
                keys=[self.prefix + key],
                args=[self.limit, self._window_ms, uuid.uuid4().hex],
            )
        except RedisError as exc:
            raise RateLimiterUnavailable(
                f"cannot count {self.what}: the rate-limit server at {self.where} "
                f"did not answer: {_first_line(exc)}"
            ) from None
        if wait_ms:
            raise RateLimited(self.what, key, _retry_after(int(wait_ms) / 1000))

    def close(self) -> None:
        if self._owned:
            self._redis.close()

    def __repr__(self) -> str:
        return f"<RedisRateLimiter {self.where} prefix={self.prefix!r}>"


# -- choosing ------------------------------------------------------------------------------


def rate_limiter_for(
    redis_url: str | None, limit: int, window: timedelta, what: str
) -> RateLimiter:
    """Redis when given a ``redis://`` or ``rediss://`` URL (the scheme in any case, as
    URLs have it), else this process's memory."""
    if redis_url and redis_url.lower().startswith(("redis://", "rediss://")):
        scheme, rest = redis_url.split("://", 1)
        return RedisRateLimiter(f"{scheme.lower()}://{rest}", limit, window, what)
    return LocalRateLimiter(limit, window, what)
