"""Device authentication, server side: an enrolled device proves it is itself again, and
the user gets a short-lived certificate bound to it.

``begin`` finds the enrolled device the collected data names, checks the data against
its MDM profile again (drift refuses, with the reason) and sends a fresh nonce; a TPM
device quotes it with its enrolled AK, a macOS device signs it with its enrolled key.
``complete`` verifies that with the credential recorded at enrollment (which must still
be the device's) and has the device CA sign the user's public key with the device id,
asset tag and credential id as extensions. A device authenticates for the user who
enrolled it (its owner); for anyone else it is as if not enrolled, and auto-enrollment
then refuses it as already enrolled. ``device.authenticate`` is audited, with the reason
on failure. Two round trips, state in the database, like enrollment.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, load_der_public_key

from ceremony.attestation import macos, tpm_verify
from ceremony.device_ca import EXTENSION_NAMES, MAX_CERT_TTL, DeviceCA, DeviceExtensions, PublicKey
from ceremony.enroll import collected_data, sent_quotes
from ceremony.errors import (
    DeviceDrifted,
    DeviceNotEnrolled,
    KeyProofError,
    QuoteError,
)
from ceremony.protocol import (
    PCR_BANK,
    QUOTED_PCRS,
    AuthChallenge,
    AuthComplete,
    AuthInit,
    Collected,
    DeviceCertificate,
    MacOSChallenge,
    QuoteChallenge,
)
from ceremony.refusals import refusals_audited
from inventory.db import Database
from inventory.domain import Device, EnrollStatus, OSType, device_label
from inventory.drift import drift, mismatch, mismatch_in_full
from inventory.durations import format_duration
from inventory.errors import (
    ConfigurationError,
    InvalidArgument,
    NotFound,
)
from inventory.models import DeviceRow
from inventory.preference import check_attestation
from inventory.serialize import device_to_dict
from inventory.services import audit, challenges, users
from inventory.services.devices import (
    record_collected_data_within,
    row_by_tag_within,
    to_device,
)
from inventory.services.preference import get_preference_within

TPM_KIND = "auth-tpm"
MACOS_KIND = "auth-macos"
DEFAULT_CERT_TTL = timedelta(hours=1)


@dataclass(frozen=True)
class AuthConfig:
    challenge_ttl: timedelta = challenges.DEFAULT_TTL
    certificate_ttl: timedelta = DEFAULT_CERT_TTL
    history_limit: int = 10


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _user_key(der: bytes) -> PublicKey:
    try:
        key = load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm, TypeError):
        raise InvalidArgument("user_public_key is not a DER SubjectPublicKeyInfo") from None
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in ("secp256r1", "secp384r1"):
        return key
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048:
        return key
    raise InvalidArgument("user_public_key must be ECDSA P-256/P-384 or RSA-2048 or larger")


class DeviceAuthentication:
    def __init__(self, db: Database, ca: DeviceCA, config: AuthConfig | None = None) -> None:
        self.db = db
        self.ca = ca
        self.config = config or AuthConfig()
        ttl = self.config.certificate_ttl
        if not timedelta(0) < ttl <= MAX_CERT_TTL:
            # Refused at start: the CA would refuse to sign, and every login would be a 500.
            raise ConfigurationError(
                f"DEVTRUST_DEVICE_CERT_TTL is {format_duration(ttl)}: a device certificate "
                f"lasts at most {format_duration(MAX_CERT_TTL)}"
            )

    def begin(self, credential: str, request: AuthInit) -> AuthChallenge:
        """Find the enrolled device, check its data again, and send a nonce."""
        uow = self.db.uow()
        with refusals_audited(self.db, audit.DEVICE_AUTHENTICATE, "authentication") as seen, uow:
            user = seen.user = users.authenticate_within(uow, credential)
            collected = seen.collected = collected_data(request.collected)
            _user_key(request.user_public_key)
            row = row_by_tag_within(uow, collected.serial_number, collected.os_type)
            if row is None:
                raise NotFound(
                    f"device {device_label(collected.serial_number, collected.os_type)} is not "
                    "registered: ask an admin to add it (`devtrust devices add`)"
                )
            device = seen.device = to_device(row)
            if device.enroll_status is not EnrollStatus.ENROLLED or device.credential is None:
                raise DeviceNotEnrolled(f"device {device.label} is not enrolled")
            if device.owner != user.name:  # its credentials are its owner's
                raise DeviceNotEnrolled(
                    f"device {device.label} is enrolled, but not by {user.name}"
                )
            # Read at every login: raising the minimum refuses devices enrolled below it.
            check_attestation(
                device.credential.attestation_type.level,
                get_preference_within(uow).device_trust.min_attestation,
                what=f"device {device.label} is enrolled",
            )
            failed = drift(device, collected) if device.profile is not None else []
            if failed:
                raise DeviceDrifted(mismatch(failed), for_audit=mismatch_in_full(failed))
            state: dict[str, Any] = {
                "credential_id": device.credential.id,
                "user_public_key": _b64(request.user_public_key),
                "collected": request.collected.model_dump(mode="json"),
                "nonce": _b64(macos.new_challenge()),
            }
            kind = MACOS_KIND if device.os_type is OSType.MACOS else TPM_KIND
            issued = challenges.issue_challenge_within(
                uow,
                kind=kind,
                device_id=device.id,
                user_name=user.name,
                state=state,
                ttl=self.config.challenge_ttl,
            )
            uow.commit()
        nonce = base64.b64decode(state["nonce"])
        if kind == MACOS_KIND:
            return AuthChallenge(
                challenge_id=issued.id,
                expire_time=issued.expire_time,
                macos=MacOSChallenge(challenge=nonce),
            )
        return AuthChallenge(
            challenge_id=issued.id,
            expire_time=issued.expire_time,
            tpm=QuoteChallenge(nonce=nonce, pcr_bank=PCR_BANK, pcrs=list(QUOTED_PCRS)),
        )

    def complete(self, credential: str, response: AuthComplete) -> DeviceCertificate:
        """Verify the proof with the enrolled credential and certify the user's key."""
        kind = TPM_KIND if response.tpm is not None else MACOS_KIND
        uow = self.db.uow()
        with refusals_audited(self.db, audit.DEVICE_AUTHENTICATE, "authentication") as seen, uow:
            seen.challenge_id = response.challenge_id
            user = seen.user = users.authenticate_within(uow, credential)
            taken = seen.challenge = challenges.take_challenge_within(
                uow, response.challenge_id, kind=kind, user_name=user.name
            )
            state = taken.state
            collected = seen.collected = collected_data(
                Collected.model_validate(state["collected"])
            )
            row = uow.session.get(DeviceRow, taken.device_id)
            device = to_device(row) if row is not None else None
            enrolled = device.credential if device is not None else None
            if device is None or enrolled is None or enrolled.id != state["credential_id"]:
                raise DeviceNotEnrolled(
                    "the device was unenrolled or enrolled again during the login: log in again"
                )
            _verify(device, enrolled.public_key or b"", state, response)
            record_collected_data_within(uow, device.id, collected, keep=self.config.history_limit)
            now = uow.now()
            cert = self.ca.issue(
                user=user.name,
                public_key=_user_key(base64.b64decode(state["user_public_key"])),
                device=DeviceExtensions(device.id, device.asset_tag, enrolled.id),
                ttl=self.config.certificate_ttl,
                now=now,
            )
            audit.record_within(
                uow,
                audit.DEVICE_AUTHENTICATE,
                actor=user.name,
                message=f"device {device.label} authenticated for {user.name}",
                device=device,
                details={
                    "credential_id": enrolled.id,
                    "certificate_serial": format(cert.serial_number, "x"),
                    "expire_time": cert.not_valid_after_utc.isoformat(),
                },
            )
            uow.commit()
        return DeviceCertificate(
            certificate=cert.public_bytes(Encoding.PEM).decode("ascii"),
            expire_time=cert.not_valid_after_utc,
            device=device_to_dict(device),
            extensions=sorted(EXTENSION_NAMES.values()),
        )


def _verify(
    device: Device, public_key: bytes, state: dict[str, object], response: AuthComplete
) -> None:
    nonce = base64.b64decode(str(state["nonce"]))
    if device.os_type is OSType.MACOS:
        if response.macos is None:
            raise KeyProofError("a macOS device answers with its key's signature")
        macos.verify_key_proof(public_key, nonce, response.macos.signature)
        return
    if response.tpm is None:
        raise QuoteError("a TPM device answers with a quote")
    tpm_verify.verify_quotes(
        public_key, nonce, sent_quotes(response.tpm.quotes), expected_pcrs=QUOTED_PCRS
    )
