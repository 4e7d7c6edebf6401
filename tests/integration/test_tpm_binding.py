"""One TPM, one device, and the minimum trust level, against a real swtpm on both databases.

An EK (or a macOS enclave key) enrolled as one device is refused for any other, naming the
device that holds it, whether the other device's enrollment started before or after; the
unique index decides between racing enrollments (PostgreSQL, 20 at once). Unenrolling or
removing the holder frees it. ``device_trust.min_attestation`` refuses an enrollment below
it and, raised later, the next login of a device enrolled below it.

The ceremony runs in process (``EnrollmentCeremony``, ``DeviceAuthentication``), the device
side with the agent's own TPM code; the macOS test goes over HTTP for the 4xx it answers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ceremony.agent.enroll import enroll_macos, wire_collected, wire_quote
from ceremony.agent.errors import ServiceError
from ceremony.agent.softkey import SoftwareEnclaveKey
from ceremony.agent.tpm import AttestationKey, DeviceTPM
from ceremony.authn import DeviceAuthentication
from ceremony.device_ca import DeviceCA
from ceremony.enroll import EnrollmentCeremony, ek_binding, enclave_key_binding
from ceremony.protocol import (
    AuthInit,
    Collected,
    EnrollChallenge,
    EnrollComplete,
    EnrollInit,
    TPMAttestation,
    TPMResponse,
)
from inventory.db import Database
from inventory.domain import CollectedData, EnrollStatus, OSType, Role, TrustLevel
from inventory.errors import AccessDenied, AlreadyExists, DevtrustError, NotFound
from inventory.preference import DeviceTrust
from inventory.services import audit, devices, preference, tokens, users
from tests.ceremony import ceremony_service, world
from tests.conftest import Clock, _empty
from tests.tpm import swtpm

pytestmark = pytest.mark.swtpm

A, B = "LNX-BIND-A", "LNX-BIND-B"


def ek_refusal(holder: str) -> str:
    return (
        f"the TPM's EK is already enrolled as device {holder}: remove or unenroll that device first"
    )


@dataclass(frozen=True)
class Tpm:
    device: DeviceTPM
    ak: AttestationKey


@pytest.fixture(scope="module")
def tpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tpm]:
    with (
        swtpm(tmp_path_factory.mktemp("binding")) as running,
        DeviceTPM(running.tcti, ek=running.ek) as device,
    ):
        yield Tpm(device, device.create_ak(tmp_path_factory.mktemp("ak")))


def collected(tag: str, os_type: OSType = OSType.LINUX) -> CollectedData:
    return CollectedData(serial_number=tag, os_type=os_type, os_login_user="alice")


def init(tpm: Tpm, tag: str, token: str) -> EnrollInit:
    ak = tpm.ak
    return EnrollInit(
        token=token,
        collected=wire_collected(collected(tag)),
        tpm=TPMAttestation(
            ek_cert=tpm.device.ek_certificate(),
            ek_public=tpm.device.ek_public(),
            ak_public=ak.public,
            creation_data=ak.creation_data,
            creation_attestation=ak.creation_attestation,
            creation_signature=ak.creation_signature,
        ),
    )


def answer(tpm: Tpm, challenge: EnrollChallenge) -> EnrollComplete:
    """The device's part: activate the credential and quote the nonce in the TPM."""
    sent = challenge.tpm
    assert sent is not None
    secret = tpm.device.activate_credential(tpm.ak, sent.credential_blob, sent.encrypted_secret)
    quote = tpm.device.quote(tpm.ak, sent.nonce, sent.pcrs, sent.pcr_bank)
    return EnrollComplete(
        challenge_id=challenge.challenge_id,
        tpm=TPMResponse(activated_secret=secret, quotes=[wire_quote(quote)]),
    )


@dataclass
class Fleet:
    db: Database
    ceremony: EnrollmentCeremony
    credential: str

    def add(self, tag: str) -> str:
        """Register ``tag`` (once) and mint it a token."""
        try:
            devices.get_device(self.db.uow(), tag)
        except NotFound:
            devices.register_device(
                self.db.uow(), os_type=OSType.LINUX, asset_tag=tag, actor="admin"
            )
        return tokens.create_token(self.db.uow(), tag, actor="admin").token

    def enroll(self, tpm: Tpm, tag: str, token: str) -> None:
        challenge = self.ceremony.begin(self.credential, init(tpm, tag, token))
        self.ceremony.complete(self.credential, answer(tpm, challenge))

    def status(self, tag: str) -> EnrollStatus:
        return devices.get_device(self.db.uow(), tag).enroll_status

    def refusals(self) -> list[str]:
        return [e.message for e in audit.list_events(self.db.uow(), type=audit.DEVICE_ENROLL)
                if not e.success]  # fmt: skip


def fleet_on(db: Database) -> Fleet:
    _, credential = users.add_user(db.uow(), "alice", (Role.ACCESS,), actor="admin")
    return Fleet(db, EnrollmentCeremony(db), credential)


def test_one_key_has_one_binding_however_the_device_frames_it(tpm: Tpm, tmp_path: Path) -> None:
    both = init(tpm, A, "t").tpm
    assert both is not None
    bindings = {
        ek_binding(both),
        ek_binding(both.model_copy(update={"ek_public": None})),  # the certificate alone
        ek_binding(both.model_copy(update={"ek_cert": None})),  # the public area alone
    }
    assert len(bindings) == 1 and None not in bindings
    mac = ec.generate_private_key(ec.SECP256R1()).public_key()
    framings = [
        mac.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo),
        compressed_spki(mac),
    ]
    assert framings[0] != framings[1]
    mac_bindings = {enclave_key_binding(der) for der in framings}
    assert len(mac_bindings) == 1 and None not in mac_bindings


def compressed_spki(key: ec.EllipticCurvePublicKey) -> bytes:
    """The key's SubjectPublicKeyInfo with its point compressed (another valid DER)."""
    point = key.public_bytes(Encoding.X962, PublicFormat.CompressedPoint)
    prefix = bytes.fromhex("3039301306072a8648ce3d020106082a8648ce3d030107032200")
    return prefix + point


def test_an_ek_enrolled_as_one_device_is_refused_for_another_until_it_is_unenrolled_or_removed(
    db: Database, tpm: Tpm
) -> None:
    fleet = fleet_on(db)
    token_a, token_b = fleet.add(A), fleet.add(B)
    # B's first round trip before A holds the EK: the unique index refuses its answer.
    b_started = fleet.ceremony.begin(fleet.credential, init(tpm, B, token_b))
    fleet.enroll(tpm, A, token_a)
    with pytest.raises(AlreadyExists) as late:
        fleet.ceremony.complete(fleet.credential, answer(tpm, b_started))
    assert str(late.value) == ek_refusal(A)
    # Started after: refused at the first round trip, before the TPM does any work.
    with pytest.raises(AlreadyExists) as early:
        fleet.ceremony.begin(fleet.credential, init(tpm, B, token_b))
    assert str(early.value) == ek_refusal(A)
    assert fleet.status(B) is EnrollStatus.NOT_ENROLLED
    assert fleet.refusals() == [f"enrollment of {B}/Linux refused: {ek_refusal(A)}"] * 2

    devices.unenroll_device(db.uow(), A, actor="admin")
    fleet.enroll(tpm, B, token_b)  # its token was never spent by the refusals
    assert fleet.status(B) is EnrollStatus.ENROLLED
    with pytest.raises(AlreadyExists, match=f"enrolled as device {B}:"):
        fleet.enroll(tpm, A, fleet.add(A))

    devices.remove_device(db.uow(), B, actor="admin")
    fleet.enroll(tpm, A, fleet.add(A))  # the same device again, with its own EK
    enrolled = devices.get_device(db.uow(), A)
    assert enrolled.enroll_status is EnrollStatus.ENROLLED
    assert enrolled.credential is not None
    assert enrolled.credential.attestation_type.level is TrustLevel.TPM_EKCERT


@pytest.mark.postgres
def test_of_20_racing_enrollments_of_two_devices_with_one_ek_exactly_one_wins(
    postgres_url: str, clock: Clock, tpm: Tpm
) -> None:
    db = Database.connect(postgres_url, clock=clock, pool_size=25, max_overflow=5)
    try:
        fleet = fleet_on(db)
        started = []
        for tag in (A, B):
            token = fleet.add(tag)
            for _ in range(10):  # one token, ten first round trips: the token is spent last
                started.append(fleet.ceremony.begin(fleet.credential, init(tpm, tag, token)))
        answers = [answer(tpm, challenge) for challenge in started]
        go = threading.Barrier(len(answers))
        wins: list[str] = []
        refusals: list[DevtrustError] = []

        def complete(response: EnrollComplete) -> None:
            go.wait()
            try:
                wins.append(fleet.ceremony.complete(fleet.credential, response).asset_tag)
            except DevtrustError as exc:
                refusals.append(exc)

        threads = [threading.Thread(target=complete, args=(a,)) for a in answers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert len(wins) == 1 and len(refusals) == 19, refusals
        [winner] = wins
        loser = B if winner == A else A
        assert all(400 <= r.http_status < 500 for r in refusals)
        # The other device: every attempt refused by the EK it does not hold.
        assert sum(str(r) == ek_refusal(winner) for r in refusals) == 10, refusals
        assert (fleet.status(winner), fleet.status(loser)) == (
            EnrollStatus.ENROLLED,
            EnrollStatus.NOT_ENROLLED,
        )
        enrolls = audit.list_events(db.uow(), type=audit.DEVICE_ENROLL)
        assert [e.asset_tag for e in enrolls if e.success] == [winner]
    finally:
        _empty(db)
        db.close()


def test_one_mac_key_one_mac_and_min_attestation_refuses_software_keys_at_enrollment_and_login(
    db: Database, tmp_path: Path
) -> None:
    with ceremony_service(db) as url:
        first = world(db, url, asset_tag="C02BIND0001", os_type=OSType.MACOS)
        key = SoftwareEnclaveKey.load_or_create(tmp_path)
        with first.client() as client:
            enroll_macos(client, first.token, first.collected(), key)
        devices.register_device(db.uow(), os_type=OSType.MACOS, asset_tag="C02BIND0002", actor="a")
        second = replace(first, asset_tag="C02BIND0002", token=first.new_token("C02BIND0002"))
        with second.client() as client, pytest.raises(ServiceError) as refused:
            enroll_macos(client, second.token, second.collected(), key)
        assert refused.value.status == 409
        assert str(refused.value) == (
            "the device's Secure Enclave key is already enrolled as device C02BIND0001: "
            "remove or unenroll that device first"
        )
        assert (
            devices.get_device(db.uow(), "C02BIND0002").enroll_status is EnrollStatus.NOT_ENROLLED
        )

        # Raised after the first Mac enrolled: its next login is refused, and so is a new Mac.
        preference.update_preference(
            db.uow(), DeviceTrust(min_attestation=TrustLevel.TPM_EKPUB), actor="admin"
        )
        devices.unenroll_device(db.uow(), "C02BIND0001", actor="admin")  # frees the key
        with second.client() as client, pytest.raises(ServiceError) as too_weak:
            enroll_macos(client, second.token, second.collected(), key)
        assert too_weak.value.status == 403
        assert str(too_weak.value) == (
            "this device enrolls at trust level software_key, but device_trust.min_attestation "
            "needs tpm_ekpub: enroll from a device with a TPM, or ask an admin to lower the minimum"
        )
        preference.update_preference(db.uow(), DeviceTrust(), actor="admin")
        with second.client() as client:
            enroll_macos(client, second.token, second.collected(), key)  # the key is free again
    preference.update_preference(
        db.uow(), DeviceTrust(min_attestation=TrustLevel.TPM_EKPUB), actor="admin"
    )
    login = AuthInit(
        collected=Collected.from_domain(second.collected()),
        user_public_key=ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo),
    )
    authn = DeviceAuthentication(db, DeviceCA.load_or_create(tmp_path / "ca"))
    with pytest.raises(AccessDenied) as at_login:
        authn.begin(second.credential, login)
    assert str(at_login.value).startswith(
        "device C02BIND0002/macOS is enrolled at trust level software_key, but "
        "device_trust.min_attestation needs tpm_ekpub"
    )
    [event] = audit.list_events(db.uow(), type=audit.DEVICE_AUTHENTICATE)
    assert not event.success and "trust level software_key" in event.message
    preference.update_preference(db.uow(), DeviceTrust(), actor="admin")
    assert authn.begin(second.credential, login).macos is not None  # any level again


def test_min_attestation_refuses_a_tpm_enrollment_below_it(db: Database, tpm: Tpm) -> None:
    fleet = fleet_on(db)
    token = fleet.add(A)
    trusted_only = DeviceTrust(min_attestation=TrustLevel.TPM_EKCERT_TRUSTED)
    preference.update_preference(db.uow(), trusted_only, actor="admin")
    with pytest.raises(AccessDenied) as refused:
        fleet.enroll(tpm, A, token)
    assert str(refused.value) == (
        "this device enrolls at trust level tpm_ekcert, but device_trust.min_attestation needs "
        "tpm_ekcert_trusted: enroll from a TPM whose EK certificate chains to a CA in "
        "device_trust.ekcert_allowed_cas, or ask an admin to lower the minimum"
    )
    assert fleet.refusals() == [f"enrollment of {A}/Linux refused: {refused.value}"]
    assert fleet.status(A) is EnrollStatus.NOT_ENROLLED
    at_its_level = DeviceTrust(min_attestation=TrustLevel.TPM_EKCERT)
    preference.update_preference(db.uow(), at_its_level, actor="admin")
    fleet.enroll(tpm, A, token)
    assert fleet.status(A) is EnrollStatus.ENROLLED
