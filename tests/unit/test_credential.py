"""MakeCredential's output opens with the EK's private key and the right name only.

The proof that a TPM opens it is in tests/integration/test_tpm_verify.py (swtpm, for each
EK kind); here the TPM's side of TPM2_ActivateCredential is done in software with
software EKs, which also covers the parameter sets swtpm's EKs do not (SHA-512 names,
AES-192, an RSA EK with SHA-384 names as in the high-range RSA-3072 template).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from tpm2_pytss.constants import TPM2_ALG  # type: ignore[import-untyped]
from tpm2_pytss.types import TPM2B_PUBLIC  # type: ignore[import-untyped]

from ceremony.attestation.credential import EKParameters, kdfa, make_credential
from ceremony.attestation.tpm_verify import make_challenge
from ceremony.errors import ChallengeError
from tests.unit.test_tpm_verify_fuzz import EK_PUBLIC_RSA

HASHES: dict[int, Callable[[], hashes.HashAlgorithm]] = {
    TPM2_ALG.SHA256: hashes.SHA256,
    TPM2_ALG.SHA384: hashes.SHA384,
    TPM2_ALG.SHA512: hashes.SHA512,
}
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _split_tpm2b(data: bytes) -> tuple[bytes, bytes]:
    size = int.from_bytes(data[:2], "big")
    assert len(data) >= 2 + size
    return data[2 : 2 + size], data[2 + size :]


def activate(
    private: PrivateKey, ek: EKParameters, blob: bytes, encrypted: bytes, name: bytes
) -> bytes:
    """TPM2_ActivateCredential's arithmetic (Part 1 §24, Annex B.10.4 and C.6.4)."""
    algorithm = HASHES[ek.name_alg]()
    identity_object, rest = _split_tpm2b(blob)
    assert rest == b""
    outer_hmac, identity = _split_tpm2b(identity_object)
    secret, rest = _split_tpm2b(encrypted)
    assert rest == b""
    if isinstance(private, rsa.RSAPrivateKey):
        oaep = padding.OAEP(padding.MGF1(algorithm), algorithm, b"IDENTITY\x00")
        seed = private.decrypt(secret, oaep)
    else:
        x, rest = _split_tpm2b(secret)
        y, rest = _split_tpm2b(rest)
        assert rest == b""
        width = (private.curve.key_size + 7) // 8
        assert len(x) == len(y) == width
        point = ec.EllipticCurvePublicNumbers(
            int.from_bytes(x, "big"), int.from_bytes(y, "big"), private.curve
        )
        z = private.exchange(ec.ECDH(), point.public_key())
        ek_x = private.public_key().public_numbers().x.to_bytes(width, "big")
        seed = ConcatKDFHash(algorithm, algorithm.digest_size, b"IDENTITY\x00" + x + ek_x).derive(z)
    mac = hmac.HMAC(kdfa(algorithm, seed, b"INTEGRITY", b"", algorithm.digest_size), algorithm)
    mac.update(identity + name)
    mac.verify(outer_hmac)  # raises InvalidSignature for another name or EK
    key = kdfa(algorithm, seed, b"STORAGE", name, ek.symmetric_bits // 8)
    decryptor = Cipher(algorithms.AES(key), CFB(bytes(16))).decryptor()
    credential, rest = _split_tpm2b(decryptor.update(identity) + decryptor.finalize())
    assert rest == b""
    return credential


def ak_name(name_alg: int) -> bytes:
    return name_alg.to_bytes(2, "big") + hashlib.new(HASHES[name_alg]().name, b"AK").digest()


# (private key maker, name algorithm, AES bits): the TCG templates, then the rarer sets.
EK_KINDS: dict[str, tuple[Callable[[], PrivateKey], int, int]] = {
    "rsa2048 (L-1)": (lambda: rsa.generate_private_key(65537, 2048), TPM2_ALG.SHA256, 128),
    "ecc256 (L-2)": (lambda: ec.generate_private_key(ec.SECP256R1()), TPM2_ALG.SHA256, 128),
    "ecc384 (H-3)": (lambda: ec.generate_private_key(ec.SECP384R1()), TPM2_ALG.SHA384, 256),
    "rsa3072 (H-6)": (lambda: rsa.generate_private_key(65537, 3072), TPM2_ALG.SHA384, 256),
    "rsa2048 sha512 aes192": (lambda: rsa.generate_private_key(65537, 2048), TPM2_ALG.SHA512, 192),
    "ecc256 sha512": (lambda: ec.generate_private_key(ec.SECP256R1()), TPM2_ALG.SHA512, 256),
}


@pytest.mark.parametrize("kind", EK_KINDS)
def test_the_credential_opens_with_the_eks_private_key_and_the_ak_name(kind: str) -> None:
    make_key, name_alg, bits = EK_KINDS[kind]
    private = make_key()
    ek = EKParameters(private.public_key(), name_alg, TPM2_ALG.AES, bits, TPM2_ALG.CFB)
    name, secret = ak_name(name_alg), secrets.token_bytes(32)
    blob, encrypted = make_credential(ek, secret, name)
    assert activate(private, ek, blob, encrypted, name) == secret
    # Bound to the name: the outer HMAC covers it, so another key's name does not open it.
    other = name[:-1] + bytes([name[-1] ^ 1])
    with pytest.raises(InvalidSignature):
        activate(private, ek, blob, encrypted, other)


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1()])
def test_an_ecc_eks_x_from_its_public_area_gives_the_same_credential(
    curve: ec.EllipticCurve,
) -> None:
    # A key whose x has a leading zero byte: a public area may hold it shorter than the
    # curve's size (a TPM pads it), and KDFe takes it padded.
    width = (curve.key_size + 7) // 8
    while True:
        private = ec.generate_private_key(curve)
        x = private.public_key().public_numbers().x
        if x.bit_length() <= 8 * (width - 1):
            break
    unpadded = x.to_bytes((x.bit_length() + 7) // 8, "big")
    assert len(unpadded) < width
    ek = EKParameters(
        private.public_key(), TPM2_ALG.SHA256, TPM2_ALG.AES, 128, TPM2_ALG.CFB, ecc_x=unpadded
    )
    name, secret = ak_name(TPM2_ALG.SHA256), secrets.token_bytes(32)
    assert activate(private, ek, *make_credential(ek, secret, name), name) == secret


def test_every_credential_has_its_own_seed() -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    ek = EKParameters(key, TPM2_ALG.SHA256, TPM2_ALG.AES, 128, TPM2_ALG.CFB)
    name = ak_name(TPM2_ALG.SHA256)
    first, second = make_credential(ek, bytes(32), name), make_credential(ek, bytes(32), name)
    assert first[0] != second[0]
    assert first[1] != second[1]


KEY = rsa.generate_private_key(65537, 2048).public_key()


@pytest.mark.parametrize(
    ("ek", "credential", "message"),
    [
        (
            EKParameters(KEY, TPM2_ALG.SHA1, TPM2_ALG.AES, 128, TPM2_ALG.CFB),
            bytes(20),
            "^the EK's name algorithm 0x4 is not SHA-256/384/512$",
        ),
        (
            EKParameters(KEY, TPM2_ALG.SHA256, TPM2_ALG.NULL, 128, TPM2_ALG.CFB),
            bytes(32),
            "^the EK's symmetric cipher is not AES in CFB mode$",
        ),
        (
            EKParameters(KEY, TPM2_ALG.SHA256, TPM2_ALG.AES, 128, TPM2_ALG.CTR),
            bytes(32),
            "^the EK's symmetric cipher is not AES in CFB mode$",
        ),
        (
            EKParameters(KEY, TPM2_ALG.SHA256, TPM2_ALG.AES, 64, TPM2_ALG.CFB),
            bytes(32),
            "^the EK's AES key size 64 is not 128, 192 or 256$",
        ),
        (
            EKParameters(KEY, TPM2_ALG.SHA256, TPM2_ALG.AES, 128, TPM2_ALG.CFB),
            bytes(33),
            "^the credential is longer than the EK's name digest$",
        ),
    ],
)
def test_ek_parameters_that_cannot_protect_a_credential_are_refused(
    ek: EKParameters, credential: bytes, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make_credential(ek, credential, ak_name(TPM2_ALG.SHA256))


def test_a_challenge_for_an_ek_without_a_storage_cipher_is_refused() -> None:
    public, _ = TPM2B_PUBLIC.unmarshal(EK_PUBLIC_RSA)
    public.publicArea.parameters.rsaDetail.symmetric.algorithm = TPM2_ALG.NULL
    with pytest.raises(
        ChallengeError,
        match=r"^cannot make a credential for this EK \(the EK's symmetric cipher is not AES",
    ):
        make_challenge(bytes(public.marshal()), ak_name(TPM2_ALG.SHA256))
