"""Named locks that keep one sync per inventory running at a time, across all workers.

A lock is held as a :class:`Lease` with a time to live: a worker that dies without
releasing it does not block the inventory for ever. A long sync keeps its lease alive
with :meth:`Lease.start_renewal`. Two kinds of locks, picked by :func:`locks_for`:

- :class:`RedisLocks`, one key per lock on a Redis server, for workers spread over
  several hosts. The key's value is a random token (with the lease's ttl) followed by
  the holder's owner string, so :meth:`RedisLocks.holder` can say who holds it and a
  lease only ever renews or deletes a key that still carries its own token.
- :class:`LocalLocks`, ``flock`` on files in a directory, for the embedded set-up on one
  machine: the kernel drops the lock when the holding process dies, however it dies.

:meth:`state` tells more than who: whether the holder still looks alive (its renewals
keep coming; its process exists) and when the lock frees, so a skipped sync can say
that it waits for a dead worker's lock and until when (:class:`LockState`).

A lock server that cannot be used raises :class:`LockUnavailable`, a
:class:`~inventory.errors.DevtrustError` whose message names the server (never its
password); the worker's tasks retry on it.
"""

from __future__ import annotations

import contextvars
import fcntl
import hashlib
import logging
import math
import os
import re
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis import Redis
from redis.exceptions import LockError, RedisError
from redis.lock import Lock

from inventory.errors import ConfigurationError, DevtrustError

__all__ = [
    "DEFAULT_PREFIX",
    "Lease",
    "LocalLocks",
    "LockState",
    "LockUnavailable",
    "Locks",
    "RedisLocks",
    "locks_for",
]

log = logging.getLogger("devtrust.worker.locks")

DEFAULT_PREFIX = "devtrust:lock:"

# Seconds to wait for the lock server; far below any sensible ttl, so a renewal that
# hangs is reported while the lease can still be saved.
_REDIS_TIMEOUT = 5.0
# A holder() probe takes a shared flock for a few microseconds; acquire() tries a few
# times over this many seconds so a probe is never mistaken for a holder.
_PROBE_GRACE = 0.05
_UNNAMED_HOLDER = "unknown"


class LockUnavailable(DevtrustError):
    """The lock server (or the lock directory) cannot be used right now; worth a retry."""

    http_status = 503


@dataclass(frozen=True)
class LockState:
    """A held lock as another worker sees it.

    ``frees_in``: seconds until the lock frees itself unless renewed (Redis); None for a
    file lock, which frees the moment its process ends. ``renewed_ago``: seconds since
    it was taken or last renewed, when known. ``holder_dead``: its renewals stopped (the
    holder renews every ttl/3; none came for half the ttl), or its process is gone.
    """

    owner: str
    holder_dead: bool = False
    frees_in: float | None = None
    renewed_ago: float | None = None
    pid: int | None = None

    def frees_at(self, now: datetime | None = None) -> datetime | None:
        if self.frees_in is None:
            return None
        return (now or datetime.now(UTC)) + timedelta(seconds=self.frees_in)

    def describe(self, now: datetime | None = None) -> str:
        """One clause for a person: who holds it, whether they look alive, when it frees."""
        when = self.frees_at(now)
        frees = (
            f"the lock frees at {when:%H:%M:%S} UTC (in {math.ceil(self.frees_in or 0)} s)"
            if when is not None
            else None
        )
        if self.pid is not None:  # a file lock
            if self.holder_dead:
                return (
                    f"{self.owner}, whose process {self.pid} is gone; the lock frees when the "
                    "processes that inherited its lock file end"
                )
            return f"{self.owner}, process {self.pid} on this host; the lock frees when it ends"
        ago = f"{self.renewed_ago:.0f} s ago" if self.renewed_ago is not None else "a while ago"
        if self.holder_dead:
            return (
                f"{self.owner}, whose worker stopped renewing the lock {ago} (it is gone or "
                f"stuck); {frees or 'the lock never frees by itself'}"
            )
        if frees is None:
            return f"{self.owner}; the lock has no ttl and never frees by itself"
        return f"{self.owner}, lock renewed {ago}; unless renewed again, {frees}"


def _check_ttl(ttl: float) -> float:
    if not ttl >= 0.001:  # also refuses NaN
        raise ValueError(f"a lock's ttl must be at least 1 ms, not {ttl!r} s")
    return float(ttl)


# -- the lease -----------------------------------------------------------------------------


class Lease(ABC):
    """A held lock, until :meth:`release` or until its ttl runs out unrenewed.

    Use it as a context manager: leaving the block releases it and stops any renewal.
    """

    def __init__(self, name: str, ttl: float) -> None:
        self.name = name
        self.ttl = ttl
        self._mutex = threading.Lock()
        self._released = False
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def renew(self) -> bool:
        """Extend the lease to its full ttl again.

        False when it is no longer ours: released, or expired (and maybe taken by
        someone else). Raises :class:`LockUnavailable` when the lock server cannot say.
        """
        with self._mutex:
            if self._released:
                return False
            return self._renew()

    def release(self) -> None:
        """Give the lock up. Calling it again does nothing; a lock that expired and was
        taken by someone else is theirs, and stays theirs."""
        self._stop.set()
        renewer = self._renewer
        if renewer is not None and renewer is not threading.current_thread():
            renewer.join()
        with self._mutex:
            if self._released:
                return
            self._released = True
            self._release()

    def start_renewal(self) -> None:
        """Renew the lease every ttl/3 from a daemon thread until it is released.

        A renewal that fails is logged as a warning on ``devtrust.worker.locks``: one the
        server could not answer is tried again at the next beat; a lease found lost is
        not renewed any more. The thread carries the caller's log context (task id).
        """
        with self._mutex:
            if self._released or self._renewer is not None:
                return
            self._renewer = threading.Thread(
                target=contextvars.copy_context().run,
                args=(self._renew_until_released,),
                name=f"devtrust-lock-renewal:{self.name}",
                daemon=True,
            )
            self._renewer.start()

    def _renew_until_released(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                if self.renew():
                    continue
            except LockUnavailable as exc:
                log.warning("could not renew lock %s, trying again: %s", self.name, exc)
                continue
            if not self._stop.is_set():
                log.warning(
                    "lock %s was lost: it expired before it could be renewed, and another "
                    "worker may now hold it",
                    self.name,
                )
            return

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "released" if self._released else "held"
        return f"<{type(self).__name__} {self.name!r} {state}>"

    @abstractmethod
    def _renew(self) -> bool:
        """Extend the lock (called at most once at a time, only while not released)."""

    @abstractmethod
    def _release(self) -> None:
        """Give the lock up (called once)."""


class Locks(Protocol):
    """Where locks live. ``acquire`` never waits: None means someone else holds it."""

    def acquire(self, name: str, ttl: float, owner: str) -> Lease | None: ...

    def holder(self, name: str) -> str | None: ...

    def state(self, name: str) -> LockState | None: ...

    def close(self) -> None: ...


# -- Redis ---------------------------------------------------------------------------------


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


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


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


# -- one machine ---------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def _file_name(name: str) -> str:
    """A file name for the lock: readable, inside the directory, one per distinct name."""
    readable = _UNSAFE.sub("_", name)[:80] or "lock"
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return f"{readable}.{digest}.lock"


def _try_flock(fd: int, operation: int) -> bool:
    deadline = time.monotonic() + _PROBE_GRACE
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        else:
            return True


class LocalLocks:
    """Locks as ``flock`` on files under ``directory``: one machine, no server.

    Separate processes on this host exclude each other, and so do two acquires in one
    process. A lock whose process died is free: the kernel drops ``flock`` locks when
    the process exits, however it exits. The file holds the holder's process id and
    owner string while it is held and is never deleted (deleting lock files races with
    their next holder).
    ``ttl`` is checked but otherwise ignored: a lease lasts until released.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path(self, name: str) -> Path:
        """The file that carries the lock ``name``."""
        return self.directory / _file_name(name)

    def _unavailable(self, exc: OSError) -> LockUnavailable:
        reason = exc.strerror or _first_line(exc)
        return LockUnavailable(f"cannot use the lock directory {self.directory}: {reason}")

    def acquire(self, name: str, ttl: float, owner: str) -> Lease | None:
        ttl = _check_ttl(ttl)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path(name), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise self._unavailable(exc) from None
        try:
            if not _try_flock(fd, fcntl.LOCK_EX):
                os.close(fd)
                return None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n{owner}".encode(), 0)
        except OSError as exc:
            os.close(fd)  # drops the flock too, if we got it
            raise self._unavailable(exc) from None
        return _LocalLease(name, ttl, fd)

    def holder(self, name: str) -> str | None:
        state = self.state(name)
        return state.owner if state else None

    def state(self, name: str) -> LockState | None:
        try:
            fd = os.open(self.path(name), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._unavailable(exc) from None
        try:
            for _ in range(5):
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    written = os.pread(fd, 64 * 1024, 0)
                    if written:
                        return _local_state(written.decode("utf-8", "replace"))
                    time.sleep(0.01)  # just acquired; its owner is being written
                else:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    return None
            return LockState(owner=_UNNAMED_HOLDER)
        except OSError as exc:
            raise self._unavailable(exc) from None
        finally:
            os.close(fd)

    def close(self) -> None:
        """Nothing to close: each lease owns its file descriptor."""

    def __repr__(self) -> str:
        return f"<LocalLocks {self.directory}>"


def _local_state(written: str) -> LockState:
    pid_text, newline, owner = written.partition("\n")
    if not (newline and pid_text.isdigit()):
        return LockState(owner=written)
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        # Held all the same: a child that inherited the descriptor still has it.
        return LockState(owner=owner, holder_dead=True, pid=pid)
    except PermissionError:
        pass  # it exists, as another user
    return LockState(owner=owner, pid=pid)


class _LocalLease(Lease):
    def __init__(self, name: str, ttl: float, fd: int) -> None:
        super().__init__(name, ttl)
        self._fd = fd

    def _renew(self) -> bool:
        return True  # an flock lasts until released; there is nothing to extend

    def _release(self) -> None:
        try:
            os.ftruncate(self._fd, 0)  # while still held, so holder() never sees a stale owner
        except OSError:
            pass
        finally:
            os.close(self._fd)  # drops the flock


# -- choosing ------------------------------------------------------------------------------


def locks_for(broker_url: str | None, data_dir: Path, *, redis_url: str | None = None) -> Locks:
    """The locks the worker should use.

    Redis when ``redis_url`` is given (a lock-specific server or database), else on the
    broker's own server and database when the broker is Redis (``redis://``,
    ``rediss://``). Anything else (no broker, the embedded filesystem broker, RabbitMQ
    over ``amqp://``) gets :class:`LocalLocks` under ``data_dir / "locks"``, which only
    excludes workers on this one host: workers spread over several hosts need
    ``redis_url``.
    """
    if redis_url:
        return RedisLocks(redis_url)
    if broker_url and broker_url.lower().startswith(("redis://", "rediss://")):
        return RedisLocks(broker_url)
    return LocalLocks(Path(data_dir) / "locks")
