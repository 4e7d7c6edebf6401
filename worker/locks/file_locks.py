"""Locks as ``flock`` on files in a directory: one machine, no server."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import time
from pathlib import Path

from .base import Lease, LockState, LockUnavailable, _check_ttl, _first_line

# A holder() probe takes a shared flock for a few microseconds; acquire() tries a few
# times over this many seconds so a probe is never mistaken for a holder.
_PROBE_GRACE = 0.05
_UNNAMED_HOLDER = "unknown"

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

    expires = False  # an flock lasts until released

    def _renew(self) -> bool:
        return True  # there is nothing to extend

    def _release(self) -> None:
        try:
            os.ftruncate(self._fd, 0)  # while still held, so holder() never sees a stale owner
        except OSError:
            pass
        finally:
            os.close(self._fd)  # drops the flock
