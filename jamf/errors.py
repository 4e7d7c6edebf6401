"""Every error the Jamf client can raise, each carrying the one line a user sees.

The hierarchy, with what the client does about each::

    JamfError
    ├── JamfConfigError        the client is set up wrong; raised before any request
    ├── JamfAuthError          two authentication failures in a row; never retried
    ├── JamfPermissionError    403: the API role lacks a privilege; never retried
    ├── JamfNotFound           the server has no such API (version probe, wrong URL)
    ├── JamfRequestRefused     any other 3xx/4xx: retrying the same request cannot help
    ├── JamfUnavailable        retries exhausted; names the path, last failure, attempts
    └── JamfTransientError     retried by the client; escapes only inside JamfUnavailable
        ├── JamfBadResponse    a 200 that is not JSON, is truncated, or lacks its fields
        └── JamfServerBusy     429 and 5xx, with the wait the server asked for

Like httpx's exception module, the split between "retry this" and "decide by status"
is written down once: ``RETRYABLE`` is the tuple the retry loop matches on, and
transport failures (timeouts, refused or dropped connections) are in it as well.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from inventory.errors import ConfigurationError, DevtrustError


class JamfError(DevtrustError):
    """Base class: something about the Jamf Pro server or our access to it."""

    # A broken upstream is a bad gateway from the point of view of our own callers.
    http_status = 502


class JamfConfigError(JamfError, ConfigurationError):
    """Credentials, URL, page size or API version are configured wrong."""

    http_status = 500


class JamfAuthError(JamfError):
    def __init__(self) -> None:
        super().__init__("invalid Jamf API credentials")


class JamfPermissionError(JamfError):
    def __init__(self, privilege: str = "Read Computers") -> None:
        super().__init__(f"the Jamf API client lacks the {privilege} privilege")
        self.privilege = privilege


class JamfNotFound(JamfError):
    """The server does not offer an endpoint we need (as opposed to a missing record)."""


class JamfRequestRefused(JamfError):
    """A status that will not change on retry: 400 for a bad RSQL filter, 3xx for a bad URL."""

    def __init__(self, method: str, path: str, status: int, detail: str = "") -> None:
        reason = f"HTTP {status}" + (f": {detail}" if detail else "")
        super().__init__(f"Jamf Pro refused {method} {path} ({reason})")
        self.path = path
        self.status = status


class JamfUnavailable(JamfError):
    """Every attempt failed with a retryable error, or the total time ran out."""

    http_status = 503

    def __init__(self, method: str, path: str, last: str, attempts: int) -> None:
        plural = "attempt" if attempts == 1 else "attempts"
        super().__init__(
            f"Jamf Pro is unavailable: {method} {path} failed after {attempts} {plural} "
            f"(last: {last})"
        )
        self.path = path
        self.last = last
        self.attempts = attempts


class JamfTransientError(JamfError):
    """A failure worth retrying. ``describe`` is how JamfUnavailable names it."""

    def describe(self) -> str:
        return str(self)


class JamfBadResponse(JamfTransientError):
    """Jamf Cloud answers a timed-out request with a 200 HTML page: that is never data."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"Jamf Pro sent an unusable answer to {path}: {problem}")
        self.path = path
        self.problem = problem

    def describe(self) -> str:
        return self.problem


class JamfServerBusy(JamfTransientError):
    """429 or 5xx. ``retry_after`` is the server's own wait hint in seconds, if it gave one."""

    def __init__(self, path: str, status: int, retry_after: float | None = None) -> None:
        super().__init__(f"Jamf Pro answered {path} with HTTP {status}")
        self.path = path
        self.status = status
        self.retry_after = retry_after

    @classmethod
    def from_response(cls, path: str, response: httpx.Response) -> JamfServerBusy:
        return cls(path, response.status_code, wait_hint(response))

    def describe(self) -> str:
        return f"HTTP {self.status}"


#: What the retry loop retries. Everything else is raised to the caller at once.
RETRYABLE: tuple[type[BaseException], ...] = (
    JamfTransientError,
    httpx.TimeoutException,
    # ConnectError, ReadError (connection reset), WriteError, CloseError.
    httpx.NetworkError,
    # The server closed the connection mid-response or sent garbage framing.
    httpx.RemoteProtocolError,
)


def describe_failure(error: BaseException) -> str:
    """A short name for the last failure, for JamfUnavailable's message and the retry log."""
    if isinstance(error, JamfTransientError):
        return error.describe()
    if isinstance(error, httpx.TimeoutException):
        return f"timeout ({type(error).__name__})"
    if isinstance(error, httpx.TransportError):
        detail = str(error).splitlines()[0] if str(error) else ""
        return f"{type(error).__name__}" + (f": {detail}" if detail else "")
    return type(error).__name__


# An x-ratelimit-reset above this is an epoch time, below it a number of seconds.
_EPOCH_THRESHOLD = 1_000_000_000


def wait_hint(response: httpx.Response) -> float | None:
    """Seconds the server asked us to wait: Retry-After (seconds or a date), else x-ratelimit."""
    value = response.headers.get("retry-after", "").strip()
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            when = parse_http_date(value)
            if when is not None:
                return max(0.0, (when - _server_now(response)).total_seconds())
    return reset_seconds(response)


def reset_seconds(response: httpx.Response) -> float | None:
    """``x-ratelimit-reset`` (or the draft standard's ``ratelimit-reset``) in seconds from now."""
    value = response.headers.get("x-ratelimit-reset") or response.headers.get("ratelimit-reset")
    try:
        reset = float((value or "").strip())
    except ValueError:
        return None
    if reset > _EPOCH_THRESHOLD:
        return max(0.0, reset - _server_now(response).timestamp())
    return max(0.0, reset)


def parse_http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _server_now(response: httpx.Response) -> datetime:
    # The server's own clock, when it says: ours may be skewed from the one that set the date.
    return parse_http_date(response.headers.get("date")) or datetime.now(UTC)
