"""Baselines for ``bench.ceremony``: what a TPM enrollment costs before any of this code's
own work, the figures the server's time per enrollment is judged against.

* ``raw crypto``: what an enrollment cannot avoid, done with ``cryptography`` directly on
  the same keys and structures (MakeCredential checked once against the TPM);
* ``verification only``: ``tpm_verify``'s functions as the ceremony calls them, no database;
* ``floor``: the raw crypto plus the storage's three round trips as bare as they get, on
  the driver's own connection.

``bench.ceremony`` measures them in the same run as the server's time, on the same device
material and the same database: a ratio of two figures taken on the same machine, under
the same load, holds whatever the machine's speed.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFHMAC, CounterLocation, Mode
from tpm2_pytss.constants import TPM2_ALG  # type: ignore[import-untyped]
from tpm2_pytss.types import TPM2B_PUBLIC, TPMS_ATTEST, TPMT_SIGNATURE  # type: ignore[import-untyped]

from ceremony.agent.tpm import AttestationKey, DeviceTPM, EkType, Quote
from ceremony.attestation import tpm_verify
from ceremony.enroll import verification_request
from ceremony.protocol import QUOTED_PCRS, TPMAttestation
from inventory.db import create_db_engine

HASHES: dict[int, hashes.HashAlgorithm] = {
    TPM2_ALG.SHA256: hashes.SHA256(),
    TPM2_ALG.SHA384: hashes.SHA384(),
}


# -- the device's material: what the baselines work on -------------------------------------


@dataclass(frozen=True)
class Material:
    """What one device sends to enroll, and one quote of its for the loops without a TPM."""

    ek: EkType
    ek_template: str
    ek_cert: bytes | None
    ek_public: bytes
    ak: AttestationKey
    quote: Quote
    quote_nonce: bytes

    def attestation(self) -> TPMAttestation:
        return TPMAttestation(
            ek_cert=self.ek_cert,
            ek_public=self.ek_public,
            ak_public=self.ak.public,
            creation_data=self.ak.creation_data,
            creation_attestation=self.ak.creation_attestation,
            creation_signature=self.ak.creation_signature,
        )


# -- raw crypto: what an enrollment cannot avoid -------------------------------------------


@dataclass(frozen=True)
class RawInputs:
    """The numbers and bytes the raw operations work on, taken out of the TPM structures
    beforehand (parsing is what the raw figure leaves out)."""

    ak: rsa.RSAPublicNumbers | ec.EllipticCurvePublicNumbers
    ak_area: bytes  # the TPMT_PUBLIC whose digest is the AK's name
    creation_data: bytes
    creation_hash: bytes
    creation_body: bytes
    creation_signature: bytes
    quote_body: bytes
    quote_signature: bytes
    quote_nonce: bytes
    nonce: bytes
    pcr_digest: bytes
    pcr_values: tuple[bytes, ...]
    ek: rsa.RSAPublicNumbers | ec.EllipticCurvePublicNumbers
    ek_hash: hashes.HashAlgorithm  # the EK's name algorithm
    ek_sym_bits: int


def _signature(marshalled: bytes) -> bytes:
    sig, _ = TPMT_SIGNATURE.unmarshal(marshalled)
    if sig.sigAlg == TPM2_ALG.RSASSA:
        return bytes(sig.signature.rsassa.sig)
    return encode_dss_signature(
        int.from_bytes(bytes(sig.signature.ecdsa.signatureR), "big"),
        int.from_bytes(bytes(sig.signature.ecdsa.signatureS), "big"),
    )


def raw_inputs(m: Material) -> RawInputs:
    ek_area = TPM2B_PUBLIC.unmarshal(m.ek_public)[0].publicArea
    creation = TPMS_ATTEST.unmarshal(m.ak.creation_attestation[2:])[0]
    quoted = TPMS_ATTEST.unmarshal(m.quote.attestation[2:])[0]
    return RawInputs(
        ak=tpm_verify.ek_public_key(m.ak.public).public_numbers(),  # any TPM2B_PUBLIC's key
        ak_area=m.ak.public[2:],
        creation_data=m.ak.creation_data[2:],
        creation_hash=bytes(creation.attested.creation.creationHash),
        creation_body=m.ak.creation_attestation[2:],
        creation_signature=_signature(m.ak.creation_signature),
        quote_body=m.quote.attestation[2:],
        quote_signature=_signature(m.quote.signature),
        quote_nonce=bytes(quoted.extraData),
        nonce=m.quote_nonce,
        pcr_digest=bytes(quoted.attested.quote.pcrDigest),
        pcr_values=tuple(m.quote.pcr_values[i] for i in sorted(m.quote.pcr_values)),
        ek=tpm_verify.ek_public_key(m.ek_public).public_numbers(),
        ek_hash=HASHES[int(ek_area.nameAlg)],
        ek_sym_bits=int(ek_area.parameters.asymDetail.symmetric.keyBits.sym),
    )


def _verify(key: Any, signature: bytes, message: bytes) -> None:
    if isinstance(key, rsa.RSAPublicKey):
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    else:
        key.verify(signature, message, ec.ECDSA(hashes.SHA256()))


def _kdfa(
    algorithm: hashes.HashAlgorithm, seed: bytes, label: bytes, context: bytes, length: int
) -> bytes:
    return KBKDFHMAC(
        algorithm,
        Mode.CounterMode,
        length,
        4,
        4,
        CounterLocation.BeforeFixed,
        label,
        context,
        None,
    ).derive(seed)


def _tpm2b(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def make_credential(r: RawInputs, secret: bytes, name: bytes) -> tuple[bytes, bytes]:
    """TPM2_MakeCredential's math; returns the marshalled TPM2B_ID_OBJECT and
    TPM2B_ENCRYPTED_SECRET."""
    algorithm, size = r.ek_hash, r.ek_hash.digest_size
    ek = r.ek.public_key()
    if isinstance(ek, rsa.RSAPublicKey):
        seed = secrets.token_bytes(size)
        oaep = padding.OAEP(padding.MGF1(algorithm), algorithm, b"IDENTITY\x00")
        encrypted_seed = ek.encrypt(seed, oaep)
    else:
        ephemeral = ec.generate_private_key(ek.curve)
        shared = ephemeral.exchange(ec.ECDH(), ek)
        point = ephemeral.public_key().public_numbers()
        width = (ek.curve.key_size + 7) // 8
        x, y = point.x.to_bytes(width, "big"), point.y.to_bytes(width, "big")
        other = b"IDENTITY\x00" + x + ek.public_numbers().x.to_bytes(width, "big")
        seed = ConcatKDFHash(algorithm, size, other).derive(shared)
        encrypted_seed = _tpm2b(x) + _tpm2b(y)
    key = _kdfa(algorithm, seed, b"STORAGE", name, r.ek_sym_bits // 8)
    encryptor = Cipher(algorithms.AES(key), CFB(bytes(16))).encryptor()
    credential = encryptor.update(_tpm2b(secret)) + encryptor.finalize()
    mac = hmac.new(
        _kdfa(algorithm, seed, b"INTEGRITY", b"", size), credential + name, algorithm.name
    ).digest()
    return _tpm2b(_tpm2b(mac) + credential), _tpm2b(encrypted_seed)


def raw_enrollment(r: RawInputs, marks: list[tuple[str, float]]) -> None:
    """One enrollment's unavoidable crypto; the end of each step is appended to ``marks``."""
    ak = r.ak.public_key()
    name = r.ak_area[2:4] + hashlib.sha256(r.ak_area).digest()
    if not hmac.compare_digest(hashlib.sha256(r.creation_data).digest(), r.creation_hash):
        raise AssertionError("creation hash")
    _verify(ak, r.creation_signature, r.creation_body)
    marks.append(("AK creation signature", time.perf_counter()))
    secret, _nonce = secrets.token_bytes(32), secrets.token_bytes(32)  # the challenge's
    make_credential(r, secret, name)
    marks.append(("MakeCredential", time.perf_counter()))
    if not hmac.compare_digest(secret, bytes(secret)):  # the activated secret sent back
        raise AssertionError("secret")
    _verify(ak, r.quote_signature, r.quote_body)
    marks.append(("quote signature", time.perf_counter()))
    if not hmac.compare_digest(r.quote_nonce, r.nonce):
        raise AssertionError("nonce")
    if not hmac.compare_digest(hashlib.sha256(b"".join(r.pcr_values)).digest(), r.pcr_digest):
        raise AssertionError("PCR digest")
    marks.append(("PCRs and comparisons", time.perf_counter()))


def _raw_once(r: RawInputs, totals: list[float], steps: dict[str, list[float]]) -> None:
    marks = [("", time.perf_counter())]
    raw_enrollment(r, marks)
    totals.append(marks[-1][1] - marks[0][1])
    for (_, before), (step, after) in itertools.pairwise(marks):
        steps.setdefault(step, []).append(after - before)


@dataclass
class CryptoTimes:
    """Seconds per enrollment: the raw crypto (in all and per step) and the verification."""

    raw: list[float]
    raw_steps: dict[str, list[float]]
    verification: list[float]


def time_raw_and_verification(m: Material, r: RawInputs, iterations: int) -> CryptoTimes:
    """The raw crypto and the verification, alternating one of each: both medians are taken
    under the same load, so their ratio holds on a machine whose speed drifts (shared
    machines do, by 1.5x from one second to the next)."""
    times = CryptoTimes([], {}, [])
    sent = m.attestation()
    for _ in range(iterations):
        _raw_once(r, times.raw, times.raw_steps)
        began = time.perf_counter()
        verification_only(m, sent)
        times.verification.append(time.perf_counter() - began)
    return times


def check_make_credential(tpm: DeviceTPM, m: Material, r: RawInputs) -> None:
    """The raw MakeCredential is only a fair baseline if the TPM can activate what it makes."""
    secret = secrets.token_bytes(32)
    name = r.ak_area[2:4] + hashlib.sha256(r.ak_area).digest()
    if name != m.ak.name:
        raise SystemExit("bench: the raw AK name differs from the TPM's")
    blob, encrypted = make_credential(r, secret, name)
    if tpm.activate_credential(m.ak, blob, encrypted) != secret:
        raise SystemExit("bench: the TPM activated another secret than the raw MakeCredential's")


# -- the floor: raw crypto and the storage's bare round trips ------------------------------


FLOOR_TABLE = "bench_floor"


@contextmanager
def floor_timer(url: str, r: RawInputs) -> Iterator[Callable[[int], list[float]]]:
    """A function that times ``iterations`` enrollments' worth of what no implementation of
    this protocol avoids on this machine and database, and returns seconds per
    enrollment: the raw crypto, and the three statements' round trips as bare as they get,
    on the driver's connection, back to back: the first round trip a one-row write (the
    challenge, not waiting for the disk), the second a one-row read (the challenge) and a
    one-row write (the enrollment, durable). Called between the server's batches, so that
    both are measured under the same load."""
    engine = create_db_engine(url)
    pooled = engine.raw_connection()
    try:
        driver: Any = pooled.driver_connection
        if engine.dialect.name == "postgresql":
            driver.autocommit = True
            no_wait = "SELECT set_config('synchronous_commit', 'off', true)"
        else:  # SQLite commits each statement outside a BEGIN here, as the ceremony's do
            no_wait = "SELECT 1"
        driver.execute(f"CREATE TABLE {FLOOR_TABLE} (id INTEGER PRIMARY KEY, v TEXT)")
        write = f"INSERT INTO {FLOOR_TABLE} (id, v) SELECT %s, 'x' WHERE ({no_wait}) IS NOT NULL"
        if engine.dialect.name == "sqlite":
            write = write.replace("%s", "?")
        ids = itertools.count()

        def run(iterations: int) -> list[float]:
            times = []
            for _ in range(iterations):
                began = time.perf_counter()
                raw_enrollment(r, [])
                driver.execute(write, (next(ids),))
                driver.execute("SELECT 1").fetchall()
                driver.execute(write.replace(no_wait, "SELECT 1"), (next(ids),))
                times.append(time.perf_counter() - began)
            return times

        yield run
        driver.execute(f"DROP TABLE {FLOOR_TABLE}")
    finally:
        pooled.close()
        engine.dispose()


# -- verification only: tpm_verify as the ceremony calls it --------------------------------


def verification_only(m: Material, sent: TPMAttestation) -> None:
    """The calls of ``ceremony.enroll._tpm_challenge`` and ``_verify_tpm_answer``, on
    what the device ``sent`` (``m.attestation()``, parsed once, as the service does)."""
    request = verification_request(sent)
    ak = tpm_verify.check_ak(request)
    ek = tpm_verify.examine_ek(request, None)
    challenge = tpm_verify.make_challenge(ek, ak.name)
    tpm_verify.verify_activation(challenge, challenge.secret)
    quote = tpm_verify.SentQuote(m.quote.attestation, m.quote.signature, m.quote.pcr_values)
    tpm_verify.verify_quotes(ak.public, m.quote_nonce, [quote], expected_pcrs=QUOTED_PCRS)
