"""The last step of enrollment, on SQLite and PostgreSQL: all of it or nothing of it."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import delete

from inventory.db import Database
from inventory.domain import (
    AttestationType,
    CollectedData,
    Credential,
    Device,
    EnrollStatus,
    OSType,
    Role,
    TokenKind,
)
from inventory.errors import TokenInvalid
from inventory.models import EnrollmentTokenRow
from inventory.preference import DeviceTrust
from inventory.services import audit, challenges, devices, enrollment, preference, tokens, users
from inventory.services.challenges import ChallengeInvalid
from tests.conftest import Clock
from tests.tpm import another_ca_pem

TAG = "LNX-4C4C4544"
CREDENTIAL = Credential(
    id="cred-1",
    public_key=b"\x00\x01ak-public-area",
    ek_cert_serial="1234",
    attestation_type=AttestationType.TPM_EKCERT_TRUSTED,
)


def collected(serial: str = TAG, os_type: OSType = OSType.LINUX) -> CollectedData:
    return CollectedData(serial_number=serial, os_type=os_type, os_login_user="alice")


@pytest.fixture
def token(db: Database) -> str:
    devices.register_device(db.uow(), os_type="linux", asset_tag=TAG, actor="admin")
    return tokens.create_token(db.uow(), TAG, actor="admin").token


def test_enrollment_records_credential_owner_data_and_audit(db: Database, token: str) -> None:
    device = enrollment.enroll_device(
        db.uow(), token=token, credential=CREDENTIAL, collected=collected(), user="alice"
    )
    assert device.enroll_status is EnrollStatus.ENROLLED and device.owner == "alice"
    assert device.credential == CREDENTIAL
    assert devices.get_device(db.uow(), TAG) == device
    [history] = devices.collected_history(db.uow(), device.id)
    assert history.os_login_user == "alice"
    [event] = audit.list_events(db.uow(), type=audit.DEVICE_ENROLL)
    assert event.success and "enrolled by alice (tpm_ekcert_trusted)" in event.message
    with pytest.raises(TokenInvalid, match="already used"):
        enrollment.enroll_device(
            db.uow(), token=token, credential=CREDENTIAL, collected=collected(), user="alice"
        )


def test_a_token_for_another_device_changes_nothing_and_is_audited(
    db: Database, token: str
) -> None:
    with pytest.raises(
        TokenInvalid,
        match=r"is for device LNX-4C4C4544/Linux, but this device reports OTHER-1/Linux",
    ):
        enrollment.enroll_device(
            db.uow(), token=token, credential=CREDENTIAL, collected=collected("OTHER-1"), user="bob"
        )
    device = devices.get_device(db.uow(), TAG)
    assert device.enroll_status is EnrollStatus.NOT_ENROLLED and device.credential is None
    assert devices.collected_history(db.uow(), device.id) == []
    [failure] = audit.list_events(db.uow(), type=audit.DEVICE_ENROLL, failed_only=True)
    assert "refused: the enrollment token is for device" in failure.message
    # The refused attempt did not spend the token: the right device still enrolls with it.
    enrollment.enroll_device(
        db.uow(), token=token, credential=CREDENTIAL, collected=collected(), user="alice"
    )


def test_expired_tokens_and_enrolled_devices_are_refused(
    db: Database, token: str, clock: Clock
) -> None:
    clock.advance(hours=2)
    with pytest.raises(TokenInvalid, match="expired"):
        enrollment.enroll_device(
            db.uow(), token=token, credential=CREDENTIAL, collected=collected(), user="alice"
        )
    fresh = tokens.create_token(db.uow(), TAG, actor="admin", ttl=timedelta(minutes=5)).token
    enrollment.enroll_device(
        db.uow(), token=fresh, credential=CREDENTIAL, collected=collected(), user="alice"
    )
    assert devices.get_device(db.uow(), TAG).owner == "alice"


# The ceremony's path: one statement on PostgreSQL, a transaction on SQLite.


def answered(db: Database, token: str) -> challenges.Challenge:
    """A challenge issued for ``token``'s device, as the ceremony's first round trip does."""
    device = devices.get_device(db.uow(), TAG)
    return challenges.issue_challenge(
        db.uow(), kind="enroll-tpm", device_id=device.id, user_name="alice", state={}
    )


def enroll_answered(
    db: Database, challenge: challenges.Challenge, token: str, *, history_limit: int = 10
) -> Device:
    uow = db.uow(autocommit=True)
    with uow:
        device = enrollment.enroll_answered_within(
            uow,
            challenge=challenge,
            token_hash=tokens.hash_token(token),
            token_kind=TokenKind.ADMIN,
            credential=CREDENTIAL,
            collected=collected(),
            user="alice",
            history_limit=history_limit,
        )
        uow.commit()
        return device


def spent(db: Database, token: str) -> bool:
    uow = db.uow()
    with uow.read():
        row = uow.session.execute(tokens.BY_HASH, {"hash": tokens.hash_token(token)}).one()
        return row.spent_time is not None


def test_an_answered_challenge_enrolls_spends_keeps_the_history_and_audits(
    db: Database, token: str
) -> None:
    device = devices.get_device(db.uow(), TAG)
    for n in range(4):
        record = collected()
        uow = db.uow()
        with uow:
            devices.record_collected_data_within(
                uow, device.id, replace(record, os_version=f"old-{n}"), keep=10
            )
            uow.commit()
    challenge = answered(db, token)

    enrolled = enroll_answered(db, challenge, token, history_limit=3)

    assert enrolled.enroll_status is EnrollStatus.ENROLLED and enrolled.owner == "alice"
    assert enrolled.credential == CREDENTIAL
    assert devices.get_device(db.uow(), TAG) == enrolled
    assert spent(db, token)
    history = devices.collected_history(db.uow(), device.id)
    assert [h.os_version for h in history] == [None, "old-3", "old-2"]  # newest first
    events = audit.list_events(db.uow())
    assert [(e.type, e.success, e.asset_tag) for e in events[-2:]] == [
        (audit.DEVICE_TOKEN_SPENT, True, TAG),
        (audit.DEVICE_ENROLL, True, TAG),
    ]
    assert events[-2].message == f"admin enrollment token spent for device {TAG}/Linux"
    assert events[-1].details == {
        "credential_id": "cred-1",
        "attestation_type": "tpm_ekcert_trusted",
    }
    with pytest.raises(ChallengeInvalid, match="already answered"):
        enroll_answered(db, challenge, token)


def test_of_racing_answers_for_one_token_exactly_one_enrolls(db: Database, token: str) -> None:
    racers = [answered(db, token) for _ in range(8)]
    start = threading.Barrier(len(racers))
    wins: list[Device] = []
    refusals: list[str] = []

    def answer(challenge: challenges.Challenge) -> None:
        start.wait()
        try:
            wins.append(enroll_answered(db, challenge, token))
        except TokenInvalid as exc:
            refusals.append(str(exc))

    threads = [threading.Thread(target=answer, args=(c,)) for c in racers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1 and len(refusals) == 7, refusals
    assert set(refusals) <= {
        "enrollment token was already used",
        f"device {TAG}/Linux is already enrolled: unenroll it first",
    }
    enrolls = audit.list_events(db.uow(), type=audit.DEVICE_ENROLL)
    assert [e.success for e in enrolls] == [True]
    assert len(audit.list_events(db.uow(), type=audit.DEVICE_TOKEN_SPENT)) == 1
    assert len(devices.collected_history(db.uow(), wins[0].id)) == 1


@pytest.mark.parametrize("meanwhile", ["enrolled", "expired", "removed"])
def test_what_changed_since_the_challenge_is_refused_and_the_token_stays_unspent(
    db: Database, token: str, clock: Clock, meanwhile: str
) -> None:
    challenge = answered(db, token)
    expected = {
        "enrolled": f"device {TAG}/Linux is already enrolled: unenroll it first",
        "expired": "enrollment token expired at",
        "removed": "invalid enrollment token",
    }[meanwhile]
    if meanwhile == "enrolled":
        other = tokens.create_token(db.uow(), TAG, actor="admin").token
        enrollment.enroll_device(
            db.uow(), token=other, credential=CREDENTIAL, collected=collected(), user="bob"
        )
    elif meanwhile == "expired":
        clock.advance(hours=2)
        challenge = answered(db, token)  # a challenge still open, for a token now expired
    before = devices.get_device(db.uow(), TAG)
    audited = len(audit.list_events(db.uow()))
    if meanwhile == "removed":
        uow = db.uow()
        with uow:
            uow.session.execute(delete(EnrollmentTokenRow))
            uow.commit()

    with pytest.raises(TokenInvalid, match=expected):
        enroll_answered(db, challenge, token)

    assert devices.get_device(db.uow(), TAG) == before
    assert len(audit.list_events(db.uow())) == audited
    if meanwhile != "removed":
        assert not spent(db, token)


# The ceremony's first round trip: the challenge stored with the checks (one statement on
# PostgreSQL), its state completed with what only the database knows.


def draft_for(db: Database, token: str, attestation_type: str | None) -> enrollment.Draft:
    now = db.uow().now()
    return enrollment.Draft(
        id=challenges.new_id(),
        kind="enroll-tpm" if attestation_type else "enroll-macos",
        state={"token_hash": tokens.hash_token(token), "nonce": "bm9uY2U=", "gone": None},
        collected=collected(),
        attestation_type=attestation_type,
        create_time=now,
        expire_time=now + timedelta(seconds=60),
    )


def start(
    db: Database, credential: str, token: str, draft: enrollment.Draft
) -> challenges.Challenge | None:
    """The first round trip's storage: ``start_within``, then (SQLite, where it stores
    nothing) the drafted challenge once its checks hold; the challenge stored, if any."""
    uow = db.uow(autocommit=True)
    with uow:
        user, found, issued = enrollment.start_within(uow, credential, token, draft)
        checked = enrollment.checked_start(found, token, user=user, now=uow.now())
        if uow.dialect == "postgresql":
            assert issued is not None, "PostgreSQL stores the challenge in the checks' statement"
        else:
            assert issued is None
            issued = enrollment.issue_drafted_within(
                uow, draft, checked, user, timedelta(seconds=60)
            )
        stored = challenges.find_challenge(uow, issued.id)
        assert stored is not None and stored.state == draft.stored_state(checked)
        return issued


@pytest.mark.parametrize("kind", [TokenKind.ADMIN, TokenKind.SELF])
@pytest.mark.parametrize("cas", [False, True], ids=["no-cas", "cas"])
@pytest.mark.parametrize("attestation_type", ["tpm_ekcert", "tpm_ekpub", None])
def test_the_first_round_trip_stores_the_state_with_the_token_kind_and_attestation_type(
    db: Database, kind: TokenKind, cas: bool, attestation_type: str | None
) -> None:
    _, credential = users.add_user(db.uow(), "alice", (Role.EDITOR,), actor="admin")
    devices.register_device(db.uow(), os_type="linux", asset_tag=TAG, actor="admin")
    token = tokens.create_token(db.uow(), TAG, actor="admin", kind=kind, user="alice").token
    if cas:
        pem = another_ca_pem().decode()
        preference.update_preference(
            db.uow(), DeviceTrust(ekcert_allowed_cas=(pem,)), actor="admin"
        )
    draft = draft_for(db, token, attestation_type)
    issued = start(db, credential, token, draft)
    assert issued is not None and issued.expire_time == draft.expire_time
    stored = draft.stored_state(
        enrollment.Start(devices.get_device(db.uow(), TAG), "", kind, ("ca",) if cas else ())
    )
    expected = {"token_kind": kind.value}
    if attestation_type:
        expected["attestation_type"] = "tpm_ekcert_trusted" if cas else attestation_type
    assert stored == draft.state | expected


@pytest.mark.parametrize("refusal", ["spent", "expired", "other-device", "enrolled", "bound"])
def test_a_first_round_trip_refused_by_its_checks_stores_no_challenge(
    db: Database, token: str, clock: Clock, refusal: str
) -> None:
    _, credential = users.add_user(db.uow(), "alice", (Role.EDITOR,), actor="admin")
    draft = draft_for(db, token, "tpm_ekcert")
    if refusal == "spent":
        enrollment.enroll_device(
            db.uow(), token=token, credential=CREDENTIAL, collected=collected(), user="bob"
        )
    elif refusal == "expired":
        clock.advance(hours=2)
        draft = draft_for(db, token, "tpm_ekcert")
    elif refusal == "other-device":
        draft = replace(draft, collected=collected("OTHER-1"))
    elif refusal == "enrolled":
        other = tokens.create_token(db.uow(), TAG, actor="admin").token
        enrollment.enroll_device(
            db.uow(), token=other, credential=CREDENTIAL, collected=collected(), user="bob"
        )
    else:
        token = tokens.create_token(db.uow(), TAG, actor="admin", user="bob").token
    uow = db.uow(autocommit=True)
    with uow:
        user, _, issued = enrollment.start_within(uow, credential, token, draft)
        assert user.name == "alice" and issued is None
        assert challenges.find_challenge(uow, draft.id) is None
