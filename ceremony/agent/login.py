"""``devtrust device login``: the whole path from a login to a device-bound certificate.

Collect, then authenticate the device; a registered device that is not enrolled yet is
auto-enrolled first (the service's check on the worker mints a token, the enrollment
ceremony spends it) and then authenticated. The user's key (ECDSA P-256) lives in the
agent's state directory; the certificate the service signs for it is written beside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ceremony.agent.enroll import (
    CeremonyClient,
    EnclaveKey,
    enroll_macos,
    enroll_tpm,
    wire_collected,
    wire_quote,
)
from ceremony.agent.errors import ServiceError
from ceremony.agent.tpm import DeviceTPM, load_ak
from ceremony.keyfile import load_or_create_ec_key
from ceremony.protocol import (
    AuthChallenge,
    AuthComplete,
    AuthInit,
    AuthTPMResponse,
    AutoEnrollRequest,
    AutoEnrollToken,
    DeviceCertificate,
    MacOSResponse,
    WhoAmI,
)
from inventory.domain import CollectedData, OSType

NOT_ENROLLED = 409
POLL_EVERY = 0.2
POLL_FOR = 60.0


@dataclass(frozen=True)
class Prover:
    """What proves this device: its TPM (opened on demand) and the AK's directory, or its
    macOS key."""

    state_dir: Path
    open_tpm: Callable[[], AbstractContextManager[DeviceTPM]] | None = None
    key: EnclaveKey | None = None


@dataclass(frozen=True)
class LoggedIn:
    certificate: DeviceCertificate
    certificate_file: Path
    enrolled_now: bool


def user_key(state_dir: Path, user: str) -> ec.EllipticCurvePrivateKey:
    """The user's key on this device, made once (mode 0600)."""
    return load_or_create_ec_key(state_dir / f"{user}-key.pem")


def authenticate(
    client: CeremonyClient, collected: CollectedData, public_key_der: bytes, prover: Prover
) -> DeviceCertificate:
    """Both round trips of device authentication."""
    init = AuthInit(collected=wire_collected(collected), user_public_key=public_key_der)
    challenge = AuthChallenge.model_validate(client.post("/v1/authenticate/init", init))
    if challenge.macos is not None:
        if prover.key is None:
            raise ServiceError("the service asked for a macOS key proof; this device has no key")
        answer = AuthComplete(
            challenge_id=challenge.challenge_id,
            macos=MacOSResponse(signature=prover.key.sign(challenge.macos.challenge)),
        )
    elif challenge.tpm is not None:
        ak = load_ak(prover.state_dir)
        if ak is None or prover.open_tpm is None:
            raise ServiceError(
                f"no attestation key in {prover.state_dir}: this device was enrolled from "
                "another state directory (DEVTRUST_AGENT_DIR); unenroll and enroll it again"
            )
        with prover.open_tpm() as tpm:
            quote = tpm.quote(ak, challenge.tpm.nonce, challenge.tpm.pcrs, challenge.tpm.pcr_bank)
        answer = AuthComplete(
            challenge_id=challenge.challenge_id,
            tpm=AuthTPMResponse(quotes=[wire_quote(quote)]),
        )
    else:
        raise ServiceError("the service sent no challenge")
    return DeviceCertificate.model_validate(client.post("/v1/authenticate/complete", answer))


def auto_enroll(client: CeremonyClient, collected: CollectedData) -> AutoEnrollToken:
    """The auto-enrollment check's verdict, polling while it runs."""
    payload = client.post("/v1/auto-enroll", AutoEnrollRequest(collected=wire_collected(collected)))
    deadline = time.monotonic() + POLL_FOR
    while "location" in payload and "token" not in payload:
        if time.monotonic() > deadline:
            raise ServiceError("the auto-enrollment check did not answer within a minute")
        time.sleep(POLL_EVERY)
        payload = client.get(str(payload["location"]))
    return AutoEnrollToken.model_validate(payload)


def enroll(
    client: CeremonyClient, token: str, collected: CollectedData, prover: Prover
) -> dict[str, Any]:
    """The enrollment ceremony with this device's TPM or macOS key; the enrolled device."""
    if collected.os_type is OSType.MACOS:
        if prover.key is None:
            raise ServiceError("a macOS device enrolls with its key, and none was given")
        return enroll_macos(client, token, collected, prover.key)
    if prover.open_tpm is None:
        raise ServiceError("this device enrolls with its TPM, and none was given")
    with prover.open_tpm() as tpm:
        return enroll_tpm(client, token, collected, tpm, prover.state_dir)


def login(
    client: CeremonyClient,
    user: str,
    collected: CollectedData,
    prover: Prover,
    progress: Callable[[str], None] = lambda _: None,
) -> LoggedIn:
    """Authenticate this device for ``user``, auto-enrolling it first if it needs it."""
    who = WhoAmI.model_validate(client.get("/v1/whoami"))
    if who.user != user:
        raise ServiceError(f"DEVTRUST_USER_TOKEN is the credential of {who.user}, not of {user}")
    key = user_key(prover.state_dir, user)
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    enrolled_now = False
    try:
        certificate = authenticate(client, collected, public, prover)
    except ServiceError as exc:
        if exc.status != NOT_ENROLLED:
            raise
        progress(f"{exc}: auto-enrolling it")
        token = auto_enroll(client, collected).token
        enroll(client, token, collected, prover)
        progress("enrolled; authenticating")
        enrolled_now = True
        certificate = authenticate(client, collected, public, prover)
    path = prover.state_dir / f"{user}-device-cert.pem"
    path.write_text(certificate.certificate)
    x509.load_pem_x509_certificate(certificate.certificate.encode())  # it parses
    return LoggedIn(certificate, path, enrolled_now)
