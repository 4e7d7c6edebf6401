"""macOS enrollment: the device proves it holds the private half of an ECDSA P-256 key.

On a Mac the key lives in the Secure Enclave; the server only sees the public key
(DER SubjectPublicKeyInfo), sends a fresh random challenge, and checks the signature
(ECDSA with SHA-256, DER-encoded) over it. Pure functions over bytes: every refusal is a
``KeyProofError`` with one line saying what is wrong, whatever bytes arrive.
"""

from __future__ import annotations

import secrets

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from ceremony.errors import KeyProofError

CHALLENGE_BYTES = 32
# A P-256 SubjectPublicKeyInfo is 91 bytes and a DER ECDSA signature at most 72: anything
# far larger is not what a device sends.
MAX_KEY_BYTES = 512
MAX_SIGNATURE_BYTES = 256


def new_challenge() -> bytes:
    return secrets.token_bytes(CHALLENGE_BYTES)


def parse_public_key(der: bytes) -> ec.EllipticCurvePublicKey:
    """The device's P-256 public key, from DER SubjectPublicKeyInfo."""
    if not der:
        raise KeyProofError("the device sent no public key")
    if len(der) > MAX_KEY_BYTES:
        raise KeyProofError(f"the public key is {len(der)} bytes, more than {MAX_KEY_BYTES}")
    try:
        key = load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm, TypeError):
        raise KeyProofError("the public key is not a DER SubjectPublicKeyInfo") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise KeyProofError("the public key is not an elliptic-curve key (ECDSA P-256 expected)")
    if not isinstance(key.curve, ec.SECP256R1):
        raise KeyProofError(f"the public key is on {key.curve.name}, not P-256")
    return key


def verify_key_proof(public_key_der: bytes, challenge: bytes, signature: bytes) -> None:
    """Check the device's ECDSA-SHA256 signature (DER) over ``challenge``."""
    key = parse_public_key(public_key_der)
    if len(challenge) != CHALLENGE_BYTES:
        raise KeyProofError(f"the challenge must be {CHALLENGE_BYTES} bytes")
    if not signature:
        raise KeyProofError("the device sent no signature")
    if len(signature) > MAX_SIGNATURE_BYTES:
        raise KeyProofError(f"the signature is {len(signature)} bytes, more than allowed")
    try:
        key.verify(signature, challenge, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise KeyProofError(
            "the signature over the challenge does not verify with the device's key"
        ) from None
