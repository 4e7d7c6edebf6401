"""The enrollment ceremony, server side: two round trips, state kept in the database.

``begin`` authenticates the user, checks the enrollment token without spending it (it
must be for the very device whose data was sent), verifies what the device sent about its
keys and answers with a challenge; ``complete`` takes the challenge back once, verifies the
answer and only then spends the token and enrolls the device (``enroll_device``). Any
instance of the service can run either half. Every refusal after the user is known is
audited as a failed ``device.enroll`` with its reason, and changes nothing else.

TPM devices (Linux, Windows) prove with credential activation and a quote
(``tpm_verify``); macOS devices prove with a signature by their Secure Enclave key
(``macos``). No HTTP here: the service and the benchmark call these methods directly.

One TPM, one device: the EK (or the macOS key) is bound to the device it enrolls
(``key_binding``); ``begin`` refuses a device whose EK another enrolled device holds, and
the database's unique index refuses the later of two racing ``complete``. ``begin`` also
refuses an enrollment below ``device_trust.min_attestation``, before any cryptography.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from tpm2_pytss.constants import TPM2_ALG  # type: ignore[import-untyped]

from ceremony.attestation import macos, tpm_structures, tpm_verify
from ceremony.attestation.ek_cert import ek_public_from_certificate, parse_ek_certificate
from ceremony.errors import AttestationError, EKCertificateError, KeyProofError
from ceremony.protocol import (
    PCR_BANK,
    QUOTED_PCRS,
    Collected,
    EnrollChallenge,
    EnrollComplete,
    EnrollInit,
    MacOSChallenge,
    Quote,
    TPMAttestation,
    TPMChallenge,
)
from ceremony.refusals import refusals_audited
from inventory.db import Database, once_more_if_dropped
from inventory.domain import (
    AttestationType,
    CollectedData,
    Credential,
    Device,
    EnrollStatus,
    IssuedToken,
    OSType,
    Role,
    TokenKind,
    TrustLevel,
)
from inventory.errors import AccessDenied, InvalidArgument, NotFound, TokenInvalid
from inventory.preference import check_attestation
from inventory.services import audit, challenges, devices, enrollment, tokens, users
from inventory.services.enrollment import check_collected_matches

TPM_KIND = "enroll-tpm"
MACOS_KIND = "enroll-macos"
SELF_ENROLL_ROLES = (Role.EDITOR, Role.DEVICE_ADMIN)
SELF_TOKEN_TTL = timedelta(minutes=5)


@dataclass(frozen=True)
class CeremonyConfig:
    challenge_ttl: timedelta = challenges.DEFAULT_TTL
    history_limit: int = 10


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


class EnrollmentCeremony:
    def __init__(self, db: Database, config: CeremonyConfig | None = None) -> None:
        self.db = db
        self.config = config or CeremonyConfig()

    # -- the first round trip ------------------------------------------------------

    def begin(self, credential: str, request: EnrollInit) -> EnrollChallenge:
        """Check the token and the device, store the challenge, verify what the device
        sent about its keys and answer with the challenge.

        On PostgreSQL one statement (``enrollment.start_within``) authenticates the user,
        finds the token, its device and the EK CAs allowed, and stores the challenge if
        the checks hold; on SQLite a SELECT, then the INSERT. The keys are verified only
        after: the user is authenticated before any cryptography, and the challenge's
        answer leaves the server only once they have verified (a refusal spends it).
        Nothing needs a transaction: the token is only checked here, and the second round
        trip checks it again as it spends it.
        """
        return once_more_if_dropped(lambda: self._begin(credential, request))

    def _begin(self, credential: str, request: EnrollInit) -> EnrollChallenge:
        uow = self.db.uow(autocommit=True)
        with refusals_audited(self.db, audit.DEVICE_ENROLL, "enrollment") as seen, uow:
            draft = self._draft(request, uow.now())
            seen.user, found, seen.challenge = enrollment.start_within(
                uow, credential, request.token, draft
            )
            start = enrollment.checked_start(found, request.token, user=seen.user, now=uow.now())
            device = seen.device = start.device
            collected = seen.collected = collected_data(request.collected)
            check_collected_matches(device, collected)
            if device.enroll_status is EnrollStatus.ENROLLED:
                raise TokenInvalid(f"device {device.label} is already enrolled: unenroll it first")
            _check_flow(device, tpm=request.tpm is not None)
            assert draft is not None  # None only for what the checks above refuse
            if start.bound_to is not None:  # one TPM, one device
                raise enrollment.bound_elsewhere(start.bound_to, tpm=request.tpm is not None)
            check_attestation(
                _expected_level(draft, start), start.min_attestation, what="this device enrolls"
            )
            if seen.challenge is None:
                seen.challenge = enrollment.issue_drafted_within(
                    uow, draft, start, seen.user, self.config.challenge_ttl
                )
            issued = seen.challenge
            if request.tpm is not None:
                answer = _tpm_challenge(request, draft, start.ekcert_allowed_cas)
            else:
                assert request.macos is not None
                answer = _macos_challenge(request.macos.public_key, draft)
        return EnrollChallenge(challenge_id=issued.id, expire_time=issued.expire_time, **answer)

    def _draft(self, request: EnrollInit, now: datetime) -> enrollment.Draft | None:
        """The challenge to store with the checks, with fresh secrets; None when the
        collected data is invalid or does not fit the flow, which the checks then refuse
        in their order."""
        try:
            collected = collected_data(request.collected)
            _check_flow_of(collected.os_type, tpm=request.tpm is not None)
        except InvalidArgument:
            return None
        state: dict[str, Any] = {
            "token_hash": tokens.hash_token(request.token),
            "collected": request.collected.model_dump(mode="json"),
        }
        attestation_type = None
        if request.tpm is not None:
            kind = TPM_KIND
            sent = request.tpm
            state |= {
                "ak_public": _b64(bytes(sent.ak_public)),
                "secret": _b64(secrets.token_bytes(tpm_verify.SECRET_SIZE)),
                "nonce": _b64(secrets.token_bytes(tpm_verify.NONCE_SIZE)),
                "ek_cert_serial": tpm_verify.ek_cert_serial(sent.ek_cert),
                "binding": ek_binding(sent),
            }
            attestation_type = "tpm_ekcert" if sent.ek_cert is not None else "tpm_ekpub"
        else:
            assert request.macos is not None
            kind = MACOS_KIND
            state |= {
                "public_key": _b64(request.macos.public_key),
                "challenge": _b64(macos.new_challenge()),
                "binding": enclave_key_binding(request.macos.public_key),
            }
        return enrollment.Draft(
            id=challenges.new_id(),
            kind=kind,
            state=state,
            collected=collected,
            attestation_type=attestation_type,
            create_time=now,
            expire_time=now + self.config.challenge_ttl,
        )

    # -- the second round trip -----------------------------------------------------

    def complete(self, credential: str, response: EnrollComplete) -> Device:
        """Verify the answer to the challenge, then spend the token and enroll.

        Two statements: one SELECT for the user and the challenge; once the answer has
        verified, the writes (``enrollment.enroll_answered_within``), which take the
        challenge only if it is still unused. A refusal spends the challenge and audits
        the reason in a transaction of its own: a challenge is answered once.
        """
        return once_more_if_dropped(lambda: self._complete(credential, response))

    def _complete(self, credential: str, response: EnrollComplete) -> Device:
        kind = TPM_KIND if response.tpm is not None else MACOS_KIND
        uow = self.db.uow(autocommit=True)
        with refusals_audited(self.db, audit.DEVICE_ENROLL, "enrollment") as seen, uow:
            seen.challenge_id = response.challenge_id
            seen.user, found = challenges.find_challenge_within(
                uow, credential, response.challenge_id
            )
            opened = seen.challenge = challenges.opened(
                found, kind=kind, user_name=seen.user.name, now=uow.now()
            )
            state = opened.state
            collected = seen.collected = Collected.model_validate(state["collected"]).to_domain()
            enrolled = enrollment.enroll_answered_within(
                uow,
                challenge=opened,
                token_hash=state["token_hash"],
                token_kind=TokenKind(state["token_kind"]),
                credential=_verified_credential(state, response),
                collected=collected,
                user=seen.user.name,
                history_limit=self.config.history_limit,
                binding=_stored_binding(state),
            )
            uow.commit()
        return enrolled

    # -- self-enrollment -----------------------------------------------------------

    def self_token(self, credential: str, sent: Collected) -> IssuedToken:
        """Register the device if it is new and mint a token for the user to enroll it.

        Only users with the editor or device-admin role may; the token is bound to them.
        """
        user = users.authenticate(self.db.uow(), credential)
        if not any(user.has(role) for role in SELF_ENROLL_ROLES):
            roles = ", ".join(r.value for r in user.roles)
            raise AccessDenied(
                "enrolling the current device requires the editor or device-admin role; "
                f"user {user.name} has {roles}: ask an admin for an enrollment token"
            )
        collected = collected_data(sent)
        try:
            device = devices.get_device(
                self.db.uow(), collected.serial_number, os_type=collected.os_type
            )
        except NotFound:
            device = devices.register_device(
                self.db.uow(),
                os_type=collected.os_type,
                asset_tag=collected.serial_number,
                actor=user.name,
            )
        return tokens.create_token(
            self.db.uow(),
            device.id,
            actor=user.name,
            kind=TokenKind.SELF,
            ttl=SELF_TOKEN_TTL,
            user=user.name,
        )


def key_binding(key: tpm_verify.PublicKey) -> str:
    """What binds a key to one enrolled device (``credential_binding``): the SHA-256 of
    the key's numbers, the same however the device framed the key (a TPM public area, a
    certificate, a DER SubjectPublicKeyInfo with its point compressed or not)."""
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        return _binding("rsa", numbers.e, numbers.n)
    point = key.public_numbers()
    return _binding(f"ecc-{key.curve.name}", point.x, point.y)


def _binding(kind: str, *numbers: int) -> str:
    digest = hashlib.sha256(kind.encode())
    for number in numbers:
        raw = number.to_bytes((number.bit_length() + 7) // 8 or 1, "big")
        digest.update(len(raw).to_bytes(2, "big") + raw)
    return digest.hexdigest()


def ek_binding(sent: TPMAttestation) -> str | None:
    """The binding of the EK the challenge is made for: the EK public area's key when one
    was sent (``examine_ek`` checks it is the certificate's), else the certificate's.
    From the public area's numbers as they are, with no key built: for an ECC EK, building
    one (which checks the point) would cost more than the rest of the first round trip's
    own code. None when neither reads, which ``examine_ek`` then refuses with the reason."""
    try:
        if sent.ek_public is not None:
            area = tpm_structures.public_area(
                bytes(sent.ek_public), "EK public area", EKCertificateError
            )
            if area.type == TPM2_ALG.RSA:
                modulus = int.from_bytes(area.rsa_modulus, "big")
                return _binding("rsa", area.rsa_exponent or 65537, modulus)
            curve = tpm_verify.CURVES.get(area.curve)
            if area.type != TPM2_ALG.ECC or curve is None:
                return None
            x, y = int.from_bytes(area.ecc_x, "big"), int.from_bytes(area.ecc_y, "big")
            return _binding(f"ecc-{curve.name}", x, y)
        if sent.ek_cert is not None:
            return key_binding(ek_public_from_certificate(parse_ek_certificate(sent.ek_cert)))
    except AttestationError:
        pass
    return None


def enclave_key_binding(public_key: bytes) -> str | None:
    """The binding of a macOS key; None when it does not parse (``begin`` says why)."""
    try:
        return key_binding(macos.parse_public_key(public_key))
    except KeyProofError:
        return None


def _stored_binding(state: dict[str, Any]) -> str:
    binding = state.get("binding")
    if not isinstance(binding, str):  # a challenge stored before bindings existed
        raise InvalidArgument("the challenge is from an older server: start the enrollment again")
    return binding


def _expected_level(draft: enrollment.Draft, start: enrollment.Start) -> TrustLevel:
    """The trust level the enrollment reaches if its proof verifies."""
    stored = draft.stored_state(start).get("attestation_type")
    return AttestationType(stored).level if stored is not None else TrustLevel.SOFTWARE_KEY


def collected_data(data: Collected) -> CollectedData:
    try:
        return data.to_domain()
    except InvalidArgument as exc:
        raise InvalidArgument(f"collected data: {exc}") from None


def _check_flow(device: Device, *, tpm: bool) -> None:
    _check_flow_of(device.os_type, tpm=tpm)


def _check_flow_of(os_type: OSType, *, tpm: bool) -> None:
    if os_type is OSType.MACOS and tpm:
        raise InvalidArgument("a macOS device enrolls with its Secure Enclave key, not a TPM")
    if os_type in (OSType.LINUX, OSType.WINDOWS) and not tpm:
        raise InvalidArgument(f"a {os_type.display} device enrolls with its TPM")
    if os_type is OSType.IOS:
        raise InvalidArgument("iOS devices cannot enroll through this ceremony")


def verification_request(tpm: TPMAttestation) -> tpm_verify.EnrollmentRequest:
    """What a device sent about its keys, as ``tpm_verify`` takes it."""
    return tpm_verify.EnrollmentRequest(
        ek_cert=tpm.ek_cert,
        ek_public=tpm.ek_public,
        ak_public=tpm.ak_public,
        creation_data=tpm.creation_data,
        creation_attestation=tpm.creation_attestation,
        creation_signature=tpm.creation_signature,
        ek_intermediates=tuple(tpm.ek_intermediates),
    )


def sent_quotes(quotes: Sequence[Quote]) -> list[tpm_verify.SentQuote]:
    """The quotes a device answered with, as ``tpm_verify.verify_quotes`` takes them."""
    return [tpm_verify.SentQuote(q.attestation, q.signature, q.pcr_values) for q in quotes]


def _tpm_challenge(
    request: EnrollInit, draft: enrollment.Draft, allowed_cas: tuple[str, ...]
) -> dict[str, Any]:
    """Verify the AK and the EK the device sent; the challenge for the secret and nonce
    ``draft`` stored."""
    assert request.tpm is not None
    attestation = verification_request(request.tpm)
    cas_pem = "\n".join(allowed_cas).encode() if allowed_cas else None
    ak = tpm_verify.check_ak(attestation)
    ek = tpm_verify.examine_ek(attestation, cas_pem)
    secret, nonce = _unb64(draft.state["secret"]), _unb64(draft.state["nonce"])
    challenge = tpm_verify.make_challenge(ek, ak.name, secret=secret, nonce=nonce)
    answer = TPMChallenge(
        credential_blob=challenge.credential_blob,
        encrypted_secret=challenge.encrypted_secret,
        nonce=challenge.nonce,
        pcr_bank=PCR_BANK,
        pcrs=list(QUOTED_PCRS),
    )
    return {"tpm": answer}


def _macos_challenge(public_key: bytes, draft: enrollment.Draft) -> dict[str, Any]:
    macos.parse_public_key(public_key)
    return {"macos": MacOSChallenge(challenge=_unb64(draft.state["challenge"]))}


def _verified_credential(state: dict[str, Any], response: EnrollComplete) -> Credential:
    """The credential to enroll, once the device's answer has verified."""
    if response.tpm is not None:
        public_key, ek_serial, attestation = _verify_tpm_answer(state, response)
    else:
        assert response.macos is not None
        public_key = _unb64(state["public_key"])
        macos.verify_key_proof(public_key, _unb64(state["challenge"]), response.macos.signature)
        ek_serial, attestation = None, AttestationType.NONE
    return Credential(
        id=str(uuid.uuid4()),
        public_key=public_key,
        ek_cert_serial=ek_serial,
        attestation_type=attestation,
    )


def _verify_tpm_answer(
    state: dict[str, Any], response: EnrollComplete
) -> tuple[bytes, str | None, AttestationType]:
    assert response.tpm is not None
    ak_public = _unb64(state["ak_public"])
    nonce = _unb64(state["nonce"])
    expected = tpm_verify.Challenge(
        credential_blob=b"", encrypted_secret=b"", nonce=nonce, secret=_unb64(state["secret"])
    )
    tpm_verify.verify_activation(expected, response.tpm.activated_secret)
    tpm_verify.verify_quotes(
        ak_public, nonce, sent_quotes(response.tpm.quotes), expected_pcrs=QUOTED_PCRS
    )
    return ak_public, state["ek_cert_serial"], AttestationType(state["attestation_type"])
