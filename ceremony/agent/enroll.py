"""The device's side of the enrollment ceremony: two round trips to ``devtrust serve``.

A TPM device (Linux, Windows) sends its EK (certificate and public area) and its AK's
parameters, activates the credential the server sealed to them and quotes the PCRs over
the server's nonce. A macOS device sends its key's public half and signs the server's
challenge. The user's credential (``DEVTRUST_USER_TOKEN``) goes with every request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from ceremony.agent.errors import ServiceError
from ceremony.agent.tpm import DeviceTPM, load_ak
from ceremony.agent.tpm import Quote as TPMQuote
from ceremony.client import ApiClient
from ceremony.protocol import (
    Collected,
    EnrollChallenge,
    EnrollComplete,
    EnrollInit,
    MacOSKey,
    MacOSResponse,
    Quote,
    SelfToken,
    SelfTokenRequest,
    TPMAttestation,
    TPMResponse,
    Wire,
)
from inventory.domain import CollectedData


class EnclaveKey(Protocol):
    def public_key_der(self) -> bytes: ...

    def sign(self, challenge: bytes) -> bytes: ...


class CeremonyClient(ApiClient):
    """The enrollment and login round trips: typed bodies (``ceremony.protocol``) out,
    JSON objects back."""

    def __enter__(self) -> CeremonyClient:
        return self

    def post(self, path: str, body: Wire) -> dict[str, Any]:
        return self.request("POST", path, body.model_dump(mode="json"))

    def get(self, path: str) -> dict[str, Any]:
        return self.request("GET", path)


def wire_collected(collected: CollectedData) -> Collected:
    try:
        return Collected.from_domain(collected)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ServiceError(
            f"this device's collected data cannot be sent: {where}: {first['msg']}"
        ) from None


def wire_quote(quote: TPMQuote) -> Quote:
    return Quote(
        attestation=quote.attestation, signature=quote.signature, pcr_values=quote.pcr_values
    )


def _challenge(payload: dict[str, Any]) -> EnrollChallenge:
    try:
        return EnrollChallenge.model_validate(payload)
    except ValueError:
        raise ServiceError("the service's challenge is malformed") from None


def enroll_tpm(
    client: CeremonyClient,
    token: str,
    collected: CollectedData,
    tpm: DeviceTPM,
    state_dir: Path,
) -> dict[str, Any]:
    """Enroll with the TPM; the AK is made once and kept in ``state_dir``."""
    ak = load_ak(state_dir) or tpm.create_ak(state_dir)
    init = EnrollInit(
        token=token,
        collected=wire_collected(collected),
        tpm=TPMAttestation(
            ek_cert=tpm.ek_certificate(),
            ek_public=tpm.ek_public(),
            ak_public=ak.public,
            creation_data=ak.creation_data,
            creation_attestation=ak.creation_attestation,
            creation_signature=ak.creation_signature,
        ),
    )
    challenge = _challenge(client.post("/v1/enroll/init", init))
    if challenge.tpm is None:
        raise ServiceError("the service sent no TPM challenge")
    secret = tpm.activate_credential(
        ak, challenge.tpm.credential_blob, challenge.tpm.encrypted_secret
    )
    quote = tpm.quote(ak, challenge.tpm.nonce, challenge.tpm.pcrs, challenge.tpm.pcr_bank)
    answer = EnrollComplete(
        challenge_id=challenge.challenge_id,
        tpm=TPMResponse(
            activated_secret=secret,
            quotes=[wire_quote(quote)],
        ),
    )
    return client.post("/v1/enroll/complete", answer)["device"]  # type: ignore[no-any-return]


def enroll_macos(
    client: CeremonyClient, token: str, collected: CollectedData, key: EnclaveKey
) -> dict[str, Any]:
    """Enroll with the device's ECDSA P-256 key (Secure Enclave, or its software stand-in)."""
    init = EnrollInit(
        token=token,
        collected=wire_collected(collected),
        macos=MacOSKey(public_key=key.public_key_der()),
    )
    challenge = _challenge(client.post("/v1/enroll/init", init))
    if challenge.macos is None:
        raise ServiceError("the service sent no macOS challenge")
    answer = EnrollComplete(
        challenge_id=challenge.challenge_id,
        macos=MacOSResponse(signature=key.sign(challenge.macos.challenge)),
    )
    return client.post("/v1/enroll/complete", answer)["device"]  # type: ignore[no-any-return]


def self_token(client: CeremonyClient, collected: CollectedData) -> SelfToken:
    """Register this device if needed and get a token to enroll it (editors, admins)."""
    request = SelfTokenRequest(collected=wire_collected(collected))
    return SelfToken.model_validate(client.post("/v1/enroll/self-token", request))
