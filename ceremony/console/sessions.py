"""The console's sessions: an HMAC-signed, expiring cookie, no state on any one replica.

A session cookie is ``v1.<payload>.<signature>``: the payload (base64url JSON) names the
user, when the session ends and a random nonce; the signature is an HMAC-SHA256, keyed by
the console's key, over the payload *and the user's current credential hash* as the
inventory stores it. So every replica that shares the key (a file under the data
directory, like the device CA) reads every session, and a session ends at once when the
user's credential changes (``users reset-token``) or the user is removed (``users rm``):
its signature no longer matches anything. The cookie carries no credential, no hash of
one and no key.

The CSRF token of a session is an HMAC of its nonce under the same key: a form carries
it, and a change is refused unless it matches the session the request came with. The
sign-in form, which comes before any session, carries one derived from a random
pre-session cookie the same way.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

KEY_BYTES = 32
KEY_FILE = "console-session.key"
SESSION_COOKIE = "devtrust_session"
LOGIN_COOKIE = "devtrust_login"
DEFAULT_TTL = timedelta(hours=8)
_VERSION = "v1"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Session:
    """A session read back from its cookie (signature not yet checked: ``Signer.valid``)."""

    user: str
    expires: int  # Unix seconds
    nonce: str
    payload: str
    signature: str


class Signer:
    """Signs and checks session cookies and CSRF tokens with one key."""

    def __init__(self, key: bytes, ttl: timedelta = DEFAULT_TTL) -> None:
        if len(key) < 16:
            raise ValueError("the console's session key is too short")
        self._key = key
        self.ttl = ttl

    def _mac(self, *parts: str) -> str:
        message = "|".join(parts).encode()
        return _b64(hmac.new(self._key, message, hashlib.sha256).digest())

    def issue(self, user: str, credential_hash: str, now: datetime) -> str:
        """A new session's cookie value for ``user``, bound to their credential hash."""
        expires = int((now + self.ttl).timestamp())
        body = {"u": user, "x": expires, "n": _b64(secrets.token_bytes(16))}
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return f"{_VERSION}.{payload}.{self._mac('session', payload, credential_hash)}"

    @staticmethod
    def parse(cookie: str | None) -> Session | None:
        """The session a cookie value names, or None when it is no session cookie."""
        if not cookie or len(cookie) > 1024:
            return None
        parts = cookie.split(".")
        if len(parts) != 3 or parts[0] != _VERSION:
            return None
        try:
            body = json.loads(_unb64(parts[1]))
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(body, dict):
            return None
        user, expires, nonce = body.get("u"), body.get("x"), body.get("n")
        if not isinstance(user, str) or not isinstance(expires, int) or not isinstance(nonce, str):
            return None
        return Session(user, expires, nonce, parts[1], parts[2])

    def valid(self, session: Session, credential_hash: str | None, now: datetime) -> bool:
        """Whether the session is unexpired and signed for this credential hash (None:
        the user is gone)."""
        if credential_hash is None or now.timestamp() >= session.expires:
            return False
        expected = self._mac("session", session.payload, credential_hash)
        return hmac.compare_digest(expected, session.signature)

    def csrf(self, session: Session) -> str:
        """The CSRF token every form of this session carries."""
        return self._mac("csrf", session.nonce)

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(self.csrf(session), token)

    @staticmethod
    def login_nonce() -> str:
        return _b64(secrets.token_bytes(16))

    def login_csrf(self, nonce: str) -> str:
        """The sign-in form's CSRF token, for the pre-session cookie's nonce."""
        return self._mac("login", nonce)

    def login_csrf_ok(self, nonce: str | None, token: str | None) -> bool:
        if not nonce or token is None:
            return False
        return hmac.compare_digest(self.login_csrf(nonce), token)


def load_or_create_key(data_dir: Path) -> bytes:
    """The console's session key, ``<data_dir>/console-session.key`` (mode 0600), made on
    first use. Replicas of the service share it as they share the device CA: the same
    data directory, or the same file copied to each. Two replicas starting at once make
    one key: it is written aside and linked into place, and the loser reads the winner's."""
    path = data_dir / KEY_FILE
    with contextlib.suppress(FileNotFoundError):
        return read_key(path)
    data_dir.mkdir(parents=True, exist_ok=True)
    aside = data_dir / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(secrets.token_bytes(KEY_BYTES))
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
    finally:
        aside.unlink(missing_ok=True)
    return read_key(path)


def read_key(path: Path) -> bytes:
    """The key in ``path``: at least ``KEY_BYTES`` bytes, or ValueError saying so."""
    key = path.read_bytes()
    if len(key) < KEY_BYTES:
        raise ValueError(f"{path} holds {len(key)} bytes, not a {KEY_BYTES}-byte key")
    return key
