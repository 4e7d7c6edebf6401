"""tpm_structures reads what tpm2-pytss's own objects read from the same bytes.

It unmarshals with tpm2-pytss's bindings and reads the C structures directly (for speed);
these tests read real structures, and mutations of them, through tpm2-pytss's public
objects as well and compare field by field, so a tpm2-pytss release that changes its
bindings, or a field read from the wrong place, fails here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tpm2_pytss import TSS2_Exception  # type: ignore[import-untyped]
from tpm2_pytss.constants import TPM2_ALG, TPM2_ST  # type: ignore[import-untyped]
from tpm2_pytss.types import (  # type: ignore[import-untyped]
    TPM2B_CREATION_DATA,
    TPM2B_PUBLIC,
    TPMS_ATTEST,
    TPMS_SIGNATURE_RSA,
    TPMT_SIGNATURE,
    TPMU_SIGNATURE,
)

from ceremony.attestation import tpm_structures
from ceremony.attestation.tpm_structures import Attestation, PublicArea, Signature
from ceremony.attestation.tpm_verify import check_ak, ek_public_key
from ceremony.errors import AKError, AttestationError, EKCertificateError
from tests.unit.test_tpm_verify_fuzz import (
    AK_PUBLIC,
    CREATION_ATTESTATION,
    CREATION_DATA,
    CREATION_SIGNATURE,
    EK_PUBLIC_ECC,
    EK_PUBLIC_RSA,
    FUZZ,
    QUOTE,
    QUOTE_SIGNATURE,
    REQUEST,
    fuzz_bytes,
)

RSA_SIGNATURE = bytes(
    TPMT_SIGNATURE(
        sigAlg=TPM2_ALG.RSASSA,
        signature=TPMU_SIGNATURE(
            rsassa=TPMS_SIGNATURE_RSA(hash=TPM2_ALG.SHA256, sig=bytes(range(256)))
        ),
    ).marshal()
)


# tpm2-pytss's public objects, read attribute by attribute


def _unmarshalled(cls: Any, data: bytes) -> Any:
    parsed, used = cls.unmarshal(data)
    if used != len(data):
        raise ValueError(f"{len(data) - used} trailing bytes")
    return parsed


def public_area_by_pytss(data: bytes) -> PublicArea:
    area = _unmarshalled(TPM2B_PUBLIC, data).publicArea
    kind = int(area.type)
    symmetric = bits = mode = rsa_bits = exponent = curve = 0
    modulus = x = y = b""
    if kind in (TPM2_ALG.RSA, TPM2_ALG.ECC):
        sym = area.parameters.asymDetail.symmetric
        symmetric, bits, mode = int(sym.algorithm), int(sym.keyBits.sym), int(sym.mode.sym)
    if kind == TPM2_ALG.RSA:
        rsa_bits = int(area.parameters.rsaDetail.keyBits)
        exponent = int(area.parameters.rsaDetail.exponent)
        modulus = bytes(area.unique.rsa)
    elif kind == TPM2_ALG.ECC:
        curve = int(area.parameters.eccDetail.curveID)
        x, y = bytes(area.unique.ecc.x), bytes(area.unique.ecc.y)
    # tpm2-pytss's own marshalling, the TPM's; Tss2_MU reads nothing after a lone size.
    contents = bytes(area.marshal()) if len(data) > 2 else b""
    return PublicArea(
        contents=contents,
        type=kind,
        name_alg=int(area.nameAlg),
        attributes=int(area.objectAttributes),
        symmetric=symmetric,
        symmetric_bits=bits,
        symmetric_mode=mode,
        rsa_bits=rsa_bits,
        rsa_exponent=exponent,
        rsa_modulus=modulus,
        curve=curve,
        ecc_x=x,
        ecc_y=y,
    )


def attestation_by_pytss(body: bytes) -> Attestation:
    attest = _unmarshalled(TPMS_ATTEST, body)
    kind = int(attest.type)
    name = creation_hash = select = digest = b""
    banks = bank = select_size = 0
    if kind == TPM2_ST.ATTEST_CREATION:
        creation = attest.attested.creation
        name, creation_hash = bytes(creation.objectName), bytes(creation.creationHash)
    elif kind == TPM2_ST.ATTEST_QUOTE:
        quote = attest.attested.quote
        banks = int(quote.pcrSelect.count)
        if banks:  # tpm2-pytss lists only the selections there are
            first = quote.pcrSelect.pcrSelections[0]
            bank, select_size, select = (
                int(first.hash),
                int(first.sizeofSelect),
                bytes(first.pcrSelect),
            )
        digest = bytes(quote.pcrDigest)
    return Attestation(
        signed=body,
        magic=int(attest.magic),
        type=kind,
        extra_data=bytes(attest.extraData),
        object_name=name,
        creation_hash=creation_hash,
        pcr_banks=banks,
        pcr_bank=bank,
        pcr_select_size=select_size,
        pcr_select=select,
        pcr_digest=digest,
    )


def signature_by_pytss(data: bytes) -> Signature:
    sig = _unmarshalled(TPMT_SIGNATURE, data)
    algorithm = int(sig.sigAlg)
    if algorithm == TPM2_ALG.RSASSA:
        rsa = sig.signature.rsassa
        return Signature(algorithm, int(rsa.hash), bytes(rsa.sig), b"", b"")
    if algorithm == TPM2_ALG.ECDSA:
        ecdsa = sig.signature.ecdsa
        r, s = bytes(ecdsa.signatureR), bytes(ecdsa.signatureS)
        return Signature(algorithm, int(ecdsa.hash), b"", r, s)
    return Signature(algorithm, 0, b"", b"", b"")


def _tpm2b(body: bytes) -> bytes:
    return len(body).to_bytes(2, "big") + body


def read_both_ways(data: bytes, kind: str) -> tuple[object, object]:
    """(tpm_structures' reading, tpm2-pytss's) of ``data``; a refusal reads as its message."""
    ours: object
    theirs: object
    read: Callable[[bytes, str, type[AttestationError]], object]
    by_pytss: Callable[[bytes], object]
    if kind == "public":
        read, by_pytss = tpm_structures.public_area, public_area_by_pytss
    elif kind == "attestation":
        read, by_pytss = tpm_structures.attestation, attestation_by_pytss
    else:
        read, by_pytss = tpm_structures.signature, signature_by_pytss
    try:
        ours = read(_tpm2b(data) if kind == "attestation" else data, "structure", AttestationError)
    except AttestationError as exc:
        ours = str(exc)
    try:
        theirs = by_pytss(data)
    except TSS2_Exception as exc:
        theirs = f"the structure is malformed or truncated ({exc})"
    except ValueError as exc:
        theirs = f"the structure has {str(exc).split()[0]} trailing bytes"
    return ours, theirs


STRUCTURES = [
    (AK_PUBLIC, "public"),
    (EK_PUBLIC_ECC, "public"),
    (EK_PUBLIC_RSA, "public"),
    (CREATION_ATTESTATION[2:], "attestation"),
    (QUOTE[2:], "attestation"),
    (CREATION_SIGNATURE, "signature"),
    (QUOTE_SIGNATURE, "signature"),
    (RSA_SIGNATURE, "signature"),
]


@pytest.mark.parametrize(("data", "kind"), STRUCTURES)
def test_real_structures_read_as_tpm2_pytss_reads_them(data: bytes, kind: str) -> None:
    ours, theirs = read_both_ways(data, kind)
    assert isinstance(ours, tuple)
    assert ours == theirs


def test_the_name_over_the_bytes_sent_is_the_name_tpm2_pytss_computes() -> None:
    for data in (AK_PUBLIC, EK_PUBLIC_ECC, EK_PUBLIC_RSA):
        area = tpm_structures.public_area(data, "public area", AttestationError)
        digest = hashlib.new({0x0B: "sha256", 0x0C: "sha384"}[area.name_alg], area.contents)
        name = area.name_alg.to_bytes(2, "big") + digest.digest()
        assert name == bytes(TPM2B_PUBLIC.unmarshal(data)[0].publicArea.get_name())


def test_an_empty_public_area_holds_no_key() -> None:
    # Tss2_MU reads a TPM2B_PUBLIC of size 0 as a zeroed area; the checks then refuse it.
    area = tpm_structures.public_area(b"\x00\x00", "AK public area", AKError)
    assert (area.contents, area.type) == (b"", 0)
    with pytest.raises(AKError, match="^the AK is not a restricted signing key: restricted,"):
        check_ak(replace(REQUEST, ak_public=b"\x00\x00"))
    with pytest.raises(EKCertificateError, match="^the EK public area is neither an RSA nor"):
        ek_public_key(b"\x00\x00")


def test_a_quote_selecting_no_pcr_bank_reads_as_none_both_ways() -> None:
    # Found by the fuzz test below: with no selection there is no first one to read.
    quote = TPMS_ATTEST(magic=0xFF544347, type=TPM2_ST.ATTEST_QUOTE)
    quote.attested.quote.pcrDigest = b"\x01" * 32
    body = bytes(quote.marshal())
    ours, theirs = read_both_ways(body, "attestation")
    assert ours == theirs
    assert isinstance(ours, Attestation)
    assert (ours.pcr_banks, ours.pcr_bank, ours.pcr_select) == (0, 0, b"")
    assert ours.pcr_digest == b"\x01" * 32


def test_creation_data_is_unmarshalled_whole() -> None:
    tpm_structures.creation_data(CREATION_DATA, "AK creation data", AttestationError)
    TPM2B_CREATION_DATA.unmarshal(CREATION_DATA)
    with pytest.raises(AttestationError, match="^the AK creation data has 1 trailing bytes$"):
        tpm_structures.creation_data(CREATION_DATA + b"\x00", "AK creation data", AttestationError)


@FUZZ
@given(data=st.data(), which=st.sampled_from(STRUCTURES))
def test_mutated_structures_read_or_are_refused_as_tpm2_pytss_reads_them(
    data: st.DataObject, which: tuple[bytes, str]
) -> None:
    base, kind = which
    mutated = data.draw(fuzz_bytes(base))
    if len(mutated) > tpm_structures.MAX_STRUCTURE - 2:
        return  # refused before unmarshalling, for its size
    ours, theirs = read_both_ways(mutated, kind)
    assert ours == theirs
