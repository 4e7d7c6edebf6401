"""Private keys kept in files: PEM (PKCS#8, unencrypted), readable by their owner only.

The device CA's key on the server, and on the device the user's key and the software
stand-in for the Secure Enclave key.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Write ``key`` to a new file of mode 0600; an existing file is never overwritten."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)


def load_or_create_ec_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The ECDSA P-256 key in ``path``, made there on first use."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{path} does not hold an EC private key: remove it")
        return key
    key = ec.generate_private_key(ec.SECP256R1())
    write_private_key(path, key)
    return key
