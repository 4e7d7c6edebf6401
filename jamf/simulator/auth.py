"""Bearer tokens as Jamf Pro issues them: opaque, short-lived, revocable.

Two principals exist: the configured API client / user, who may read inventory, and a
"no read" pair, whose tokens are valid but get 403 on inventory, so a client's handling
of a missing Read Computers privilege can be tested.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    can_read_inventory: bool


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    principal: Principal
    expires_at: float  # seconds since the epoch

    @property
    def expires_in(self) -> int:
        return max(0, round(self.expires_at - time.time()))


def same(given: str, expected: str) -> bool:
    """Constant-time comparison, as a credential check should be."""
    return hmac.compare_digest(given.encode(), expected.encode())


class TokenStore:
    """Tokens by value; expired ones are pruned whenever a new one is issued."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.time) -> None:
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, IssuedToken] = {}
        self.issued = 0

    def issue(self, principal: Principal) -> IssuedToken:
        now = self._clock()
        issued = IssuedToken(secrets.token_urlsafe(32), principal, now + self.ttl)
        with self._lock:
            self._tokens = {k: v for k, v in self._tokens.items() if v.expires_at > now}
            self._tokens[issued.token] = issued
            self.issued += 1
        return issued

    def lookup(self, token: str) -> Principal | None:
        """The token's principal, or None when it is unknown, revoked or expired."""
        issued = self._tokens.get(token)
        if issued is None or issued.expires_at <= self._clock():
            return None
        return issued.principal

    def revoke(self, token: str) -> bool:
        with self._lock:
            return self._tokens.pop(token, None) is not None

    def expire_all(self) -> int:
        with self._lock:
            count = len(self._tokens)
            self._tokens = {}
            return count

    def active(self) -> int:
        now = self._clock()
        return sum(1 for v in list(self._tokens.values()) if v.expires_at > now)


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None
