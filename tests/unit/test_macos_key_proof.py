"""macOS key proof: the server's checks, against the software stand-in for the enclave key."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st

from ceremony.agent.softkey import (
    KEY_FILE,
    SoftwareEnclaveKey,
)
from ceremony.attestation.macos import (
    new_challenge,
    parse_public_key,
    verify_key_proof,
)
from ceremony.errors import KeyProofError


@pytest.fixture
def key(tmp_path: Path) -> SoftwareEnclaveKey:
    return SoftwareEnclaveKey.load_or_create(tmp_path)


def test_a_signature_over_the_challenge_verifies(key: SoftwareEnclaveKey) -> None:
    challenge = new_challenge()
    verify_key_proof(key.public_key_der(), challenge, key.sign(challenge))


def test_a_signature_over_another_challenge_is_refused(key: SoftwareEnclaveKey) -> None:
    with pytest.raises(KeyProofError, match="does not verify with the device's key"):
        verify_key_proof(key.public_key_der(), new_challenge(), key.sign(new_challenge()))


def test_a_signature_by_another_key_is_refused(key: SoftwareEnclaveKey, tmp_path: Path) -> None:
    other = SoftwareEnclaveKey.load_or_create(tmp_path / "other")
    challenge = new_challenge()
    with pytest.raises(KeyProofError, match="does not verify"):
        verify_key_proof(key.public_key_der(), challenge, other.sign(challenge))


def test_keys_other_than_p256_are_refused() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    with pytest.raises(KeyProofError, match="is on secp384r1, not P-256"):
        parse_public_key(p384.public_bytes(der, spki))
    with pytest.raises(KeyProofError, match="not an elliptic-curve key"):
        parse_public_key(rsa_key.public_bytes(der, spki))


def test_empty_oversized_and_malformed_inputs_are_refused(key: SoftwareEnclaveKey) -> None:
    challenge = new_challenge()
    with pytest.raises(KeyProofError, match="sent no public key"):
        verify_key_proof(b"", challenge, key.sign(challenge))
    with pytest.raises(KeyProofError, match="more than 512"):
        verify_key_proof(b"\x30" * 600, challenge, key.sign(challenge))
    with pytest.raises(KeyProofError, match="not a DER SubjectPublicKeyInfo"):
        verify_key_proof(b"\x30\x03abc", challenge, key.sign(challenge))
    with pytest.raises(KeyProofError, match="sent no signature"):
        verify_key_proof(key.public_key_der(), challenge, b"")
    with pytest.raises(KeyProofError, match="must be 32 bytes"):
        verify_key_proof(key.public_key_der(), challenge[:16], key.sign(challenge[:16]))


def test_the_software_key_is_kept_private_and_reloaded(tmp_path: Path) -> None:
    first = SoftwareEnclaveKey.load_or_create(tmp_path)
    mode = stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode)
    assert mode == 0o600
    again = SoftwareEnclaveKey.load_or_create(tmp_path)
    assert again.public_key_der() == first.public_key_der()
    challenge = new_challenge()
    assert first.sign(challenge) != first.sign(challenge)  # ECDSA: a fresh k each time
    verify_key_proof(first.public_key_der(), challenge, again.sign(challenge))


_REAL = ec.generate_private_key(ec.SECP256R1())
_REAL_DER = _REAL.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
)
_CHALLENGE = b"c" * 32
_REAL_SIG = _REAL.sign(_CHALLENGE, ec.ECDSA(hashes.SHA256()))


def _mutated(data: bytes) -> st.SearchStrategy[bytes]:
    def flip(args: tuple[int, int]) -> bytes:
        index, bit = args
        out = bytearray(data)
        out[index % len(out)] ^= 1 << bit
        return bytes(out)

    return st.one_of(
        st.binary(max_size=600),
        st.tuples(st.integers(0, 10_000), st.integers(0, 7)).map(flip),
        st.integers(0, len(data)).map(lambda n: data[:n]),
        st.binary(max_size=20).map(lambda tail: data + tail),
    )


@given(key_der=_mutated(_REAL_DER), signature=_mutated(_REAL_SIG), challenge=st.binary(max_size=40))
def test_any_bytes_give_a_key_proof_error_or_a_valid_proof(
    key_der: bytes, signature: bytes, challenge: bytes
) -> None:
    try:
        verify_key_proof(key_der, challenge, signature)
    except KeyProofError:
        return
    # Only the real key, the real challenge and a valid signature may pass.
    assert key_der == _REAL_DER and challenge == _CHALLENGE
