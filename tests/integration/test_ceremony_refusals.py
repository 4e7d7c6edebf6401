"""What ``devtrust serve`` refuses, over a real socket, with a real swtpm, on both databases.

Each test sends what a broken or hostile device (or user) would, and checks three things:
the status and the one-line message the device sees; that nothing changed (the device is
still not enrolled, no challenge was left behind); and that the same token still enrolls
the device once it does everything right. Refusals after the user is known are audited
as a failed ``device.enroll`` with their reason.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select
from tpm2_pytss.constants import TPMA_OBJECT  # type: ignore[import-untyped]

from ceremony.agent.enroll import enroll_macos
from ceremony.agent.softkey import SoftwareEnclaveKey
from ceremony.agent.tpm import AttestationKey, DeviceTPM
from ceremony.protocol import (
    MAX_BODY_BYTES,
    Collected,
    EnrollChallenge,
    EnrollComplete,
    EnrollInit,
    MacOSKey,
    MacOSResponse,
    Quote,
    TPMAttestation,
    TPMResponse,
    encode,
)
from inventory.db import Database
from inventory.domain import (
    AttestationType,
    AuditEvent,
    CollectedData,
    EnrollStatus,
    OSType,
    Role,
)
from inventory.errors import NotFound
from inventory.models import ChallengeRow
from inventory.preference import DeviceTrust
from inventory.services import audit, devices, preference
from tests.ceremony import World, ceremony_service, world
from tests.conftest import Clock
from tests.tpm import SwTPM, another_ca_pem, swtpm, with_attributes

pytestmark = pytest.mark.swtpm

INIT = "/v1/enroll/init"
COMPLETE = "/v1/enroll/complete"
SELF_TOKEN = "/v1/enroll/self-token"
MAC_SERIAL = "C02XL0GJJGH5"


# The device: a swtpm with two AKs made by the agent's own code


@dataclass(frozen=True)
class Agent:
    tpm: SwTPM
    ak: AttestationKey
    other_ak: AttestationKey  # a second AK in the same TPM
    ek_cert: bytes | None
    ek_public: bytes


def make_agent(tpm: SwTPM, state: Path) -> Agent:
    with DeviceTPM(tpm.tcti, ek=tpm.ek) as device:
        ak = device.create_ak(state / "ak")
        other = device.create_ak(state / "other")
        return Agent(tpm, ak, other, device.ek_certificate(), device.ek_public())


@pytest.fixture(scope="module")
def rsa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    with swtpm(tmp_path_factory.mktemp("rsa"), ek="rsa") as tpm:
        yield make_agent(tpm, tmp_path_factory.mktemp("rsa-agent"))


@pytest.fixture(scope="module")
def ecc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    with swtpm(tmp_path_factory.mktemp("ecc"), ek="ecc") as tpm:
        yield make_agent(tpm, tmp_path_factory.mktemp("ecc-agent"))


@pytest.fixture(params=["rsa", "ecc"])
def either(request: pytest.FixtureRequest) -> Agent:
    """Where the EK's algorithm matters (activation, the EK certificate's chain)."""
    agent: Agent = request.getfixturevalue(request.param)
    return agent


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    """A TPM with no EK certificate: the device can only send its EK's public area."""
    with swtpm(tmp_path_factory.mktemp("bare"), with_ek_cert=False) as tpm:
        yield make_agent(tpm, tmp_path_factory.mktemp("bare-agent"))


@pytest.fixture
def linux(db: Database) -> Iterator[World]:
    with ceremony_service(db) as url:
        yield world(db, url)


@pytest.fixture
def mac(db: Database) -> Iterator[World]:
    with ceremony_service(db) as url:
        yield world(db, url, asset_tag=MAC_SERIAL, os_type=OSType.MACOS)


# What the device sends


def post(
    w: World,
    route: str,
    body: Any = None,
    *,
    credential: str | None = None,
    content: Any = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """A raw request, so tests can send what the agent never would."""
    sent = {"Authorization": f"Bearer {credential or w.credential}", **(headers or {})}
    if content is None:
        content = json.dumps(body).encode()
        sent.setdefault("Content-Type", "application/json")
    return httpx.post(w.url + route, content=content, headers=sent, timeout=30)


def init_body(
    w: World,
    agent: Agent,
    *,
    token: str | None = None,
    collected: CollectedData | None = None,
    ak: AttestationKey | None = None,
    **tpm: Any,
) -> dict[str, Any]:
    ak = ak or agent.ak
    fields: dict[str, Any] = {
        "ek_cert": agent.ek_cert,
        "ek_public": agent.ek_public,
        "ak_public": ak.public,
        "creation_data": ak.creation_data,
        "creation_attestation": ak.creation_attestation,
        "creation_signature": ak.creation_signature,
        **tpm,
    }
    init = EnrollInit(
        token=token or w.token,
        collected=Collected.from_domain(collected or w.collected()),
        tpm=TPMAttestation(**fields),
    )
    return init.model_dump(mode="json", exclude_none=True)


def begin(w: World, agent: Agent, **kwargs: Any) -> EnrollChallenge:
    response = post(w, INIT, init_body(w, agent, **kwargs))
    assert response.status_code == 200, response.text
    return EnrollChallenge.model_validate(response.json())


def answer(
    agent: Agent,
    challenge: EnrollChallenge,
    *,
    secret: bytes | None = None,
    nonce: bytes | None = None,
    quoted_by: AttestationKey | None = None,
) -> dict[str, Any]:
    """The TPM's answer; ``secret``, ``nonce`` and ``quoted_by`` make it a wrong one."""
    assert challenge.tpm is not None
    with DeviceTPM(agent.tpm.tcti, ek=agent.tpm.ek) as device:
        activated = device.activate_credential(
            agent.ak, challenge.tpm.credential_blob, challenge.tpm.encrypted_secret
        )
        quote = device.quote(
            quoted_by or agent.ak,
            challenge.tpm.nonce if nonce is None else nonce,
            challenge.tpm.pcrs,
            challenge.tpm.pcr_bank,
        )
    complete = EnrollComplete(
        challenge_id=challenge.challenge_id,
        tpm=TPMResponse(
            activated_secret=activated if secret is None else secret,
            quotes=[
                Quote(
                    attestation=quote.attestation,
                    signature=quote.signature,
                    pcr_values=quote.pcr_values,
                )
            ],
        ),
    )
    return complete.model_dump(mode="json", exclude_none=True)


def enroll(w: World, agent: Agent, **kwargs: Any) -> dict[str, Any]:
    """The whole ceremony done right, with the world's token unless told otherwise."""
    response = post(w, COMPLETE, answer(agent, begin(w, agent, **kwargs)))
    assert response.status_code == 200, response.text
    device: dict[str, Any] = response.json()["device"]
    assert device["enroll_status"] == "enrolled"
    return device


# What the device sees, and what it leaves behind


def refused(response: httpx.Response, status: int, pattern: str) -> str:
    """The refusal's status and its one-line ``{"error": ...}`` body matching ``pattern``."""
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str), body
    message: str = body["error"]
    assert message and len(message.splitlines()) == 1, message
    assert re.search(pattern, message), f"{message!r} does not match {pattern!r}"
    return message


def assert_not_enrolled(w: World) -> None:
    device = devices.get_device(w.db.uow(), w.asset_tag, os_type=w.os_type)
    assert device.enroll_status is EnrollStatus.NOT_ENROLLED
    assert device.credential is None and device.owner is None


def assert_enrolled_with(w: World, public_key: bytes, owner: str = "alice") -> None:
    device = devices.get_device(w.db.uow(), w.asset_tag, os_type=w.os_type)
    assert device.enroll_status is EnrollStatus.ENROLLED and device.owner == owner
    assert device.credential is not None and device.credential.public_key == public_key


def failed_enrollments(db: Database) -> list[AuditEvent]:
    return audit.list_events(db.uow(), type=audit.DEVICE_ENROLL, failed_only=True)


def assert_audited(w: World, pattern: str, *, device: bool = True, actor: str = "alice") -> None:
    """Exactly one failed ``device.enroll``, by ``actor``, saying why."""
    events = failed_enrollments(w.db)
    assert len(events) == 1, [e.message for e in events]
    [event] = events
    assert event.actor == actor and not event.success
    assert re.search(pattern, event.message), event.message
    assert event.asset_tag == (w.asset_tag if device else None)


def open_challenges(db: Database, *, spent_too: bool = False) -> int:
    uow = db.uow()
    with uow.read():
        query = select(func.count()).select_from(ChallengeRow)
        if not spent_too:
            query = query.where(ChallengeRow.used_time.is_(None))
        return int(uow.session.scalar(query) or 0)


def allow_cas(db: Database, *pems: str) -> None:
    preference.update_preference(db.uow(), DeviceTrust(ekcert_allowed_cas=pems), actor="admin")


# 1-3. The TPM's answer refused


def test_a_wrong_activated_secret_is_refused_and_the_token_still_enrolls(
    linux: World, either: Agent
) -> None:
    body = answer(either, begin(linux, either), secret=bytes(32))
    refused(post(linux, COMPLETE, body), 403, "^the activated secret does not match the challenge")
    assert_not_enrolled(linux)
    assert_audited(linux, "refused: the activated secret does not match")
    enroll(linux, either)
    assert_enrolled_with(linux, either.ak.public)


def test_a_quote_over_another_nonce_is_refused(linux: World, rsa: Agent) -> None:
    other_nonce = hashlib.sha256(b"not the server's nonce").digest()
    body = answer(rsa, begin(linux, rsa), nonce=other_nonce)
    refused(post(linux, COMPLETE, body), 403, "^the quote is not over the challenge's nonce$")
    assert_not_enrolled(linux)
    assert_audited(linux, "refused: the quote is not over the challenge's nonce")
    enroll(linux, rsa)


def test_a_quote_signed_by_another_ak_in_the_same_tpm_is_refused(linux: World, rsa: Agent) -> None:
    # The credential is activated with the right AK; only the quote is another key's.
    body = answer(rsa, begin(linux, rsa), quoted_by=rsa.other_ak)
    refused(post(linux, COMPLETE, body), 403, "^the quote signature does not verify with the AK$")
    assert_not_enrolled(linux)
    assert_audited(linux, "the quote signature does not verify")
    enroll(linux, rsa)
    assert_enrolled_with(linux, rsa.ak.public)


# 4-5, 10. The AK refused at the first round trip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            lambda a: {"ak_public": with_attributes(a.ak.public, TPMA_OBJECT.RESTRICTED)},
            "^the AK is not a restricted signing key: restricted not set$",
            id="not-restricted",
        ),
        pytest.param(
            lambda a: {
                "creation_attestation": a.other_ak.creation_attestation,
                "creation_signature": a.other_ak.creation_signature,
            },
            "names another key than the AK sent",
            id="name-mismatch",
        ),
        pytest.param(
            lambda a: {"ak_public": a.ak.public[:-1]},
            "^the AK public area is (malformed or truncated|truncated)",
            id="truncated-ak-public",
        ),
    ],
)
def test_an_ak_that_cannot_be_trusted_gets_no_challenge(
    linux: World, rsa: Agent, change: Any, message: str
) -> None:
    response = post(linux, INIT, init_body(linux, rsa, **change(rsa)))
    reason = refused(response, 403, message)
    # Stored once the user and token were checked, before the keys were: spent by the
    # refusal, and its answer never sent.
    assert open_challenges(linux.db, spent_too=True) == 1
    assert open_challenges(linux.db) == 0
    assert_not_enrolled(linux)
    assert_audited(linux, re.escape(f"enrollment of LNX-0001/Linux refused: {reason}"))
    enroll(linux, rsa)


# 6-7. The challenge taken once, in time, by its user


def test_a_replayed_answer_is_refused_and_changes_nothing(linux: World, rsa: Agent) -> None:
    body = answer(rsa, begin(linux, rsa))
    first = post(linux, COMPLETE, body)
    assert first.status_code == 200, first.text
    refused(post(linux, COMPLETE, body), 400, "^challenge already answered")
    assert_enrolled_with(linux, rsa.ak.public)
    enrolled = audit.list_events(linux.db.uow(), type=audit.DEVICE_ENROLL)
    assert [e.success for e in enrolled] == [True, False]
    assert_audited(linux, "refused: challenge already answered")


def test_an_answer_after_the_challenge_expired_is_refused(
    linux: World, rsa: Agent, clock: Clock
) -> None:
    challenge = begin(linux, rsa)
    body = answer(rsa, challenge)
    clock.advance(seconds=61)
    refused(post(linux, COMPLETE, body), 400, "^challenge expired at 12:01:00 UTC")
    assert_not_enrolled(linux)
    assert_audited(linux, "refused: challenge expired")
    enroll(linux, rsa)  # a new ceremony, with the same token


def test_an_answer_by_another_user_is_refused_and_left_for_its_user(
    linux: World, rsa: Agent
) -> None:
    bob = linux.add_user("bob", Role.ACCESS)
    body = answer(rsa, begin(linux, rsa))
    refused(post(linux, COMPLETE, body, credential=bob), 400, "issued to another user")
    assert_not_enrolled(linux)
    reason = "refused: this challenge was issued to another user"
    assert_audited(linux, reason, actor="bob")
    response = post(linux, COMPLETE, body)
    assert response.status_code == 200, response.text
    assert_enrolled_with(linux, rsa.ak.public, owner="alice")


def test_an_answer_of_the_other_kind_is_refused_and_leaves_the_challenge(
    linux: World, rsa: Agent
) -> None:
    challenge = begin(linux, rsa)
    body = {"challenge_id": challenge.challenge_id, "macos": {"signature": encode(b"\x30")}}
    refused(post(linux, COMPLETE, body), 400, "issued for enroll-tpm, not for enroll-macos")
    response = post(linux, COMPLETE, answer(rsa, challenge))
    assert response.status_code == 200, response.text


def test_an_unknown_challenge_is_refused(linux: World) -> None:
    body = {"challenge_id": "no-such-challenge", "macos": {"signature": encode(b"\x30")}}
    refused(post(linux, COMPLETE, body), 400, "^unknown challenge: start the ceremony again$")
    assert_audited(linux, "refused: unknown challenge", device=False)


# 8-9. The token refused


def test_a_used_token_is_refused_and_the_enrollment_stands(linux: World, rsa: Agent) -> None:
    enroll(linux, rsa)
    response = post(linux, INIT, init_body(linux, rsa, ak=rsa.other_ak))
    refused(response, 403, "^enrollment token was already used$")
    assert open_challenges(linux.db, spent_too=True) == 1  # the enrollment's own
    assert_enrolled_with(linux, rsa.ak.public)
    assert_audited(linux, "refused: enrollment token was already used", device=False)


def test_an_expired_token_is_refused(linux: World, rsa: Agent, clock: Clock) -> None:
    clock.advance(hours=1, seconds=1)
    response = post(linux, INIT, init_body(linux, rsa))
    refused(response, 403, "^enrollment token expired at 2026-11-26 13:00:00 UTC$")
    assert open_challenges(linux.db, spent_too=True) == 0  # refused by the checks: none stored
    assert_not_enrolled(linux)
    assert_audited(linux, "refused: enrollment token expired", device=False)
    enroll(linux, rsa, token=linux.new_token())


@pytest.mark.parametrize(
    ("serial", "os_type", "reports"),
    [
        ("LNX-0002", OSType.LINUX, "LNX-0002/Linux"),
        ("LNX-0001", OSType.WINDOWS, "LNX-0001/Windows"),
    ],
    ids=["serial", "os-type"],
)
def test_a_token_for_another_device_is_refused(
    linux: World, rsa: Agent, serial: str, os_type: OSType, reports: str
) -> None:
    collected = linux.collected(serial=serial, os_type=os_type)
    response = post(linux, INIT, init_body(linux, rsa, collected=collected))
    refused(
        response,
        403,
        f"^the enrollment token is for device LNX-0001/Linux, but this device reports {reports}$",
    )
    assert open_challenges(linux.db) == 0
    assert_not_enrolled(linux)
    assert_audited(linux, "the enrollment token is for device LNX-0001/Linux")
    enroll(linux, rsa)


# 10. Malformed bodies: refused before anything is looked at


def _drop(body: dict[str, Any], *path: str) -> dict[str, Any]:
    inner = body
    for key in path[:-1]:
        inner = inner[key]
    del inner[path[-1]]
    return body


def _set(body: dict[str, Any], value: Any, *path: str) -> dict[str, Any]:
    inner = body
    for key in path[:-1]:
        inner = inner[key]
    inner[path[-1]] = value
    return body


def refused_before_anything(w: World, agent: Agent, cases: list[tuple[Any, int, str]]) -> None:
    """Each mutation of a good init body refused with its status and message, before the
    user or the token is looked at; then the untouched token still enrolls the device."""
    for mutate, status, message in cases:
        sent = mutate(init_body(w, agent))
        if isinstance(sent, bytes):
            response = post(w, INIT, content=sent, headers={"Content-Type": "application/json"})
        else:
            response = post(w, INIT, sent)
        refused(response, status, message)
    assert open_challenges(w.db) == 0
    assert failed_enrollments(w.db) == []
    assert_not_enrolled(w)
    enroll(w, agent)


def test_malformed_structures_are_refused_with_400_naming_the_field(
    linux: World, rsa: Agent
) -> None:
    refused_before_anything(linux, rsa, [
        (lambda b: _set(b, "not base64!", "tpm", "ak_public"),
         400, "^tpm.ak_public: is not valid base64$"),
        (lambda b: _set(b, encode(bytes(17 * 1024)), "tpm", "ak_public"),
         400, "^tpm.ak_public: is more than 4096 bytes$"),
        (lambda b: _drop(b, "collected"), 400, "^collected: Field required$"),
        (lambda b: _drop(b, "tpm", "creation_signature"),
         400, "^tpm.creation_signature: Field required$"),
        (lambda b: _set(b, {"public_key": encode(b"\x30")}, "macos"),
         400, "^request body: give exactly one of 'tpm' and 'macos'$"),
        (lambda b: _set(b, 1, "tpm", "ak_pubic"),
         400, "^tpm.ak_pubic: Extra inputs are not permitted$"),
        # A field name the client made up is escaped onto the message's one line.
        (lambda b: _set(b, 1, "tpm", "line\nbreak"),
         400, r"^tpm.'line\\nbreak': Extra inputs are not permitted$"),
        (lambda b: [b], 400, "^request body: Input should be a valid dictionary"),
    ])  # fmt: skip


def test_unreadable_and_oversized_bodies_are_refused(linux: World, rsa: Agent) -> None:
    refused_before_anything(linux, rsa, [
        (lambda b: json.dumps(b).encode()[:-20], 400, "^request body is not valid JSON$"),
        (lambda b: b"\xff\xfe" + json.dumps(b).encode(), 400, "^request body is not valid JSON$"),
        (lambda b: b"[" * 50_000 + b"]" * 10_000, 400, "^request body is nested too deeply$"),
        (lambda b: _set(b, "A" * MAX_BODY_BYTES, "tpm", "ak_public"),
         413, "^request body is larger than 65536 bytes$"),
    ])  # fmt: skip


def test_collected_data_the_inventory_cannot_store_is_refused_with_400(
    linux: World, rsa: Agent
) -> None:
    # Accepted before, these failed only when the device was enrolled: a 503 on
    # PostgreSQL (too long, NUL) or a 500 on both databases (the times).
    refused_before_anything(linux, rsa, [
        (lambda b: _set(b, "x" * 65, "collected", "os_version"),
         400, "^collected.os_version: String should have at most 64 characters$"),
        (lambda b: _set(b, "a" * 129, "collected", "system_serial_number"),
         400, "^collected.system_serial_number: String should have at most 128 characters$"),
        (lambda b: _set(b, "13\x00", "collected", "os_version"),
         400, "^collected.os_version: contains a NUL character$"),
        (lambda b: _set(b, "13\t", "collected", "os_build"),
         400, "^collected.os_build: contains the control character U\\+0009$"),
        (lambda b: _set(b, "LNX-0001\x00", "collected", "serial_number"),
         400, "^collected.serial_number: must be printable ASCII without tabs or control "),
        # Date-times are RFC 3339 strings with an offset, in years that convert to UTC:
        # no Unix times, no local times, no dates alone.
        *((lambda b, t=t: _set(b, t, "collected", "collect_time"),
           400, "^collected.collect_time: must be an RFC 3339 date-time string, e.g. ")
          for t in ("2026-11-26T12:00:00", "9999-12-31T23:59:00-23:00", 0, 1764158400.5,
                    "1764158400", "2026-11-26", "2026-11-26 12:00:00Z")),
    ])  # fmt: skip


def test_a_streamed_body_over_64_kib_is_refused_with_413(linux: World) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while reading
        yield b'{"token": "'
        for _ in range(MAX_BODY_BYTES // 4096 + 1):
            yield b"x" * 4096
        yield b'"}'

    for route in (INIT, COMPLETE, SELF_TOKEN):
        response = post(
            linux, route, content=chunks(), headers={"Content-Type": "application/json"}
        )
        refused(response, 413, "^request body is larger than 65536 bytes$")


def test_unknown_routes_and_methods_answer_in_the_error_shape(linux: World) -> None:
    refused(post(linux, "/v1/enroll/nothing", {}), 404, "^Not Found$")
    response = httpx.get(linux.url + INIT, timeout=30)
    refused(response, 405, "^Method Not Allowed$")
    assert response.headers["allow"] == "POST"


# 11. The user


def test_requests_without_a_valid_user_credential_are_refused_with_401(
    linux: World, rsa: Agent
) -> None:
    challenge = begin(linux, rsa)
    bodies = {
        INIT: init_body(linux, rsa),
        COMPLETE: answer(rsa, challenge),
        SELF_TOKEN: {"collected": Collected.from_domain(linux.collected()).model_dump(mode="json")},
    }
    for route, body in bodies.items():
        sent = json.dumps(body).encode()
        json_type = {"Content-Type": "application/json"}
        missing = httpx.post(linux.url + route, content=sent, headers=json_type, timeout=30)
        refused(missing, 401, "^no user credential given: set DEVTRUST_USER_TOKEN$")
        basic = post(linux, route, body, headers={"Authorization": "Basic YWxpY2U6eA=="})
        refused(basic, 401, "^the Authorization header must be 'Bearer <user credential>'$")
        wrong = post(linux, route, body, credential="not-a-credential")
        refused(wrong, 401, "^invalid user credential")
    assert failed_enrollments(linux.db) == []  # nobody to audit
    assert open_challenges(linux.db) == 1  # the one begun above, still answerable
    response = post(linux, COMPLETE, bodies[COMPLETE])
    assert response.status_code == 200, response.text


# 12. The EK refused


def test_an_ek_certificate_from_a_ca_not_allowed_is_refused(linux: World, either: Agent) -> None:
    allow_cas(linux.db, another_ca_pem().decode())
    response = post(linux, INIT, init_body(linux, either))
    refused(response, 403, "does not chain to any CA in ekcert_allowed_cas")
    assert open_challenges(linux.db) == 0
    assert_not_enrolled(linux)
    assert_audited(linux, "does not chain to any CA in ekcert_allowed_cas")
    allow_cas(linux.db, another_ca_pem().decode(), either.tpm.ca_cert_pem.decode())
    enroll(linux, either)
    device = devices.get_device(linux.db.uow(), linux.asset_tag)
    assert device.credential is not None
    assert device.credential.attestation_type is AttestationType.TPM_EKCERT_TRUSTED


def test_a_device_without_an_ek_certificate_is_refused_while_cas_are_configured(
    linux: World, bare: Agent
) -> None:
    assert bare.ek_cert is None
    allow_cas(linux.db, another_ca_pem().decode())
    response = post(linux, INIT, init_body(linux, bare))
    refused(
        response, 403, "^ekcert_allowed_cas is configured but the device sent no EK certificate$"
    )
    assert_not_enrolled(linux)
    assert_audited(linux, "ekcert_allowed_cas is configured but the device sent no EK")
    allow_cas(linux.db)  # without CAs the EK's public area is enough, and says so
    enroll(linux, bare)
    device = devices.get_device(linux.db.uow(), linux.asset_tag)
    assert device.credential is not None
    assert device.credential.attestation_type is AttestationType.TPM_EKPUB
    assert device.credential.ek_cert_serial is None


# 13. macOS


def mac_init(w: World, public_key: bytes, token: str | None = None) -> dict[str, Any]:
    init = EnrollInit(
        token=token or w.token,
        collected=Collected.from_domain(w.collected()),
        macos=MacOSKey(public_key=public_key),
    )
    return init.model_dump(mode="json", exclude_none=True)


def test_a_macos_signature_by_another_key_is_refused(mac: World, tmp_path: Path) -> None:
    key = SoftwareEnclaveKey.load_or_create(tmp_path / "key")
    other = SoftwareEnclaveKey.load_or_create(tmp_path / "other")
    response = post(mac, INIT, mac_init(mac, key.public_key_der()))
    challenge = EnrollChallenge.model_validate(response.json())
    assert challenge.macos is not None
    body = EnrollComplete(
        challenge_id=challenge.challenge_id,
        macos=MacOSResponse(signature=other.sign(challenge.macos.challenge)),
    ).model_dump(mode="json", exclude_none=True)
    refused(
        post(mac, COMPLETE, body),
        403,
        "^the signature over the challenge does not verify with the device's key$",
    )
    assert_not_enrolled(mac)
    assert_audited(mac, "refused: the signature over the challenge does not verify")
    with mac.client() as client:
        enroll_macos(client, mac.token, mac.collected(), key)
    assert_enrolled_with(mac, key.public_key_der())


def test_a_macos_key_that_is_not_p256_is_refused(mac: World) -> None:
    rsa_like = b"\x30\x03\x02\x01\x00"
    refused(post(mac, INIT, mac_init(mac, rsa_like)), 403, "is not a DER SubjectPublicKeyInfo")
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    der = p384.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    refused(post(mac, INIT, mac_init(mac, der)), 403, "^the public key is on secp384r1, not P-256$")
    assert open_challenges(mac.db) == 0
    assert_not_enrolled(mac)


def test_a_macos_device_trying_the_tpm_flow_is_refused(mac: World, rsa: Agent) -> None:
    response = post(mac, INIT, init_body(mac, rsa))
    refused(response, 400, "^a macOS device enrolls with its Secure Enclave key, not a TPM$")
    assert open_challenges(mac.db) == 0
    assert_not_enrolled(mac)
    assert_audited(mac, "enrolls with its Secure Enclave key")


def test_a_linux_device_trying_the_macos_flow_is_refused(
    linux: World, rsa: Agent, tmp_path: Path
) -> None:
    key = SoftwareEnclaveKey.load_or_create(tmp_path)
    response = post(linux, INIT, mac_init(linux, key.public_key_der()))
    refused(response, 400, "^a Linux device enrolls with its TPM$")
    assert open_challenges(linux.db) == 0
    assert_not_enrolled(linux)
    assert_audited(linux, "a Linux device enrolls with its TPM")
    enroll(linux, rsa)


# 14. Self-enrollment


def self_token_body(collected: CollectedData) -> dict[str, Any]:
    return {"collected": Collected.from_domain(collected).model_dump(mode="json")}


def test_self_enrollment_needs_the_editor_or_device_admin_role(linux: World) -> None:
    body = self_token_body(linux.collected(serial="LNX-NEW-1"))
    response = post(linux, SELF_TOKEN, body)
    refused(response, 403, "requires the editor or device-admin role; user alice has access")
    with pytest.raises(NotFound):  # the device was not registered either
        devices.get_device(linux.db.uow(), "LNX-NEW-1")
    tokens_created = audit.list_events(linux.db.uow(), type=audit.DEVICE_TOKEN_CREATE)
    assert len(tokens_created) == 1  # the world's own


def test_self_enrollment_of_an_enrolled_device_is_refused(linux: World, rsa: Agent) -> None:
    enroll(linux, rsa)
    editor = linux.add_user("erin", Role.EDITOR)
    response = post(linux, SELF_TOKEN, self_token_body(linux.collected()), credential=editor)
    refused(response, 400, "^device LNX-0001/Linux is already enrolled: run `devtrust devices "
                           "unenroll LNX-0001` first$")  # fmt: skip
    assert_enrolled_with(linux, rsa.ak.public, owner="alice")
    created = audit.list_events(linux.db.uow(), type=audit.DEVICE_TOKEN_CREATE)
    assert [(e.success, e.actor) for e in created] == [(True, "admin"), (False, "erin")]
    assert "already enrolled" in created[-1].message


def test_a_self_enrollment_token_works_only_for_its_user(linux: World, rsa: Agent) -> None:
    erin = linux.add_user("erin", Role.EDITOR)
    collected = linux.collected(serial="LNX-NEW-1")
    minted = post(linux, SELF_TOKEN, self_token_body(collected), credential=erin)
    assert minted.status_code == 201, minted.text
    token = minted.json()["token"]
    response = post(linux, INIT, init_body(linux, rsa, token=token, collected=collected))
    refused(response, 403, "^enrollment token was minted for another user$")
    assert open_challenges(linux.db) == 0
    assert_audited(linux, "refused: enrollment token was minted for another user", device=False)
    challenge = EnrollChallenge.model_validate(
        post(
            linux, INIT, init_body(linux, rsa, token=token, collected=collected), credential=erin
        ).json()
    )
    response = post(linux, COMPLETE, answer(rsa, challenge), credential=erin)
    assert response.status_code == 200, response.text
    assert response.json()["device"]["owner"] == "erin"
