"""The TPM structures a device sends, unmarshalled by tpm2-tss and read into plain values.

tpm2-tss's marshalling library (Tss2_MU, through tpm2-pytss's bindings) unmarshals every
structure and checks its sizes and union selectors; nothing here parses TPM bytes by
hand. What is not used is tpm2-pytss's Python objects: each attribute read goes through
``__getattribute__`` and a cffi conversion, each nested structure builds a wrapper
(about 2 µs a field, 10 µs a TPM2B, 4 µs a wrapper per unmarshal), which made parsing,
not the cryptography, most of the server's verification time. So each structure is
unmarshalled once into the C structure tpm2-pytss's ``TPM_OBJECT.unmarshal`` would fill,
with the same Tss2_MU function and the same TSS2_Exception on failure, and its fields are
read from it through tpm2-pytss's ``ffi`` into the named tuples below (about 0.1 µs a
field). tests/unit/test_tpm_structures.py reads real structures both ways, so a
tpm2-pytss release that changes its bindings fails there.

Every refusal is the caller's AttestationError kind, naming the structure. Each function
takes the TPM2B form; ``framing`` turns the bare structures go-attestation sends into it.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

from tpm2_pytss import TSS2_Exception  # type: ignore[import-untyped]
from tpm2_pytss._libtpm2_pytss import ffi, lib  # type: ignore[import-untyped]
from tpm2_pytss.constants import TPM2_ALG, TPM2_ST  # type: ignore[import-untyped]

from ceremony.attestation.framing import MAX_STRUCTURE as MAX_STRUCTURE
from ceremony.errors import AttestationError

PARSE_ERRORS = (TSS2_Exception, ValueError, IndexError, TypeError, OverflowError, KeyError)

_UNMARSHAL = {
    name: getattr(lib, f"Tss2_MU_{name}_Unmarshal")
    for name in ("TPM2B_PUBLIC", "TPM2B_CREATION_DATA", "TPMS_ATTEST", "TPMT_SIGNATURE")
}


class PublicArea(NamedTuple):
    """A TPMT_PUBLIC: what the checks read of it; the key's fields for its type only."""

    contents: bytes  # the marshalled TPMT_PUBLIC as sent: the key's name is its digest
    type: int
    name_alg: int
    attributes: int
    symmetric: int  # parameters.symmetric, for RSA and ECC keys: algorithm, bits, mode
    symmetric_bits: int
    symmetric_mode: int
    rsa_bits: int
    rsa_exponent: int
    rsa_modulus: bytes
    curve: int
    ecc_x: bytes
    ecc_y: bytes


class Attestation(NamedTuple):
    """A TPMS_ATTEST; the creation fields for a creation certification, the quote's for a
    quote, else empty."""

    signed: bytes  # the marshalled TPMS_ATTEST, what the key signed
    magic: int
    type: int
    extra_data: bytes
    object_name: bytes
    creation_hash: bytes
    pcr_banks: int  # pcrSelect.count; the first bank's selection follows
    pcr_bank: int
    pcr_select_size: int
    pcr_select: bytes  # the whole bitmap, pcr_select_size not applied
    pcr_digest: bytes


class Signature(NamedTuple):
    """A TPMT_SIGNATURE by RSASSA or ECDSA; of other schemes, only the algorithm."""

    algorithm: int
    hash: int
    rsa: bytes
    ecdsa_r: bytes
    ecdsa_s: bytes


def _buffer(tpm2b: Any) -> bytes:
    """A TPM2B's bytes (Tss2_MU refuses a size beyond the buffer)."""
    data: bytes = ffi.buffer(tpm2b.buffer)[: tpm2b.size]
    return data


def unmarshal(type_name: str, data: bytes, what: str, error: type[AttestationError]) -> Any:
    """The C structure ``type_name`` (a TPM2B_PUBLIC, ...) unmarshalled from all of ``data``.

    Structures read inside it live as long as it does: keep it while reading them.
    """
    if not isinstance(data, bytes | bytearray):
        raise error(f"the {what} must be bytes, not {type(data).__name__}")
    if len(data) > MAX_STRUCTURE:
        raise error(f"the {what} is {len(data)} bytes, more than the {MAX_STRUCTURE} allowed")
    parsed = ffi.new(f"{type_name} *")
    used = ffi.new("size_t *")
    rc = _UNMARSHAL[type_name](bytes(data), len(data), used, parsed)
    if rc:
        exc = TSS2_Exception(rc)
        raise error(f"the {what} is malformed or truncated ({exc})") from exc
    if used[0] != len(data):
        raise error(f"the {what} has {len(data) - used[0]} trailing bytes")
    return parsed


def public_area(data: bytes, what: str, error: type[AttestationError]) -> PublicArea:
    """A marshalled TPM2B_PUBLIC's TPMT_PUBLIC."""
    owner = unmarshal("TPM2B_PUBLIC", data, what, error)
    area = owner.publicArea
    kind = area.type
    symmetric = bits = mode = rsa_bits = exponent = curve = 0
    modulus = x = y = b""
    if kind == TPM2_ALG.RSA or kind == TPM2_ALG.ECC:
        sym = area.parameters.asymDetail.symmetric
        symmetric, bits, mode = sym.algorithm, sym.keyBits.sym, sym.mode.sym
    if kind == TPM2_ALG.RSA:
        detail = area.parameters.rsaDetail
        rsa_bits, exponent = detail.keyBits, detail.exponent
        modulus = _buffer(area.unique.rsa)
    elif kind == TPM2_ALG.ECC:
        curve = area.parameters.eccDetail.curveID
        point = area.unique.ecc
        x, y = _buffer(point.x), _buffer(point.y)
    # Tss2_MU does not check the TPM2B's size, and all of data was used: the TPMT_PUBLIC
    # unmarshalled is exactly what follows the size.
    return PublicArea(
        contents=bytes(data[2:]),
        type=kind,
        name_alg=area.nameAlg,
        attributes=area.objectAttributes,
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


def creation_data(data: bytes, what: str, error: type[AttestationError]) -> None:
    """A marshalled TPM2B_CREATION_DATA is well formed (its digest is what is checked)."""
    unmarshal("TPM2B_CREATION_DATA", data, what, error)


def attestation(data: bytes, what: str, error: type[AttestationError]) -> Attestation:
    """A marshalled TPM2B_ATTEST's TPMS_ATTEST, and the bytes the key signed (its contents)."""
    if not isinstance(data, bytes | bytearray) or len(data) < 2:
        raise error(f"the {what} is malformed or truncated (no TPM2B size)")
    if len(data) > MAX_STRUCTURE:
        raise error(f"the {what} is {len(data)} bytes, more than the {MAX_STRUCTURE} allowed")
    (size,) = struct.unpack(">H", data[:2])
    body = bytes(data[2:])
    if len(body) < size:
        raise error(f"the {what} is truncated: {len(body)} of {size} bytes")
    if len(body) > size:
        raise error(f"the {what} has {len(body) - size} trailing bytes")
    owner = unmarshal("TPMS_ATTEST", body, what, error)
    kind = owner.type
    name = creation_hash = select = digest = b""
    banks = bank = select_size = 0
    if kind == TPM2_ST.ATTEST_CREATION:
        creation = owner.attested.creation
        name = ffi.buffer(creation.objectName.name)[: creation.objectName.size]
        creation_hash = _buffer(creation.creationHash)
    elif kind == TPM2_ST.ATTEST_QUOTE:
        quote = owner.attested.quote
        banks = quote.pcrSelect.count
        if banks:  # none selected: nothing to read (the quote is refused for it)
            first = quote.pcrSelect.pcrSelections[0]
            bank, select_size = first.hash, first.sizeofSelect
            select = ffi.buffer(first.pcrSelect)[:]
        digest = _buffer(quote.pcrDigest)
    return Attestation(
        signed=body,
        magic=owner.magic,
        type=kind,
        extra_data=_buffer(owner.extraData),
        object_name=name,
        creation_hash=creation_hash,
        pcr_banks=banks,
        pcr_bank=bank,
        pcr_select_size=select_size,
        pcr_select=select,
        pcr_digest=digest,
    )


def signature(data: bytes, what: str, error: type[AttestationError]) -> Signature:
    """A marshalled TPMT_SIGNATURE."""
    owner = unmarshal("TPMT_SIGNATURE", data, what, error)
    algorithm = owner.sigAlg
    if algorithm == TPM2_ALG.RSASSA:
        rsa = owner.signature.rsassa
        return Signature(algorithm, rsa.hash, _buffer(rsa.sig), b"", b"")
    if algorithm == TPM2_ALG.ECDSA:
        ecdsa = owner.signature.ecdsa
        return Signature(
            algorithm, ecdsa.hash, b"", _buffer(ecdsa.signatureR), _buffer(ecdsa.signatureS)
        )
    return Signature(algorithm, 0, b"", b"", b"")
