"""Locks as keys on a Redis server, shared by workers on every host."""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis import Redis
from redis.exceptions import LockError, RedisError
from redis.lock import Lock

from inventory.errors import ConfigurationError

from .base import Lease, LockState, LockUnavailable, _check_ttl, _first_line

log = logging.getLogger("devtrust.worker.locks")

DEFAULT_PREFIX = "devtrust:lock:"

# Seconds to wait for the lock server; far below any sensible ttl, so a renewal that
# hangs is reported while the lease can still be saved.
_REDIS_TIMEOUT = 5.0


def redacted_url(url: str) -> str:
    """The URL with its password (in the user info or the query) replaced by ``***``."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            userinfo, _, hostinfo = netloc.rpartition("@")
            user = userinfo.partition(":")[0]
            netloc = f"{user}:***@{hostinfo}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            if any(key.lower() == "password" for key, _ in pairs):
                query = urlencode(
                    [(k, "***" if k.lower() == "password" else v) for k, v in pairs], safe="*"
                )
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:  # a malformed URL: show no part of it that may hold a secret
        return url.partition("://")[0] + "://..."


class RedisLocks:
    """Locks as keys ``<prefix><name>`` on a Redis server, shared by every worker.

    Connects lazily: building it checks the URL only. The value of a held key is
    ``"<token> <owner>"``; renewing and releasing compare the token in Lua on the
    server (redis-py's :class:`~redis.lock.Lock`), so they never touch a key that
    expired and was taken by another worker meanwhile.
    """

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = prefix
        self.where = redacted_url(url)
        try:
            self._redis = Redis.from_url(
                url, socket_connect_timeout=_REDIS_TIMEOUT, socket_timeout=_REDIS_TIMEOUT
            )
        except ValueError as exc:
            raise ConfigurationError(
                f"invalid lock server URL {self.where}: {_first_line(exc)}"
            ) from None

    @contextmanager
    def _reaching(self) -> Iterator[None]:
        try:
            yield
        except LockError:
            raise
        except RedisError as exc:
            raise LockUnavailable(
                f"cannot use the lock server at {self.where}: {_first_line(exc)}"
            ) from None

    def acquire(self, name: str, ttl: float, owner: str) -> Lease | None:
        ttl = _check_ttl(ttl)
        lock = Lock(self._redis, self.prefix + name, timeout=ttl, thread_local=False)
        # The ttl rides in the token, so that others can tell when renewals stopped.
        token = f"{uuid.uuid4().hex}:{math.ceil(ttl * 1000)} {owner}"
        with self._reaching():
            if not lock.acquire(blocking=False, token=token):
                return None
        return _RedisLease(name, ttl, lock, self)

    def holder(self, name: str) -> str | None:
        state = self.state(name)
        return state.owner if state else None

    def state(self, name: str) -> LockState | None:
        with self._reaching():
            pipe = self._redis.pipeline(transaction=True)
            pipe.get(self.prefix + name)
            pipe.pttl(self.prefix + name)
            value, pttl = pipe.execute()
        if value is None:
            return None
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        token, space, owner = text.partition(" ")
        if not space:
            return LockState(owner=text)
        _, colon, ttl_ms = token.partition(":")
        if pttl is None or pttl < 0:  # no expiry (set by hand): it never frees by itself
            return LockState(owner=owner)
        frees_in = pttl / 1000
        if not (colon and ttl_ms.isdigit()):
            return LockState(owner=owner, frees_in=frees_in)
        ttl = int(ttl_ms) / 1000
        ago = max(0.0, ttl - frees_in)
        return LockState(owner=owner, holder_dead=ago > ttl / 2, frees_in=frees_in, renewed_ago=ago)

    def close(self) -> None:
        self._redis.close()

    def __repr__(self) -> str:
        return f"<RedisLocks {self.where} prefix={self.prefix!r}>"


class _RedisLease(Lease):
    def __init__(self, name: str, ttl: float, lock: Lock, locks: RedisLocks) -> None:
        super().__init__(name, ttl)
        self._lock = lock
        self._locks = locks

    def _renew(self) -> bool:
        try:
            with self._locks._reaching():
                self._lock.reacquire()  # the ttl again, if the key still holds our token
        except LockError:  # LockNotOwnedError: expired, maybe taken by someone else
            return False
        return True

    def _release(self) -> None:
        try:
            with self._locks._reaching():
                self._lock.release()  # deletes the key only if it still holds our token
        except LockError:
            pass  # expired already; if someone took it since, it is theirs
        except LockUnavailable as exc:
            # Raising here would turn a finished sync into a failed one; the key frees
            # itself when its ttl runs out.
            log.warning(
                "could not release lock %s (it frees itself within %g s): %s",
                self.name,
                self.ttl,
                exc,
            )
