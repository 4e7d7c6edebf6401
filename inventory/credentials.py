"""Secrets we hand out once and keep only as hashes (enrollment tokens, user credentials).

They carry 256 bits from ``secrets``, so a plain SHA-256 is enough: there is nothing to
brute-force that a slow password hash would protect.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

SECRET_BYTES = 32


def new_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)
