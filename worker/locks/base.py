"""What every kind of lock shares: the lease, what others see of a held lock, and the
error a lock server that cannot be used raises."""

from __future__ import annotations

import contextvars
import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Protocol

from inventory.errors import DevtrustError

log = logging.getLogger("devtrust.worker.locks")


class LockUnavailable(DevtrustError):
    """The lock server (or the lock directory) cannot be used right now; worth a retry."""

    http_status = 503


class LockLost(DevtrustError):
    """A lease is no longer known to be ours: what it guarded must stop."""

    http_status = 409


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

    def to_dict(self) -> dict[str, Any]:
        """As ``devtrust jamf status --format json`` (and the admin API) report the lock."""
        frees_at = self.frees_at()
        return {
            "owner": self.owner,
            "holder_dead": self.holder_dead,
            "frees_at": frees_at.isoformat() if frees_at else None,
            "renewed_ago": self.renewed_ago,
            "pid": self.pid,
            "description": self.describe(),
        }

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

    #: Whether the lease ends by itself when not renewed within its ttl (Redis), rather
    #: than lasting until released (a file lock).
    expires = True

    def __init__(self, name: str, ttl: float) -> None:
        self.name = name
        self.ttl = ttl
        self._mutex = threading.Lock()
        self._released = False
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._lost = threading.Event()
        self._held_since = time.monotonic()  # taken or last renewed, as far as we know

    def renew(self) -> bool:
        """Extend the lease to its full ttl again.

        False when it is no longer ours: released, or expired (and maybe taken by
        someone else). Raises :class:`LockUnavailable` when the lock server cannot say.
        """
        with self._mutex:
            if self._released:
                return False
            began = time.monotonic()
            if self._renew():
                self._held_since = began
                return True
            self._lost.set()
            return False

    def ensure_held(self) -> None:
        """Raise :class:`LockLost` unless the lease is still ours as far as anyone can
        tell: not released, not found lost by a renewal, and renewed (or taken) within
        its ttl. A renewal the lock server could not answer is not proof either way, so
        once the ttl has passed since the last one that succeeded, the lease counts as
        lost: another worker may have taken it. Cheap: no round trip."""
        if self._released:
            raise LockLost(f"the lock {self.name} was released")
        if self._lost.is_set():
            raise LockLost(
                f"the lock {self.name} was lost: it expired before it could be renewed, "
                "and another worker may now hold it"
            )
        unrenewed = time.monotonic() - self._held_since
        if self.expires and unrenewed > self.ttl:
            raise LockLost(
                f"the lock {self.name} was not renewed for {unrenewed:.1f} s, longer than "
                f"its ttl ({self.ttl:g} s): another worker may now hold it"
            )

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


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
