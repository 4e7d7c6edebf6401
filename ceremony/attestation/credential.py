"""TPM2_MakeCredential on the server, with ``cryptography``: a secret only the TPM holding
the EK can recover, and only for the key of the given name (TPM2_ActivateCredential).

TPM 2.0 Library, Part 1 "Architecture", §24 "Credential Protection":

1. a seed the EK's TPM can recover: for an RSA EK, random bytes of the name algorithm's
   digest size, encrypted with RSA-OAEP (that hash for OAEP and MGF1, label "IDENTITY"
   with its terminating zero; Annex B.10.4); for an ECC EK, one-pass ECDH with an
   ephemeral key, seed = KDFe(nameAlg, Z, "IDENTITY", ephemeral x, EK x) (Annex C.6.4);
2. symKey = KDFa(nameAlg, seed, "STORAGE", name, "", symmetric key bits), and the
   credential, as a TPM2B_DIGEST, encrypted with it in CFB mode from a zero IV (§24.4);
3. HMACkey = KDFa(nameAlg, seed, "INTEGRITY", "", "", digest bits), and
   outerHMAC = HMAC(HMACkey, encIdentity || name) (§24.5);
4. out: TPM2B_ID_OBJECT (TPM2B_DIGEST outerHMAC || encIdentity) and
   TPM2B_ENCRYPTED_SECRET (the OAEP ciphertext, or the ephemeral TPMS_ECC_POINT).

KDFa is SP 800-108's counter-mode KDF with HMAC, KDFe SP 800-56A's concatenation KDF
(Part 1 §11.4.10.2 and §11.4.10.3). The name algorithm and the symmetric key size are
the EK's own, from its public area: SHA-256 and AES-128 in the low-range templates (and
the high-range RSA-2048 and P-256 ones), SHA-384 and AES-256 in the high-range P-384 and
RSA-3072/4096 ones. ECC coordinates are padded to the curve's size, as the TPM has them.
"""

from __future__ import annotations

import secrets
from typing import NamedTuple

from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFHMAC, CounterLocation, Mode
from tpm2_pytss.constants import TPM2_ALG  # type: ignore[import-untyped]

from ceremony.attestation.ek_cert import PublicKey

_HASHES: dict[int, type[hashes.HashAlgorithm]] = {
    TPM2_ALG.SHA256: hashes.SHA256,
    TPM2_ALG.SHA384: hashes.SHA384,
    TPM2_ALG.SHA512: hashes.SHA512,
}
_AES_BITS = (128, 192, 256)
_IDENTITY = b"IDENTITY\x00"


class EKParameters(NamedTuple):
    """What MakeCredential uses of the EK: its key and, from its TPMT_PUBLIC, the name
    algorithm and parameters.symmetric (algorithm, key bits, mode)."""

    key: PublicKey
    name_alg: int
    symmetric: int
    symmetric_bits: int
    symmetric_mode: int
    # An ECC EK's x coordinate as its public area holds it (unique.ecc.x), which KDFe
    # takes; when empty it is read from the key, which costs 30 µs on P-384.
    ecc_x: bytes = b""


def _tpm2b(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def kdfa(
    algorithm: hashes.HashAlgorithm, key: bytes, label: bytes, context: bytes, length: int
) -> bytes:
    """KDFa (Part 1 §11.4.10.2): HMAC(key, [i]32 || label || 00 || context || [bits]32)
    for i = 1, 2, ...; ``label`` without its zero, which KBKDFHMAC adds."""
    kdf = KBKDFHMAC(
        algorithm, Mode.CounterMode, length, 4, 4, CounterLocation.BeforeFixed, label, context, None
    )
    return kdf.derive(key)


def _seed(parameters: EKParameters, algorithm: hashes.HashAlgorithm) -> tuple[bytes, bytes]:
    """The seed and its TPM2B_ENCRYPTED_SECRET contents (Annex B.10.4, C.6.4)."""
    ek = parameters.key
    if isinstance(ek, rsa.RSAPublicKey):
        seed = secrets.token_bytes(algorithm.digest_size)
        oaep = padding.OAEP(padding.MGF1(algorithm), algorithm, _IDENTITY)
        return seed, ek.encrypt(seed, oaep)
    ephemeral = ec.generate_private_key(ek.curve)
    z = ephemeral.exchange(ec.ECDH(), ek)
    width = (ek.curve.key_size + 7) // 8
    point = ephemeral.public_key().public_numbers()
    x, y = point.x.to_bytes(width, "big"), point.y.to_bytes(width, "big")
    ek_x = int.from_bytes(parameters.ecc_x, "big") if parameters.ecc_x else ek.public_numbers().x
    # KDFe(nameAlg, Z, Use, PartyUInfo, PartyVInfo): Hash([i]32 || Z || Use || U || V).
    other_info = _IDENTITY + x + ek_x.to_bytes(width, "big")
    seed = ConcatKDFHash(algorithm, algorithm.digest_size, other_info).derive(z)
    return seed, _tpm2b(x) + _tpm2b(y)


def make_credential(ek: EKParameters, credential: bytes, name: bytes) -> tuple[bytes, bytes]:
    """TPM2_MakeCredential(EK, credential, name): the marshalled TPM2B_ID_OBJECT and
    TPM2B_ENCRYPTED_SECRET that TPM2_ActivateCredential takes.

    Raises ValueError when the EK's parameters cannot protect a credential: a name
    algorithm other than SHA-256/384/512, a symmetric cipher other than AES in CFB mode
    (what a restricted decryption key has), or a credential longer than the name digest
    (the TPM refuses it, Part 3 TPM2_MakeCredential).
    """
    hash_class = _HASHES.get(ek.name_alg)
    if hash_class is None:
        raise ValueError(f"the EK's name algorithm {ek.name_alg:#x} is not SHA-256/384/512")
    if ek.symmetric != TPM2_ALG.AES or ek.symmetric_mode != TPM2_ALG.CFB:
        raise ValueError("the EK's symmetric cipher is not AES in CFB mode")
    if ek.symmetric_bits not in _AES_BITS:
        raise ValueError(f"the EK's AES key size {ek.symmetric_bits} is not 128, 192 or 256")
    if not isinstance(ek.key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise ValueError("the EK is neither an RSA nor an ECC key")
    algorithm = hash_class()
    if len(credential) > algorithm.digest_size:
        raise ValueError("the credential is longer than the EK's name digest")
    seed, encrypted_seed = _seed(ek, algorithm)
    sym_key = kdfa(algorithm, seed, b"STORAGE", name, ek.symmetric_bits // 8)
    encryptor = Cipher(algorithms.AES(sym_key), CFB(bytes(16))).encryptor()
    identity = encryptor.update(_tpm2b(credential)) + encryptor.finalize()
    mac = hmac.HMAC(kdfa(algorithm, seed, b"INTEGRITY", b"", algorithm.digest_size), algorithm)
    mac.update(identity + name)
    return _tpm2b(_tpm2b(mac.finalize()) + identity), _tpm2b(encrypted_seed)
