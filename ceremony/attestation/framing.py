"""How each TPM structure may be framed on the wire, and its marshalled size limit.

The device agent sends the TPM2B forms, size prefix included, as the TPM's own commands
return them (TPM2B_PUBLIC, TPM2B_CREATION_DATA, TPM2B_ATTEST). Agents built on
go-attestation send the bare structures inside them instead (TPMT_PUBLIC,
TPMS_CREATION_DATA, TPMS_ATTEST: its ``AttestationParameters`` and ``PlatformParameters``
hold what go-tpm decodes out of the TPM2B). Both are accepted, and which one was sent is
unambiguous:

- a TPM2B's 2-byte size is the length of what follows, exactly;
- a bare TPMS_ATTEST starts with TPM_GENERATED_VALUE (0xff544347): as a TPM2B size that
  would be 65364 bytes, more than any structure may be;
- a bare TPMT_PUBLIC starts with its type (RSA 0x0001, ECC 0x0023, KEYEDHASH 0x0008,
  SYMCIPHER 0x0025): as a size, 1 to 37 bytes, less than any public area with a key;
- a bare TPMS_CREATION_DATA starts with its PCR selection's 4-byte count, at most 16:
  its first two bytes are zero, a size that only an empty TPM2B (2 bytes long) has.

``tpm2b_*`` return the TPM2B form of either (so what is stored, named and hashed is the
same whichever an agent sent), or refuse what is neither with a message saying a size
prefix was expected. Pure functions over bytes, no TPM library: the service's request
models use them too (``ceremony.protocol``).
"""

from __future__ import annotations

from typing import Literal

from ceremony.errors import AttestationError

# Every TPM structure a device sends is far smaller (an RSA-4096 public area is about 600
# bytes); a limit on the marshalled bytes, size prefix included, checked before parsing.
MAX_STRUCTURE = 4096
TPM_GENERATED = b"\xff\x54\x43\x47"  # TPM_GENERATED_VALUE, the first field of a TPMS_ATTEST
_PUBLIC_TYPES = frozenset({0x0001, 0x0008, 0x0023, 0x0025})  # TPMI_ALG_PUBLIC
_MAX_PCR_SELECTIONS = 16  # TPML_PCR_SELECTION.count: one per hash algorithm at most

Framing = Literal["tpm2b", "bare"]


def _size_prefixed(data: bytes) -> bool:
    return len(data) >= 2 and int.from_bytes(data[:2], "big") == len(data) - 2


def public_framing(data: bytes) -> Framing | None:
    """ "tpm2b" for a TPM2B_PUBLIC, "bare" for a TPMT_PUBLIC, None for neither."""
    if _size_prefixed(data):
        return "tpm2b"
    if len(data) > 2 and int.from_bytes(data[:2], "big") in _PUBLIC_TYPES:
        return "bare"
    return None


def creation_data_framing(data: bytes) -> Framing | None:
    """ "tpm2b" for a TPM2B_CREATION_DATA, "bare" for a TPMS_CREATION_DATA, None for neither."""
    if _size_prefixed(data):
        return "tpm2b"
    if len(data) >= 4 and int.from_bytes(data[:4], "big") <= _MAX_PCR_SELECTIONS:
        return "bare"
    return None


def attest_framing(data: bytes) -> Framing | None:
    """ "tpm2b" for a TPM2B_ATTEST, "bare" for a TPMS_ATTEST, None for neither."""
    if _size_prefixed(data):
        return "tpm2b"
    if data[:4] == TPM_GENERATED:
        return "bare"
    return None


_FRAMINGS = {
    "TPM2B_PUBLIC": ("TPMT_PUBLIC", public_framing),
    "TPM2B_CREATION_DATA": ("TPMS_CREATION_DATA", creation_data_framing),
    "TPM2B_ATTEST": ("TPMS_ATTEST", attest_framing),
}


def reframed(tpm2b: str, data: bytes) -> bytes:
    """``data`` as the TPM2B ``tpm2b`` when it is that or the bare structure inside it;
    anything else unchanged, for the verifier to refuse with its reason."""
    _, framing = _FRAMINGS[tpm2b]
    if framing(data) == "bare" and len(data) <= MAX_STRUCTURE - 2:
        return len(data).to_bytes(2, "big") + data
    return data


def as_tpm2b(tpm2b: str, data: bytes, what: str, error: type[AttestationError]) -> bytes:
    """The TPM2B ``tpm2b`` (e.g. "TPM2B_ATTEST") of ``data``, which is either that or the
    bare structure inside it; else ``error`` saying a size prefix was expected."""
    if (
        type(data) is bytes
        and 2 <= len(data) <= MAX_STRUCTURE
        and data[0] << 8 | data[1] == len(data) - 2
    ):
        return data  # the usual case, size-prefixed, checked first and cheaply
    bare, framing = _FRAMINGS[tpm2b]
    if not isinstance(data, bytes | bytearray):
        raise error(f"the {what} must be bytes, not {type(data).__name__}")
    if len(data) > MAX_STRUCTURE:
        raise error(f"the {what} is {len(data)} bytes, more than the {MAX_STRUCTURE} allowed")
    data = bytes(data)
    found = framing(data)
    if found == "tpm2b":
        return data
    if found == "bare":
        if len(data) > MAX_STRUCTURE - 2:
            raise error(f"the {what} is {len(data)} bytes, more than the {MAX_STRUCTURE} allowed")
        return len(data).to_bytes(2, "big") + data
    expected = f"expected a 2-byte size prefix ({tpm2b}) or a bare {bare}"
    if len(data) < 2:
        raise error(f"the {what} is truncated: {expected}, got {len(data)} bytes")
    said, follow = int.from_bytes(data[:2], "big"), len(data) - 2
    if said > follow:
        problem = f"is truncated or not size-prefixed: {expected}"
    else:
        problem = f"has {follow - said} trailing bytes or is not size-prefixed: {expected}"
    raise error(f"the {what} {problem}; its first 2 bytes say {said} bytes follow, {follow} do")
