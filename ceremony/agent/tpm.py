"""The device's TPM, through tpm2-pytss's ESAPI: its EK, an attestation key, activation, quotes.

The shapes follow go-attestation, which the reference system's agent uses: an RSA-2048
(or ECC P-256) restricted signing AK under a storage root key made from the standard SRK
template, certified over its own creation; credential activation with the EK authorised
by PolicySecret(endorsement). Everything leaves here as marshalled TPM structures (the
TPM2B forms, size prefix included) so the server parses exactly what the TPM produced.

Only the AK's blobs are kept (in the agent's state directory); the EK and SRK are
recreated from their templates, which gives the same keys every time, and nothing is made
persistent in the TPM.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tpm2_pytss import ESAPI, TSS2_Exception  # type: ignore[import-untyped]
from tpm2_pytss.constants import (  # type: ignore[import-untyped]
    ESYS_TR,
    TPM2_ALG,
    TPM2_RC,
    TPM2_SE,
    TPMA_OBJECT,
)
from tpm2_pytss.types import (  # type: ignore[import-untyped]
    TPM2B_ENCRYPTED_SECRET,
    TPM2B_ID_OBJECT,
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPML_PCR_SELECTION,
    TPMT_SIG_SCHEME,
    TPMT_SYM_DEF,
)
from tpm2_pytss.utils import NVReadEK, create_ek_template  # type: ignore[import-untyped]

from ceremony.agent.errors import TPMAccessError, TPMError

DEFAULT_TCTI = "device:/dev/tpmrm0"
AK_FILE = "ak.json"

EkType = Literal["rsa", "ecc"]
AkAlgorithm = Literal["rsa", "ecc"]

# TCG EK Credential Profile templates, most usual first (names as tpm2-pytss knows them).
# swtpm makes the low-range RSA-2048 EK (the high-range RSA-3072 one instead with
# `swtpm_setup --rsa-keysize 3072`) and the high-range ECC P-384 one.
_EK_TEMPLATES: dict[EkType, tuple[str, ...]] = {
    "rsa": ("EK-RSA2048", "EK-HIGH-RSA2048", "EK-HIGH-RSA3072"),
    "ecc": ("EK-ECC256", "EK-HIGH-ECC256", "EK-HIGH-ECC384"),
}

_AK_ATTRIBUTES = (
    TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH
    | TPMA_OBJECT.RESTRICTED
    | TPMA_OBJECT.SIGN_ENCRYPT
)
_SRK_ATTRIBUTES = (
    TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH
    | TPMA_OBJECT.NODA
    | TPMA_OBJECT.RESTRICTED
    | TPMA_OBJECT.DECRYPT
)


@dataclass(frozen=True)
class AttestationKey:
    """An AK as the server needs it (go-attestation's AttestationParameters) and its blob."""

    public: bytes  # TPM2B_PUBLIC
    private: bytes  # TPM2B_PRIVATE, wrapped by the SRK: useless outside this TPM
    creation_data: bytes  # TPM2B_CREATION_DATA
    creation_attestation: bytes  # TPM2B_ATTEST from TPM2_CertifyCreation, signed by the AK
    creation_signature: bytes  # TPMT_SIGNATURE over creation_attestation's contents

    @property
    def name(self) -> bytes:
        """The AK's TPM name (nameAlg || digest of its public area), as MakeCredential takes."""
        public, _ = TPM2B_PUBLIC.unmarshal(self.public)
        return bytes(public.get_name())


@dataclass(frozen=True)
class Quote:
    attestation: bytes  # TPM2B_ATTEST (TPMS_ATTEST of type ATTEST_QUOTE)
    signature: bytes  # TPMT_SIGNATURE
    pcr_values: dict[int, bytes]  # read just after the quote, in the quoted bank


def _access_error(path: str) -> TPMAccessError:
    return TPMAccessError(
        f"permission denied opening {path}: add your user to the `tss` group "
        "(or install udev rules that grant access to the TPM) and log in again"
    )


def _open(tcti: str) -> Any:
    # The TSS logs to stderr each NV index it probes for an EK certificate and does not
    # find, which is expected; set TSS2_LOG (e.g. all+debug) to see its logs again.
    os.environ.setdefault("TSS2_LOG", "all+NONE")
    if tcti.startswith("device"):
        _, _, path = tcti.partition(":")
        path = path or "/dev/tpmrm0"
        if not os.path.exists(path):
            raise TPMError(
                f"no TPM at {path}: this machine has no TPM 2.0, or it is turned off in the "
                "firmware; DEVTRUST_TPM_TCTI names another (e.g. swtpm:port=2321)"
            )
        if not os.access(path, os.R_OK | os.W_OK):
            raise _access_error(path)
    try:
        return ESAPI(tcti)
    except TSS2_Exception as exc:
        raise TPMError(f"cannot open the TPM through {tcti!r}: {exc}") from exc


class DeviceTPM:
    """The TPM named by a TCTI string; a context manager that closes it.

    ``ek`` chooses the EK kind; without it the first EK with a certificate is used (RSA
    before ECC), else an RSA EK from the default template.
    """

    def __init__(self, tcti: str | None = None, ek: EkType | None = None) -> None:
        self.tcti = tcti or os.environ.get("DEVTRUST_TPM_TCTI") or DEFAULT_TCTI
        self._esapi = _open(self.tcti)
        self._ek_choice = ek
        self._ek: tuple[str, bytes | None, Any] | None = None  # template name, cert, template
        self._handles: dict[str, Any] = {}
        self._ek_public: Any = None

    def __enter__(self) -> DeviceTPM:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        for handle in self._handles.values():
            self._esapi.flush_context(handle)
        self._handles.clear()
        self._esapi.close()

    # The endorsement key

    def _find_ek(self) -> tuple[str, bytes | None, Any]:
        if self._ek is None:
            kinds: tuple[EkType, ...] = (self._ek_choice,) if self._ek_choice else ("rsa", "ecc")
            read = NVReadEK(self._esapi)
            found: tuple[str, bytes | None, Any] | None = None
            for kind in kinds:
                for name in _EK_TEMPLATES[kind]:
                    try:
                        cert, template = create_ek_template(name, read)
                    except ValueError:  # a high-range EK without its certificate
                        continue
                    if cert is not None:
                        found = (name, bytes(cert), template)
                        break
                    found = found or (name, None, template)
                if found is not None and found[1] is not None:
                    break
            if found is None:  # pragma: no cover - the low-range templates always resolve
                raise TPMError("no EK template applies to this TPM")
            self._ek = found
        return self._ek

    @property
    def ek_type(self) -> EkType:
        name = self._find_ek()[0]
        return "ecc" if "ECC" in name else "rsa"

    @property
    def ek_template_name(self) -> str:
        """The TCG profile's name for the EK in use, e.g. EK-RSA2048 or EK-HIGH-ECC384."""
        return self._find_ek()[0]

    def ek_certificate(self) -> bytes | None:
        """The EK certificate as stored in NV, unparsed (it may carry a TCG header or
        padding), or None when the TPM has none."""
        return self._find_ek()[1]

    def ek_public(self) -> bytes:
        """The EK's public area, a marshalled TPM2B_PUBLIC."""
        self._ek_handle()
        return bytes(self._ek_public.marshal())

    def _ek_handle(self) -> Any:
        if "ek" not in self._handles:
            handle, public, *_ = self._call(
                "create the EK",
                self._esapi.create_primary,
                None,
                self._find_ek()[2],
                ESYS_TR.ENDORSEMENT,
            )
            self._handles["ek"] = handle
            self._ek_public = public
        return self._handles["ek"]

    def _srk_handle(self) -> Any:
        if "srk" not in self._handles:
            template = TPM2B_PUBLIC.parse("rsa2048:aes128cfb", objectAttributes=_SRK_ATTRIBUTES)
            # The provisioning guidance's SRK template has an all-zero 256-byte unique field.
            template.publicArea.unique.rsa = b"\x00" * 256
            handle, *_ = self._call(
                "create the storage root key",
                self._esapi.create_primary,
                None,
                template,
                ESYS_TR.OWNER,
            )
            self._handles["srk"] = handle
        return self._handles["srk"]

    # The attestation key

    def create_ak(self, state_dir: Path, algorithm: AkAlgorithm = "rsa") -> AttestationKey:
        """Create an AK, certify its creation with itself, and keep its blobs in state_dir."""
        spec = "rsa2048:rsassa-sha256:null" if algorithm == "rsa" else "ecc256:ecdsa-sha256:null"
        template = TPM2B_PUBLIC.parse(spec, objectAttributes=_AK_ATTRIBUTES)
        private, public, creation_data, creation_hash, ticket = self._call(
            "create the attestation key", self._esapi.create, self._srk_handle(), None, template
        )
        with self._loaded(private, public) as handle:
            attest, signature = self._call(
                "certify the attestation key's creation",
                self._esapi.certify_creation,
                handle,
                handle,
                b"",
                creation_hash,
                TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL),
                ticket,
            )
        ak = AttestationKey(
            public=bytes(public.marshal()),
            private=bytes(private.marshal()),
            creation_data=bytes(creation_data.marshal()),
            creation_attestation=bytes(attest.marshal()),
            creation_signature=bytes(signature.marshal()),
        )
        _save_ak(state_dir, ak)
        return ak

    @contextmanager
    def _loaded(self, private: Any, public: Any) -> Iterator[Any]:
        handle = self._call("load the attestation key", self._esapi.load, self._srk_handle(),
                            private, public)  # fmt: skip
        try:
            yield handle
        finally:
            self._esapi.flush_context(handle)

    def _load(self, ak: AttestationKey) -> Any:
        private, _ = TPM2B_PRIVATE.unmarshal(ak.private)
        public, _ = TPM2B_PUBLIC.unmarshal(ak.public)
        return self._loaded(private, public)

    def activate_credential(
        self, ak: AttestationKey, credential_blob: bytes, encrypted_secret: bytes
    ) -> bytes:
        """The secret the server sealed to (EK, AK name) with MakeCredential.

        ``credential_blob`` and ``encrypted_secret`` are the marshalled TPM2B_ID_OBJECT and
        TPM2B_ENCRYPTED_SECRET.
        """
        try:
            blob, used = TPM2B_ID_OBJECT.unmarshal(credential_blob)
            secret, used_secret = TPM2B_ENCRYPTED_SECRET.unmarshal(encrypted_secret)
        except TSS2_Exception as exc:
            raise TPMError(f"the server's credential is malformed: {exc}") from exc
        if used != len(credential_blob) or used_secret != len(encrypted_secret):
            raise TPMError("the server's credential has trailing bytes")
        ek = self._ek_handle()
        with self._load(ak) as handle, self._ek_session() as session:
            digest = self._call(
                "activate the credential",
                self._esapi.activate_credential,
                handle,
                ek,
                blob,
                secret,
                session1=ESYS_TR.PASSWORD,
                session2=session,
            )
        return bytes(digest)

    @contextmanager
    def _ek_session(self) -> Iterator[Any]:
        """The authorisation for using the EK.

        The low-range templates clear userWithAuth, so their EK is used only through its
        policy, PolicySecret(endorsement) (what go-attestation does). The high-range ones set
        userWithAuth with an empty auth value, so a password session does.
        """
        public = self._ek_public.publicArea
        if public.objectAttributes & TPMA_OBJECT.USERWITHAUTH:
            yield ESYS_TR.PASSWORD
            return
        session = self._call(
            "start the EK policy session",
            self._esapi.start_auth_session,
            ESYS_TR.NONE,
            ESYS_TR.NONE,
            TPM2_SE.POLICY,
            TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL),
            public.nameAlg,
        )
        try:
            self._call("satisfy the EK policy", self._esapi.policy_secret,
                       ESYS_TR.ENDORSEMENT, session)  # fmt: skip
            yield session
        finally:
            try:
                self._esapi.flush_context(session)
            except TSS2_Exception as exc:
                # ActivateCredential ends a session without continueSession itself.
                if exc.rc & 0xFFF != TPM2_RC.HANDLE & 0xFFF:
                    raise

    def quote(
        self,
        ak: AttestationKey,
        nonce: bytes,
        pcrs: list[int] | None = None,
        bank: str = "sha256",
    ) -> Quote:
        """A quote of ``pcrs`` (default 0-7) in ``bank``, with ``nonce`` as its extraData."""
        selected = sorted(set(range(8) if pcrs is None else pcrs))
        selection = TPML_PCR_SELECTION.parse(f"{bank}:{','.join(map(str, selected))}")
        with self._load(ak) as handle:
            attest, signature = self._call(
                "quote the PCRs", self._esapi.quote, handle, selection, nonce
            )
        return Quote(
            attestation=bytes(attest.marshal()),
            signature=bytes(signature.marshal()),
            pcr_values=self._pcr_values(bank, selected),
        )

    def _pcr_values(self, bank: str, pcrs: list[int]) -> dict[int, bytes]:
        values: dict[int, bytes] = {}
        # TPM2_PCR_Read answers at most 8 digests at a time.
        for start in range(0, len(pcrs), 8):
            chunk = pcrs[start : start + 8]
            _, _, digests = self._call(
                "read the PCRs",
                self._esapi.pcr_read,
                TPML_PCR_SELECTION.parse(f"{bank}:{','.join(map(str, chunk))}"),
            )
            values.update(zip(chunk, (bytes(d) for d in digests), strict=True))
        return values

    def _call(self, what: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except TSS2_Exception as exc:
            raise TPMError(f"the TPM could not {what}: {exc}") from exc


_AK_FIELDS = tuple(field.name for field in dataclasses.fields(AttestationKey))


def _save_ak(state_dir: Path, ak: AttestationKey) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    fields = {k: base64.b64encode(getattr(ak, k)).decode() for k in _AK_FIELDS}
    path = state_dir / AK_FILE
    partial = path.with_suffix(".tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(fields, file, indent=2)
    partial.replace(path)


def load_ak(state_dir: Path) -> AttestationKey | None:
    """The AK kept in state_dir by create_ak, or None if there is none."""
    path = state_dir / AK_FILE
    if not path.exists():
        return None
    try:
        fields = json.loads(path.read_text())
        return AttestationKey(**{k: base64.b64decode(fields[k]) for k in _AK_FIELDS})
    except (ValueError, KeyError, TypeError) as exc:
        raise TPMError(f"{path} is damaged ({exc}); remove it to create a new key") from exc
