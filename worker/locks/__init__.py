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

from pathlib import Path

from .base import Lease, LockLost, Locks, LockState, LockUnavailable
from .file_locks import LocalLocks
from .redis_locks import DEFAULT_PREFIX, RedisLocks, redacted_url

__all__ = [
    "DEFAULT_PREFIX",
    "Lease",
    "LocalLocks",
    "LockLost",
    "LockState",
    "LockUnavailable",
    "Locks",
    "RedisLocks",
    "locks_for",
    "redacted_url",
]


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
