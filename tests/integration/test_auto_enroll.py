"""Auto-enrollment's check on SQLite and PostgreSQL: the token, the refusals, the race."""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from inventory.db import Database
from inventory.domain import (
    AttestationType,
    AuditEvent,
    CollectedData,
    Credential,
    OSType,
    Profile,
    TokenKind,
)
from inventory.drift import AutoEnrollRefused
from inventory.errors import TokenInvalid
from inventory.services import audit, auto_enroll, devices, enrollment
from tests.conftest import Clock
from tests.services import drop_other_connections

TAG = "C02XL0GJJGH5"
PROFILE = Profile(
    model_identifier="MacBookPro18,3",
    os_version="14.2.1",
    os_build="23C71",
    os_usernames=("alice", "bob"),
    jamf_binary_version="11.1.0",
    external_id="42",
)
COLLECTED = CollectedData(
    serial_number=TAG,
    os_type=OSType.MACOS,
    model_identifier="MacBookPro18,3",
    os_version="14.2.1",
    os_build="23C71",
    os_login_user="alice",
    jamf_binary_version="11.1.0",
)
CREDENTIAL = Credential("cred-1", b"key", None, AttestationType.NONE)


@pytest.fixture
def synced(db: Database) -> str:
    return devices.register_device(
        db.uow(), os_type="macos", asset_tag=TAG, actor="jamf", profile=PROFILE
    ).id


def token_events(db: Database) -> list[AuditEvent]:
    return audit.list_events(db.uow(), type=audit.DEVICE_TOKEN_CREATE)


def test_a_matching_device_gets_a_short_single_use_token_bound_to_the_user(
    db: Database, synced: str, clock: Clock
) -> None:
    issued = auto_enroll.check_and_mint(db.uow(), user="alice", collected=COLLECTED)
    assert (issued.kind, issued.user, issued.device.id) == (TokenKind.AUTO, "alice", synced)
    assert issued.expire_time == clock.now + auto_enroll.AUTO_TOKEN_TTL
    [event] = token_events(db)
    assert event.success and event.actor == "alice" and event.details["kind"] == "auto"
    assert devices.collected_history(db.uow(), synced) == []  # recorded when enrolled

    with pytest.raises(TokenInvalid, match="minted for another user"):
        enrollment.enroll_device(
            db.uow(), token=issued.token, credential=CREDENTIAL, collected=COLLECTED, user="bob"
        )
    enrolled = enrollment.enroll_device(
        db.uow(), token=issued.token, credential=CREDENTIAL, collected=COLLECTED, user="alice"
    )
    assert enrolled.owner == "alice"
    assert devices.collected_history(db.uow(), synced)[0].os_login_user == "alice"


@pytest.mark.parametrize(
    ("collected", "told", "audited"),
    [
        (replace(COLLECTED, serial_number="NOPE"), "device not found", "device not found"),
        (replace(COLLECTED, os_type=OSType.LINUX), "device not found", "device not found"),
        (
            replace(COLLECTED, os_version="14.3"),
            "os_version differs: the device changed",
            "os_version differs: the device reports '14.3', the MDM profile says '14.2.1'",
        ),
    ],
)
def test_refusals_are_audited_with_their_reason_and_mint_nothing(
    db: Database, synced: str, collected: CollectedData, told: str, audited: str
) -> None:
    """The device is told what failed; only the audit log says what the MDM has."""
    with pytest.raises(AutoEnrollRefused, match=told) as refused:
        auto_enroll.check_and_mint(db.uow(), user="alice", collected=collected)
    assert "14.2.1" not in str(refused.value)
    [event] = token_events(db)
    assert not event.success and audited in event.message
    assert event.message.startswith(f"auto-enrollment of {collected.serial_number}/")
    found = collected.serial_number == TAG and collected.os_type is OSType.MACOS
    assert event.device_id == (synced if found else None)
    history = devices.collected_history(db.uow(), synced)
    assert [h.os_version for h in history] == (["14.3"] if found else [])


def test_an_enrolled_device_is_refused_whoever_enrolled_it(db: Database, synced: str) -> None:
    issued = auto_enroll.check_and_mint(db.uow(), user="alice", collected=COLLECTED)
    enrollment.enroll_device(
        db.uow(), token=issued.token, credential=CREDENTIAL, collected=COLLECTED, user="alice"
    )
    bob = replace(COLLECTED, os_login_user="bob")
    with pytest.raises(AutoEnrollRefused, match="^device is already enrolled$"):
        auto_enroll.check_and_mint(db.uow(), user="bob", collected=bob)


def test_a_second_check_while_a_token_is_live_is_refused_until_it_expires(
    db: Database, synced: str, clock: Clock
) -> None:
    auto_enroll.check_and_mint(db.uow(), user="alice", collected=COLLECTED)
    bob = replace(COLLECTED, os_login_user="bob")
    with pytest.raises(AutoEnrollRefused, match="already under way"):
        auto_enroll.check_and_mint(db.uow(), user="bob", collected=bob)
    clock.advance(minutes=6)
    assert auto_enroll.check_and_mint(db.uow(), user="bob", collected=bob).user == "bob"


@pytest.mark.postgres
def test_racing_checks_from_two_users_yield_one_token_on_postgresql(
    postgres_url: str, clock: Clock
) -> None:
    from tests.conftest import _empty

    db = Database.connect(postgres_url, clock=clock, pool_size=25, max_overflow=5)
    try:
        devices.register_device(
            db.uow(), os_type="macos", asset_tag=TAG, actor="jamf", profile=PROFILE
        )
        start = threading.Barrier(20)
        minted: list[str] = []
        refused: list[str] = []

        def attempt(user: str) -> None:
            start.wait()
            try:
                collected = replace(COLLECTED, os_login_user=user)
                minted.append(
                    auto_enroll.check_and_mint(db.uow(), user=user, collected=collected).user or ""
                )
            except AutoEnrollRefused as exc:
                refused.append(str(exc))

        threads = [
            threading.Thread(target=attempt, args=("alice" if i % 2 else "bob",)) for i in range(20)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(minted) == 1 and len(refused) == 19
        assert all("already under way" in reason for reason in refused)
        assert sum(e.success for e in token_events(db)) == 1
    finally:
        _empty(db)
        db.close()


@pytest.mark.postgres
def test_the_worker_check_survives_its_database_dropping_the_connection(
    postgres_url: str,
) -> None:
    """The worker's pool does not ping before each check: a dropped connection is retried
    once on a fresh one, so a database restart costs no login a refusal."""

    from ceremony.protocol import Collected
    from inventory.settings import load_settings
    from tests.conftest import _empty
    from worker import jobs

    db = Database.connect(postgres_url)
    settings = load_settings(database_url=postgres_url)
    try:
        for tag in ("C02DROP00001", "C02DROP00002"):
            devices.register_device(
                db.uow(), os_type="macos", asset_tag=tag, actor="jamf", profile=PROFILE
            )

        def check(tag: str) -> dict[str, object]:
            wire = Collected.from_domain(replace(COLLECTED, serial_number=tag))
            return jobs.auto_enroll_check(
                settings,
                user="alice",
                collected=wire.model_dump(mode="json"),
                check=auto_enroll.open_check(db.uow(), "alice"),
            )

        first = check("C02DROP00001")
        assert first["ok"] is True, first
        assert drop_other_connections(db.engine)  # the worker's pooled connection among them
        assert check("C02DROP00002")["ok"] is True
    finally:
        _empty(db)
        db.close()


def test_collected_data_the_worker_cannot_read_is_refused_naming_the_field(
    tmp_path: Path,
) -> None:
    from inventory.settings import load_settings
    from worker import jobs

    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'devtrust.db'}")
    verdict = jobs.auto_enroll_check(
        settings,
        user="alice",
        collected={"serial_number": TAG, "os_type": "beos"},
        check="00000000-0000-4000-8000-000000000000",
    )
    assert verdict["ok"] is False and verdict["status"] == 400
    assert str(verdict["reason"]).startswith("collected data: os_type: Input should be ")


def test_a_submitted_check_seals_its_token_with_a_key_only_its_row_holds(
    db: Database, synced: str, clock: Clock
) -> None:
    check = auto_enroll.open_check(db.uow(autocommit=True), "alice")
    issued, sealed = auto_enroll.check_and_seal(
        db.uow(), check=check, user="alice", collected=COLLECTED
    )
    assert issued.token not in sealed
    assert auto_enroll.check_is_open(db.uow(), check, "alice")
    assert not auto_enroll.check_is_open(db.uow(), check, "bob")  # someone else's
    assert auto_enroll.close_check(db.uow(autocommit=True), check, "bob") is None
    key = auto_enroll.close_check(db.uow(autocommit=True), check, "alice")
    assert key is not None and auto_enroll.unseal(key, sealed) == issued.token
    assert auto_enroll.close_check(db.uow(autocommit=True), check, "alice") is None  # once


def test_a_check_whose_row_is_gone_mints_nothing_and_expired_rows_are_purged(
    db: Database, synced: str, clock: Clock
) -> None:
    with pytest.raises(AutoEnrollRefused, match="expired before it ran"):
        auto_enroll.check_and_seal(
            db.uow(), check=str(uuid.uuid4()), user="alice", collected=COLLECTED
        )
    [event] = token_events(db)
    assert not event.success and "expired before it ran" in event.message
    check = auto_enroll.open_check(db.uow(autocommit=True), "alice")
    clock.advance(minutes=5)  # the token's own lifetime
    assert not auto_enroll.check_is_open(db.uow(), check, "alice")
    assert auto_enroll.close_check(db.uow(autocommit=True), check, "alice") is None
    assert auto_enroll.purge_checks(db.uow(autocommit=True)) == [check]


class RecordingQueue:
    """The service's queue, stood in for: records what the service asks of it."""

    def __init__(self) -> None:
        self.submitted: list[str] = []
        self.forgotten: list[str] = []

    def submit(self, check_id: str, user: str, logins: object, collected: object) -> None:
        self.submitted.append(check_id)

    def verdict(self, check_id: str, wait: float) -> dict[str, object] | None:
        return None

    def forget(self, check_id: str) -> None:
        self.forgotten.append(check_id)


def test_the_service_forgets_checks_that_expired_undelivered(db: Database, clock: Clock) -> None:
    from ceremony.autoenroll import AutoEnrollment
    from ceremony.protocol import AutoEnrollPending, Collected
    from inventory.domain import Role
    from inventory.preference import DeviceTrust
    from inventory.services import preference, users

    class NoLimit:
        def hit(self, key: str) -> None:
            pass

    _, credential = users.add_user(db.uow(), "alice", (Role.ACCESS,), actor="admin")
    preference.update_preference(db.uow(), DeviceTrust(auto_enroll=True), actor="admin")
    queue = RecordingQueue()
    service = AutoEnrollment(db, queue, NoLimit(), wait=0)
    sent = Collected.from_domain(COLLECTED)
    first = service.request(credential, sent)
    assert isinstance(first, AutoEnrollPending)
    assert first.check_id == queue.submitted[0] and queue.forgotten == []
    clock.advance(minutes=5)
    service._next_purge = 0.0  # the minute between purges has passed
    service.request(credential, sent)
    assert queue.forgotten == [first.check_id]  # its verdict, if any, deleted too
    assert not auto_enroll.check_is_open(db.uow(), first.check_id, "alice")
    assert auto_enroll.check_is_open(db.uow(), queue.submitted[1], "alice")
