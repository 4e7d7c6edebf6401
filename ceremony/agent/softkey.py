"""A software stand-in for the Secure Enclave key, for tests and the demo only.

The private key sits in a file (mode 0600) in the agent's state directory, so it proves
nothing about hardware: it is named for what it is, and a real Mac uses the Secure Enclave.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

KEY_FILE = "software-enclave-key.pem"


class SoftwareEnclaveKey:
    """An ECDSA P-256 key kept in a file, with the interface the Secure Enclave key has."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        self._key = private_key

    @classmethod
    def load_or_create(cls, state_dir: Path) -> SoftwareEnclaveKey:
        path = state_dir / KEY_FILE
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{path} does not hold an EC private key")
            return cls(key)
        state_dir.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        return cls(key)

    def public_key_der(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, challenge: bytes) -> bytes:
        return self._key.sign(challenge, ec.ECDSA(hashes.SHA256()))
