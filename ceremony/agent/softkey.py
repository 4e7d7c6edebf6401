"""A software stand-in for the Secure Enclave key, for tests and the demo only.

The private key sits in a file (mode 0600) in the agent's state directory, so it proves
nothing about hardware: it is named for what it is, and a real Mac uses the Secure Enclave.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ceremony.keyfile import load_or_create_ec_key

KEY_FILE = "software-enclave-key.pem"


class SoftwareEnclaveKey:
    """An ECDSA P-256 key kept in a file, with the interface the Secure Enclave key has."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        self._key = private_key

    @classmethod
    def load_or_create(cls, state_dir: Path) -> SoftwareEnclaveKey:
        return cls(load_or_create_ec_key(state_dir / KEY_FILE))

    def public_key_der(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, challenge: bytes) -> bytes:
        return self._key.sign(challenge, ec.ECDSA(hashes.SHA256()))
