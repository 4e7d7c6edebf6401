"""What device authentication refuses, over a real socket, with a real swtpm, on both databases.

An enrolled device logs in again: the service sends a nonce, the device quotes it with the
AK it enrolled (TPM) or signs it with the key it enrolled (macOS), and the user's key gets
a short-lived certificate bound to the device. Each refusal is checked for its status and
one-line message, for the certificate that was not issued (no successful
``device.authenticate``, which every certificate is audited as) and for the failed
``device.authenticate`` audited with the reason. A challenge the service took stays spent;
one it refused to take is left for the right answer.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from sqlalchemy import select

from ceremony.agent.enroll import CeremonyClient, enroll_macos, enroll_tpm, wire_quote
from ceremony.agent.login import Prover, authenticate
from ceremony.agent.softkey import SoftwareEnclaveKey
from ceremony.agent.tpm import DeviceTPM, load_ak
from ceremony.authn import AuthConfig, DeviceAuthentication
from ceremony.device_ca import CLOCK_SKEW, DeviceCA, DeviceExtensions, device_extensions, issued_by
from ceremony.enroll import EnrollmentCeremony
from ceremony.protocol import (
    AuthChallenge,
    AuthComplete,
    AuthInit,
    AuthTPMResponse,
    Collected,
    DeviceCertificate,
    MacOSResponse,
    encode,
)
from ceremony.service import create_app
from inventory.db import Database
from inventory.domain import AuditEvent, CollectedData, Device, OSType, Profile, Role
from inventory.errors import ConfigurationError
from inventory.models import ChallengeRow
from inventory.services import audit, devices, tokens, users
from inventory.settings import Settings
from tests.ceremony import serving
from tests.conftest import Clock
from tests.tpm import swtpm

pytestmark = pytest.mark.swtpm

INIT = "/v1/authenticate/init"
COMPLETE = "/v1/authenticate/complete"
WHOAMI = "/v1/whoami"
TAG = "LNX-0001"
MAC = "C02XL0GJJGH5"
CERT_TTL = timedelta(minutes=30)
PROFILE = Profile(
    model_identifier="MacBookPro18,3",
    os_version="14.2.1",
    os_build="23C71",
    os_usernames=("alice", "bob"),
    jamf_binary_version="11.1.0",
)


# The devices: one swtpm holding two AKs made by the agent's code, and a software Mac key


@dataclass(frozen=True)
class TPMDevice:
    tcti: str
    ak_dir: Path  # the AK the device enrolls with, where the agent keeps it
    other_dir: Path  # a second AK in the same TPM

    def open(self) -> DeviceTPM:
        return DeviceTPM(self.tcti, ek="rsa")

    def answer(
        self, challenge: AuthChallenge, *, nonce: bytes | None = None, ak_dir: Path | None = None
    ) -> dict[str, Any]:
        """The TPM's quote; ``nonce`` and ``ak_dir`` make it a wrong one."""
        assert challenge.tpm is not None
        ak = load_ak(ak_dir or self.ak_dir)
        assert ak is not None
        with self.open() as tpm:
            quote = tpm.quote(
                ak,
                challenge.tpm.nonce if nonce is None else nonce,
                challenge.tpm.pcrs,
                challenge.tpm.pcr_bank,
            )
        complete = AuthComplete(
            challenge_id=challenge.challenge_id, tpm=AuthTPMResponse(quotes=[wire_quote(quote)])
        )
        return complete.model_dump(mode="json", exclude_none=True)


@pytest.fixture(scope="module")
def tpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TPMDevice]:
    with swtpm(tmp_path_factory.mktemp("swtpm"), ek="rsa") as running:
        state = tmp_path_factory.mktemp("agent")
        with DeviceTPM(running.tcti, ek="rsa") as device:
            device.create_ak(state / "ak")
            device.create_ak(state / "other")
        yield TPMDevice(running.tcti, state / "ak", state / "other")


def signed(key: SoftwareEnclaveKey, challenge: AuthChallenge) -> dict[str, Any]:
    assert challenge.macos is not None
    complete = AuthComplete(
        challenge_id=challenge.challenge_id,
        macos=MacOSResponse(signature=key.sign(challenge.macos.challenge)),
    )
    return complete.model_dump(mode="json", exclude_none=True)


def der(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def linux(**changes: Any) -> CollectedData:
    fields = {"serial_number": TAG, "os_type": OSType.LINUX, "os_version": "6.8", **changes}
    return CollectedData(**fields)


def mac(**changes: Any) -> CollectedData:
    """What the Mac reports: its MDM profile, unless changed."""
    fields = {
        "serial_number": MAC,
        "os_type": OSType.MACOS,
        "model_identifier": "MacBookPro18,3",
        "os_version": "14.2.1",
        "os_build": "23C71",
        "os_login_user": "alice",
        "jamf_binary_version": "11.1.0",
        **changes,
    }
    return CollectedData(**fields)


# The service: enrollment and authentication, with a device CA of its own


@dataclass
class Site:
    db: Database
    url: str
    ca: DeviceCA
    clock: Clock
    alice: str  # her credential
    user_key: ec.EllipticCurvePrivateKey

    def add_user(self, name: str) -> str:
        return users.add_user(self.db.uow(), name, (Role.ACCESS,), actor="admin")[1]

    def post(self, route: str, body: Any, credential: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {credential or self.alice}"}
        return httpx.post(self.url + route, json=body, headers=headers, timeout=30)

    def init_body(
        self, collected: CollectedData | None = None, key: bytes | None = None
    ) -> dict[str, Any]:
        init = AuthInit(
            collected=Collected.from_domain(collected or linux()),
            user_public_key=der(self.user_key) if key is None else key,
        )
        return init.model_dump(mode="json", exclude_none=True)

    def begin(
        self, collected: CollectedData | None = None, credential: str | None = None
    ) -> AuthChallenge:
        response = self.post(INIT, self.init_body(collected), credential)
        assert response.status_code == 200, response.text
        return AuthChallenge.model_validate(response.json())

    def certified(self, body: dict[str, Any], credential: str | None = None) -> DeviceCertificate:
        response = self.post(COMPLETE, body, credential)
        assert response.status_code == 200, response.text
        return DeviceCertificate.model_validate(response.json())

    def enroll_tpm(self, tpm: TPMDevice, ak_dir: Path | None = None) -> Device:
        token = tokens.create_token(self.db.uow(), TAG, actor="admin").token
        with CeremonyClient(self.url, self.alice) as client, tpm.open() as device:
            enroll_tpm(client, token, linux(), device, ak_dir or tpm.ak_dir)
        return devices.get_device(self.db.uow(), TAG, os_type=OSType.LINUX)

    def enroll_mac(self, key: SoftwareEnclaveKey) -> Device:
        token = tokens.create_token(self.db.uow(), MAC, actor="admin").token
        with CeremonyClient(self.url, self.alice) as client:
            enroll_macos(client, token, mac(), key)
        return devices.get_device(self.db.uow(), MAC, os_type=OSType.MACOS)


@pytest.fixture
def site(db: Database, clock: Clock, tmp_path: Path) -> Iterator[Site]:
    ca = DeviceCA.load_or_create(tmp_path / "device-ca", now=clock())
    authentication = DeviceAuthentication(db, ca, AuthConfig(certificate_ttl=CERT_TTL))
    app = create_app(Settings(), {}, EnrollmentCeremony(db), authentication=authentication)
    _, alice = users.add_user(db.uow(), "alice", (Role.ACCESS,), actor="admin")
    devices.register_device(db.uow(), os_type=OSType.LINUX, asset_tag=TAG, actor="admin")
    devices.register_device(
        db.uow(), os_type=OSType.MACOS, asset_tag=MAC, actor="jamf", profile=PROFILE
    )
    with serving(app) as url:
        yield Site(db, url, ca, clock, alice, ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture
def mac_key(tmp_path: Path) -> SoftwareEnclaveKey:
    return SoftwareEnclaveKey.load_or_create(tmp_path / "mac-key")


# What the device sees, and what it leaves behind


def refused(response: httpx.Response, status: int, pattern: str) -> str:
    """The refusal's status and its one-line ``{"error": ...}`` body matching ``pattern``:
    no certificate in it."""
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str), body
    message: str = body["error"]
    assert len(message.splitlines()) == 1, message
    assert re.search(pattern, message), f"{message!r} does not match {pattern!r}"
    return message


def authentications(site: Site) -> list[AuditEvent]:
    return audit.list_events(site.db.uow(), type=audit.DEVICE_AUTHENTICATE)


def assert_no_certificate(site: Site) -> None:
    """Every certificate issued is audited, with its serial, in the same transaction."""
    assert [e.details for e in authentications(site) if e.success] == []


def assert_audited(site: Site, pattern: str, *, actor: str = "alice", tag: str | None) -> None:
    """Exactly one failed ``device.authenticate``, by ``actor``, saying why, naming the
    device once the service knew it."""
    failed = [e for e in authentications(site) if not e.success]
    assert len(failed) == 1, [e.message for e in failed]
    [event] = failed
    assert event.actor == actor
    assert re.search(pattern, event.message), event.message
    assert event.asset_tag == tag


def open_challenges(db: Database) -> list[str]:
    uow = db.uow()
    with uow.read():
        query = select(ChallengeRow.kind).where(ChallengeRow.used_time.is_(None))
        return list(uow.session.scalars(query))


SPENT = "^challenge already answered: a response is accepted once$"


# 1-3. The proof refused: the challenge is spent, and the device still logs in afterwards


def test_a_quote_over_another_nonce_is_refused(site: Site, tpm: TPMDevice) -> None:
    site.enroll_tpm(tpm)
    challenge = site.begin()
    wrong = tpm.answer(challenge, nonce=hashlib.sha256(b"not the server's nonce").digest())
    refused(site.post(COMPLETE, wrong), 403, "^the quote is not over the challenge's nonce$")
    assert_no_certificate(site)
    assert_audited(
        site,
        "^authentication of LNX-0001/Linux refused: the quote is not over the challenge's nonce$",
        tag=TAG,
    )
    refused(site.post(COMPLETE, tpm.answer(challenge)), 400, SPENT)
    site.certified(tpm.answer(site.begin()))


def test_a_quote_by_another_ak_in_the_same_tpm_is_refused(site: Site, tpm: TPMDevice) -> None:
    site.enroll_tpm(tpm)
    challenge = site.begin()
    wrong = tpm.answer(challenge, ak_dir=tpm.other_dir)
    refused(site.post(COMPLETE, wrong), 403, "^the quote signature does not verify with the AK$")
    assert_no_certificate(site)
    assert_audited(site, "refused: the quote signature does not verify with the AK$", tag=TAG)
    refused(site.post(COMPLETE, tpm.answer(challenge)), 400, SPENT)
    site.certified(tpm.answer(site.begin()))


def test_a_macos_signature_by_another_key_is_refused(
    site: Site, mac_key: SoftwareEnclaveKey, tmp_path: Path
) -> None:
    site.enroll_mac(mac_key)
    other = SoftwareEnclaveKey.load_or_create(tmp_path / "other")
    challenge = site.begin(mac())
    refused(
        site.post(COMPLETE, signed(other, challenge)),
        403,
        "^the signature over the challenge does not verify with the device's key$",
    )
    assert_no_certificate(site)
    assert_audited(site, f"^authentication of {MAC}/macOS refused: the signature", tag=MAC)
    refused(site.post(COMPLETE, signed(mac_key, challenge)), 400, SPENT)
    site.certified(signed(mac_key, site.begin(mac())))


# 4-5. The challenge: answered once, in time


def test_a_replayed_answer_is_refused(site: Site, tpm: TPMDevice) -> None:
    site.enroll_tpm(tpm)
    body = tpm.answer(site.begin())
    site.certified(body)
    refused(site.post(COMPLETE, body), 400, SPENT)
    assert [e.success for e in authentications(site)] == [True, False]  # one certificate
    assert_audited(site, "refused: challenge already answered", tag=TAG)


def test_an_answer_after_the_challenge_expired_is_refused(
    site: Site, tpm: TPMDevice, clock: Clock
) -> None:
    site.enroll_tpm(tpm)
    body = tpm.answer(site.begin())
    clock.advance(seconds=61)
    refused(
        site.post(COMPLETE, body),
        400,
        "^challenge expired at 12:01:00 UTC: start the ceremony again$",
    )
    assert_no_certificate(site)
    assert_audited(site, "refused: challenge expired at 12:01:00 UTC", tag=TAG)
    issued = site.certified(tpm.answer(site.begin()))  # a new login, at the new time
    assert issued.expire_time == clock.now + CERT_TTL


# 6-9. The device: as its profile says, enrolled, by this user, still


def test_a_device_drifted_from_its_profile_is_refused_naming_the_field(
    site: Site, mac_key: SoftwareEnclaveKey
) -> None:
    site.enroll_mac(mac_key)
    response = site.post(INIT, site.init_body(mac(os_version="14.3")))
    message = refused(
        response,
        403,
        "^device does not match its MDM profile: os_version differs: the device changed since "
        "the MDM last reported it: wait for the next MDM sync or run `devtrust jamf sync`$",
    )
    assert "14.2.1" not in message  # the profile's value: for the audit log only
    assert open_challenges(site.db) == []
    assert_no_certificate(site)
    in_full = (
        "device does not match its MDM profile: os_version differs: the device reports "
        "'14.3', the MDM profile says '14.2.1'"
    )
    assert_audited(site, re.escape(f"authentication of {MAC}/macOS refused: {in_full}"), tag=MAC)
    site.certified(signed(mac_key, site.begin(mac())))  # as the profile says again


def test_a_device_enrolled_by_another_user_is_refused(
    site: Site, tpm: TPMDevice, mac_key: SoftwareEnclaveKey
) -> None:
    site.enroll_tpm(tpm)
    bob = site.add_user("bob")
    response = site.post(INIT, site.init_body(), credential=bob)
    refused(response, 409, "^device LNX-0001/Linux is enrolled, but not by bob$")
    assert open_challenges(site.db) == []
    assert_no_certificate(site)
    assert_audited(site, "refused: device LNX-0001/Linux is enrolled, but not by bob$",
                   actor="bob", tag=TAG)  # fmt: skip

    # Nor may bob answer alice's challenge: it is left for her.
    challenge = site.begin()
    response = site.post(COMPLETE, tpm.answer(challenge), credential=bob)
    refused(response, 400, "^this challenge was issued to another user$")
    assert_no_certificate(site)
    issued = site.certified(tpm.answer(challenge))
    assert issued.device["owner"] == "alice"


def test_a_registered_device_not_enrolled_is_refused_with_409(site: Site) -> None:
    refused(site.post(INIT, site.init_body()), 409, "^device LNX-0001/Linux is not enrolled$")
    assert open_challenges(site.db) == []
    assert_no_certificate(site)
    assert_audited(site, "refused: device LNX-0001/Linux is not enrolled$", tag=TAG)


@pytest.mark.parametrize("meanwhile", ["unenrolled", "enrolled-again"])
def test_a_device_unenrolled_during_the_login_gets_no_certificate(
    site: Site, tpm: TPMDevice, meanwhile: str
) -> None:
    site.enroll_tpm(tpm)
    challenge = site.begin()
    body = tpm.answer(challenge)
    _, changed = devices.unenroll_device(site.db.uow(), TAG, actor="admin")
    assert changed
    if meanwhile == "enrolled-again":
        site.enroll_tpm(tpm, tpm.other_dir)  # another AK, so another credential
    refused(
        site.post(COMPLETE, body),
        409,
        "^the device was unenrolled or enrolled again during the login: log in again$",
    )
    assert_no_certificate(site)
    assert_audited(site, "refused: the device was unenrolled or enrolled again", tag=TAG)
    refused(site.post(COMPLETE, body), 400, SPENT)


def test_a_device_removed_during_the_login_gets_no_certificate(site: Site, tpm: TPMDevice) -> None:
    site.enroll_tpm(tpm)
    body = tpm.answer(site.begin())
    devices.remove_device(site.db.uow(), actor="admin", asset_tag=TAG)
    refused(site.post(COMPLETE, body), 400, "^unknown challenge: start the ceremony again$")
    assert_no_certificate(site)
    assert_audited(site, "refused: unknown challenge", tag=None)


def test_an_unregistered_device_is_refused_with_404(site: Site) -> None:
    response = site.post(INIT, site.init_body(linux(serial_number="LNX-9999")))
    refused(
        response,
        404,
        r"^device LNX-9999/Linux is not registered: ask an admin to add it "
        r"\(`devtrust devices add`\)$",
    )
    assert open_challenges(site.db) == []
    assert_no_certificate(site)
    assert_audited(site, "^authentication of LNX-9999/Linux refused: device LNX-9999", tag=None)


# 10. The user's key


WEAK = "^user_public_key must be ECDSA P-256/P-384 or RSA-2048 or larger$"


@pytest.mark.parametrize(
    ("key", "message"),
    [
        pytest.param(lambda: b"not a key", "^user_public_key is not a DER SubjectPublicKeyInfo$",
                     id="not-der"),
        pytest.param(lambda: der(ec.generate_private_key(ec.SECP256R1()))[:-1],
                     "^user_public_key is not a DER SubjectPublicKeyInfo$", id="truncated"),
        pytest.param(lambda: der(rsa.generate_private_key(65537, 1024)), WEAK,  # noqa: S505
                     id="rsa-1024"),
        pytest.param(lambda: der(ec.generate_private_key(ec.SECP521R1())), WEAK, id="p-521"),
        pytest.param(lambda: der(ed25519.Ed25519PrivateKey.generate()), WEAK, id="ed25519"),
    ],
)  # fmt: skip
def test_a_user_key_that_is_not_der_or_is_not_allowed_is_refused_with_400(
    site: Site, mac_key: SoftwareEnclaveKey, key: Any, message: str
) -> None:
    site.enroll_mac(mac_key)
    reason = refused(site.post(INIT, site.init_body(mac(), key=key())), 400, message)
    assert open_challenges(site.db) == []
    assert_no_certificate(site)
    assert_audited(site, re.escape(f"authentication of {MAC}/macOS refused: {reason}"), tag=None)


def test_a_user_key_that_is_not_base64_is_refused_before_anything(site: Site) -> None:
    body = {**site.init_body(), "user_public_key": "not base64!"}
    refused(site.post(INIT, body), 400, "^user_public_key: is not valid base64$")
    assert authentications(site) == []  # refused before the user was looked at


# 11. The answer of the other kind


def test_a_tpm_device_answering_with_a_signature_is_refused_and_keeps_its_challenge(
    site: Site, tpm: TPMDevice
) -> None:
    site.enroll_tpm(tpm)
    challenge = site.begin()
    body = {"challenge_id": challenge.challenge_id, "macos": {"signature": encode(b"\x30\x00")}}
    refused(site.post(COMPLETE, body), 400, "^this challenge was issued for auth-tpm, not for "
                                            "auth-macos$")  # fmt: skip
    assert_no_certificate(site)
    assert_audited(site, "refused: this challenge was issued for auth-tpm", tag=TAG)
    site.certified(tpm.answer(challenge))


def test_a_mac_answering_with_a_quote_is_refused_and_keeps_its_challenge(
    site: Site, tpm: TPMDevice, mac_key: SoftwareEnclaveKey
) -> None:
    site.enroll_mac(mac_key)
    challenge = site.begin(mac())
    assert challenge.macos is not None and challenge.tpm is None
    ak = load_ak(tpm.ak_dir)
    assert ak is not None
    with tpm.open() as device:  # a real quote over the Mac's own challenge
        quote = device.quote(ak, challenge.macos.challenge)
    body = AuthComplete(
        challenge_id=challenge.challenge_id, tpm=AuthTPMResponse(quotes=[wire_quote(quote)])
    ).model_dump(mode="json", exclude_none=True)
    refused(site.post(COMPLETE, body), 400, "^this challenge was issued for auth-macos, not for "
                                            "auth-tpm$")  # fmt: skip
    assert_no_certificate(site)
    assert_audited(site, "refused: this challenge was issued for auth-macos", tag=MAC)
    site.certified(signed(mac_key, challenge))


# 12. The user's credential


def test_requests_without_a_valid_user_credential_are_refused_with_401(
    site: Site, tpm: TPMDevice
) -> None:
    site.enroll_tpm(tpm)
    challenge = site.begin()
    answer = tpm.answer(challenge)
    bodies = {WHOAMI: None, INIT: site.init_body(), COMPLETE: answer}
    wrong = {
        None: "^no user credential given: set DEVTRUST_USER_TOKEN$",
        "Basic YWxpY2U6eA==": "^the Authorization header must be 'Bearer <user credential>'$",
        "Bearer not-a-credential": r"^invalid user credential \(check DEVTRUST_USER_TOKEN\)$",
    }
    for (route, body), (authorization, message) in itertools.product(bodies.items(), wrong.items()):
        headers = {"Authorization": authorization} if authorization else {}
        method = "GET" if body is None else "POST"
        response = httpx.request(method, site.url + route, json=body, headers=headers, timeout=30)
        refused(response, 401, message)
    assert authentications(site) == []  # nobody to audit
    assert open_challenges(site.db) == ["auth-tpm"]  # the one begun above, still answerable
    who = httpx.get(site.url + WHOAMI, headers={"Authorization": f"Bearer {site.alice}"})
    assert who.status_code == 200 and who.json() == {"user": "alice", "roles": ["access"]}
    site.certified(answer)


# The certificate


def test_a_tpm_device_gets_a_certificate_bound_to_it_for_the_configured_ttl(
    site: Site, tpm: TPMDevice, clock: Clock
) -> None:
    device = site.enroll_tpm(tpm)
    assert device.credential is not None
    with CeremonyClient(site.url, site.alice) as client:  # the agent's own login path
        issued = authenticate(client, linux(), der(site.user_key), Prover(tpm.ak_dir, tpm.open))
    cert = x509.load_pem_x509_certificate(issued.certificate.encode())
    cert.verify_directly_issued_by(site.ca.cert)
    assert cert.issuer == site.ca.cert.subject
    assert cert.subject.rfc4514_string() == "CN=alice"
    assert cert.public_key() == site.user_key.public_key()
    assert cert.not_valid_before_utc == clock.now - CLOCK_SKEW
    assert cert.not_valid_after_utc == issued.expire_time == clock.now + CERT_TTL
    assert device_extensions(cert) == DeviceExtensions(device.id, TAG, device.credential.id)
    assert issued.extensions == ["device-asset-tag", "device-credential-id", "device-id"]
    assert issued.device["id"] == device.id
    assert issued_by(cert, site.ca.cert, clock.now + CERT_TTL)
    assert not issued_by(cert, site.ca.cert, clock.now + CERT_TTL + timedelta(seconds=1))
    [event] = authentications(site)
    assert event.success and event.actor == "alice" and event.asset_tag == TAG
    assert event.details["certificate_serial"] == format(cert.serial_number, "x")
    assert event.details["credential_id"] == device.credential.id


@pytest.mark.parametrize(
    "user_key",
    [
        lambda: ec.generate_private_key(ec.SECP384R1()),
        lambda: rsa.generate_private_key(65537, 2048),
    ],
    ids=["p-384", "rsa-2048"],
)
def test_a_mac_gets_a_certificate_for_any_allowed_user_key(
    site: Site, mac_key: SoftwareEnclaveKey, user_key: Any
) -> None:
    device = site.enroll_mac(mac_key)
    assert device.credential is not None
    key = user_key()
    challenge = AuthChallenge.model_validate(
        site.post(INIT, site.init_body(mac(), key=der(key))).json()
    )
    issued = site.certified(signed(mac_key, challenge))
    cert = x509.load_pem_x509_certificate(issued.certificate.encode())
    cert.verify_directly_issued_by(site.ca.cert)
    assert cert.public_key() == key.public_key()
    assert device_extensions(cert) == DeviceExtensions(device.id, MAC, device.credential.id)


def test_a_certificate_lifetime_the_ca_would_refuse_stops_the_service_starting(
    db: Database, tmp_path: Path
) -> None:
    ca = DeviceCA.load_or_create(tmp_path)
    for ttl in (timedelta(hours=24, seconds=1), timedelta(0)):
        with pytest.raises(ConfigurationError, match="^DEVTRUST_DEVICE_CERT_TTL is .*: a device "
                           "certificate lasts at most 1d$"):  # fmt: skip
            DeviceAuthentication(db, ca, AuthConfig(certificate_ttl=ttl))
    DeviceAuthentication(db, ca, AuthConfig(certificate_ttl=timedelta(hours=24)))
