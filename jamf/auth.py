"""Bearer tokens for the Jamf Pro API: OAuth client credentials or a user's Basic login.

One token is shared by every worker thread. It is renewed before it expires, one
renewal at a time under a lock, so a page of five parallel requests costs one token
request, not five. Lifetimes vary: user tokens live 30 minutes, an API client's tokens
as long as its "access token lifetime" says (Jamf's example shows 599 s; some servers
are set to 60 s), so the margin is a share of the lifetime, not a fixed time.

OAuth client credentials go to ``/api/oauth/token`` (Jamf's guide) or, on servers and
proxies that only answer there, ``/api/v1/oauth/token`` (where the ``jamf-pro-sdk``
posts): the client tries one, falls back to the other on 404, and keeps what worked.

Token values and secrets never reach a log line, an exception message or a repr.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
import orjson

from jamf.errors import (
    JamfBadResponse,
    JamfConfigError,
    JamfNotFound,
    JamfRequestRefused,
    parse_http_date,
)

log = logging.getLogger("devtrust.jamf")

OAUTH_TOKEN_PATH = "/api/oauth/token"  # noqa: S105 - a path, not a secret
# Asked when OAUTH_TOKEN_PATH answers 404, and the other way round once it has worked.
OAUTH_TOKEN_PATH_V1 = "/api/v1/oauth/token"  # noqa: S105 - a path, not a secret
USER_TOKEN_PATH = "/api/v1/auth/token"  # noqa: S105 - a path, not a secret
KEEP_ALIVE_PATH = "/api/v1/auth/keep-alive"
INVALIDATE_PATH = "/api/v1/auth/invalidate-token"

# Renew when less than this share of a token's lifetime is left (or MIN_MARGIN seconds,
# whichever is more, but never more than half the lifetime, or a short-lived token would
# be renewed before every request): a request that starts with a token about to expire
# gets a 401 halfway through a page, which costs a retry.
RENEW_SHARE = 0.2
MIN_MARGIN = 5.0
MAX_MARGIN_SHARE = 0.5
# Used when the OAuth answer omits expires_in: the shortest lifetime real servers use.
DEFAULT_LIFETIME = 60.0


class Post(Protocol):
    """One POST to Jamf, no retries; 429/5xx already raised as JamfServerBusy."""

    def __call__(
        self,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
        auth: httpx.BasicAuth | None = None,
    ) -> httpx.Response: ...


class TokenRefused(Exception):
    """The token endpoint said no (400/401/403). The client counts these toward JamfAuthError."""


@dataclass(frozen=True)
class Token:
    value: str = field(repr=False)
    expires_at: float  # on the client's monotonic clock
    lifetime: float

    @property
    def margin(self) -> float:
        """How long before expiry the token is renewed."""
        wanted = max(MIN_MARGIN, RENEW_SHARE * self.lifetime)
        return min(wanted, MAX_MARGIN_SHARE * self.lifetime)

    def needs_renewal(self, now: float) -> bool:
        return self.expires_at - now < self.margin

    def expired(self, now: float) -> bool:
        return now >= self.expires_at


def read_json(response: httpx.Response, path: str) -> Any:
    """The body as JSON, or JamfBadResponse: HTML timeout pages and cut-off bodies are retried."""
    content_type = response.headers.get("content-type", "")
    if "html" in content_type.lower():
        raise JamfBadResponse(path, f"HTTP {response.status_code} with an HTML page, not JSON")
    try:
        return orjson.loads(response.content)
    except (ValueError, UnicodeDecodeError):  # orjson.JSONDecodeError is a ValueError
        size = len(response.content)
        raise JamfBadResponse(
            path, f"HTTP {response.status_code} with a body that is not valid JSON ({size} bytes)"
        ) from None


class Authenticator(ABC):
    """A thread-safe token cache; subclasses know how to get and renew a token."""

    #: What a user would call this kind of credential, for log lines.
    kind = ""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._token: Token | None = None

    def token(self, post: Post) -> str:
        # Threads that find the token stale wait here while one of them renews it, then
        # find the fresh one and go on.
        with self._lock:
            now = self._clock()
            if self._token is None or self._token.needs_renewal(now):
                self._token = self._renew(post, self._token, now)
            return self._token.value

    def reject(self, value: str) -> None:
        """The server refused ``value``: drop it, unless another thread already replaced it."""
        with self._lock:
            if self._token is not None and self._token.value == value:
                self._token = None

    def close(self, post: Post) -> None:  # noqa: B027 - only Basic tokens can be revoked
        """Give back what can be given back; best effort."""

    @abstractmethod
    def _renew(self, post: Post, current: Token | None, now: float) -> Token: ...


class ClientCredentials(Authenticator):
    kind = "API client"

    def __init__(self, client_id: str, client_secret: str, clock: Callable[[], float]) -> None:
        super().__init__(clock)
        self._client_id = client_id
        self._client_secret = client_secret
        # The token endpoint to ask first: the one that last answered, else Jamf's guide's.
        self._paths = (OAUTH_TOKEN_PATH, OAUTH_TOKEN_PATH_V1)

    def __repr__(self) -> str:
        return f"ClientCredentials(client_id={self._client_id!r})"

    def _renew(self, post: Post, current: Token | None, now: float) -> Token:
        form = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._client_secret,
        }
        first, second = self._paths
        path, response = first, post(first, data=form)
        if response.status_code == 404:
            log.debug("Jamf has no OAuth token endpoint at %s (404); trying %s", first, second)
            path, response = second, post(second, data=form)
            if response.status_code == 404:
                raise JamfNotFound(
                    f"Jamf Pro has neither {first} nor {second}: check the Jamf URL and that "
                    "the server is Jamf Pro 10.49 or later (API clients)"
                )
        body = _token_body(response, path)
        value = _text(body, "access_token", path)
        raw = body.get("expires_in", DEFAULT_LIFETIME)
        if isinstance(raw, bool) or not isinstance(raw, int | float) or raw < 0:
            raise JamfBadResponse(path, "expires_in is not a number of seconds")
        if path != first:
            self._paths = (second, first)
        log.debug("Jamf API client token from %s, valid for %.0f s", path, raw)
        # Measured from when we asked, not when the answer arrived: errs on the early side.
        return Token(value=value, expires_at=now + float(raw), lifetime=float(raw))


class UserCredentials(Authenticator):
    kind = "user"

    def __init__(
        self,
        username: str,
        password: str,
        clock: Callable[[], float],
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        super().__init__(clock)
        self._basic = httpx.BasicAuth(username, password)
        self._username = username
        self._wall_clock = wall_clock

    def __repr__(self) -> str:
        return f"UserCredentials(username={self._username!r})"

    def _renew(self, post: Post, current: Token | None, now: float) -> Token:
        if current is not None and not current.expired(now):
            # keep-alive swaps a still-valid token for a new one without sending the
            # password again; if the server no longer knows the token, log in afresh.
            response = post(KEEP_ALIVE_PATH, headers=_bearer(current.value))
            if response.status_code == 200:
                return self._issued(response, KEEP_ALIVE_PATH, now)
        response = post(USER_TOKEN_PATH, auth=self._basic)
        return self._issued(response, USER_TOKEN_PATH, now)

    def close(self, post: Post) -> None:
        with self._lock:
            token, self._token = self._token, None
        if token is None or token.expired(self._clock()):
            return
        # Best effort: a token we fail to revoke still expires by itself.
        with contextlib.suppress(Exception):
            post(INVALIDATE_PATH, headers=_bearer(token.value))

    def _issued(self, response: httpx.Response, path: str, now: float) -> Token:
        body = _token_body(response, path)
        value = _text(body, "token", path)
        expires = _parse_time(body.get("expires"))
        if expires is None:
            raise JamfBadResponse(path, "the token answer has no valid 'expires' time")
        # Prefer the server's own Date header: our wall clock may be skewed from Jamf's.
        server_now = parse_http_date(response.headers.get("date")) or self._wall_clock()
        lifetime = (expires - server_now).total_seconds()
        if lifetime <= 0:
            raise JamfBadResponse(path, "the token answer says it has already expired")
        return Token(value=value, expires_at=now + lifetime, lifetime=lifetime)


def authenticator_for(
    client_id: str | None,
    client_secret: str | None,
    username: str | None,
    password: str | None,
    clock: Callable[[], float],
) -> Authenticator:
    """The one credential pair configured, or JamfConfigError naming what is wrong."""
    has_client = _given(client_id) or _given(client_secret)
    has_user = _given(username) or _given(password)
    if has_client and has_user:
        raise JamfConfigError(
            "configure either a Jamf API client (client id and secret) or a Jamf user "
            "(username and password), not both"
        )
    if has_client:
        if client_id is None or not _given(client_id):
            raise JamfConfigError("the Jamf client secret is set but the client id is missing")
        if client_secret is None or not _given(client_secret):
            raise JamfConfigError("the Jamf client id is set but the client secret is missing")
        return ClientCredentials(client_id.strip(), client_secret, clock)
    if has_user:
        if username is None or not _given(username):
            raise JamfConfigError("the Jamf password is set but the username is missing")
        if password is None or not _given(password):
            raise JamfConfigError("the Jamf username is set but the password is missing")
        return UserCredentials(username.strip(), password, clock)
    raise JamfConfigError(
        "no Jamf credentials: configure an API client id and secret, or a username and password"
    )


def _given(value: str | None) -> bool:
    return bool(value and value.strip())


def _bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def _token_body(response: httpx.Response, path: str) -> Mapping[str, Any]:
    if response.status_code in (400, 401, 403):
        # 400 is how some servers spell OAuth's invalid_client; none of these is fixed by
        # asking again with the same secret, but the client allows one more try.
        raise TokenRefused(f"{path}: HTTP {response.status_code}")
    if response.status_code == 404:
        raise JamfNotFound(f"Jamf Pro has no {path}: check the Jamf URL and the server version")
    if response.status_code != 200:
        raise JamfRequestRefused("POST", path, response.status_code)
    body = read_json(response, path)
    if not isinstance(body, dict):
        raise JamfBadResponse(path, "the token answer is not a JSON object")
    return body


def _text(body: Mapping[str, Any], key: str, path: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise JamfBadResponse(path, f"the token answer has no {key!r}")
    return value


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
