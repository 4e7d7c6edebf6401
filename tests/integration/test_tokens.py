"""Enrollment tokens: hashed at rest, bound to one device, expiring, spent exactly once."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from inventory.db import Database
from inventory.domain import Device, TokenKind
from inventory.errors import InvalidArgument, NotFound, TokenInvalid
from inventory.models import DeviceRow, EnrollmentTokenRow
from inventory.services import audit, tokens
from inventory.services import devices as devices_svc
from tests.conftest import Clock


@pytest.fixture
def device(db: Database) -> Device:
    return devices_svc.register_device(
        db.uow(), os_type="macos", asset_tag="C00AA0AAAA0A", actor="admin"
    )


def test_token_is_stored_only_as_its_hash(db: Database, device: Device) -> None:
    issued = tokens.create_token(db.uow(), "C00AA0AAAA0A", actor="admin")
    assert issued.device == device and issued.kind is TokenKind.ADMIN
    with db.uow() as uow:
        [row] = uow.session.scalars(select(EnrollmentTokenRow)).all()
        assert row.token_hash != issued.token and issued.token not in row.token_hash
        assert row.device_id == device.id
    [event] = audit.list_events(db.uow(), type=audit.DEVICE_TOKEN_CREATE)
    assert event.success and event.device_id == device.id
    assert issued.token not in repr(event)


def test_default_ttl_is_one_hour(db: Database, device: Device, clock: Clock) -> None:
    issued = tokens.create_token(db.uow(), device.id, actor="admin")
    assert issued.expire_time == clock.now + timedelta(hours=1)


def test_a_token_enrolls_its_own_device_once(db: Database, device: Device) -> None:
    issued = tokens.create_token(db.uow(), device.asset_tag, actor="admin")
    assert tokens.spend_token(db.uow(), issued.token, actor="alice").id == device.id
    with pytest.raises(TokenInvalid, match="already used"):
        tokens.spend_token(db.uow(), issued.token, actor="alice")
    results = [e.success for e in audit.list_events(db.uow(), type=audit.DEVICE_TOKEN_SPENT)]
    assert results == [True, False]


def test_an_expired_token_is_refused(db: Database, device: Device, clock: Clock) -> None:
    issued = tokens.create_token(
        db.uow(), device.asset_tag, actor="admin", ttl=timedelta(minutes=5)
    )
    clock.advance(minutes=5)
    with pytest.raises(TokenInvalid, match="expired at"):
        tokens.spend_token(db.uow(), issued.token, actor="alice")
    [event] = audit.list_events(db.uow(), type=audit.DEVICE_TOKEN_SPENT)
    assert not event.success and "expired" in event.message


def test_unknown_tokens_and_wrong_kinds_are_refused(db: Database, device: Device) -> None:
    with pytest.raises(TokenInvalid, match="invalid enrollment token"):
        tokens.spend_token(db.uow(), "guess", actor="mallory")
    issued = tokens.create_token(db.uow(), device.asset_tag, actor="admin")
    with pytest.raises(TokenInvalid, match="a admin enrollment token cannot be used here"):
        tokens.spend_token(db.uow(), issued.token, actor="x", kinds=frozenset({TokenKind.AUTO}))
    # A refusal does not spend the token.
    assert tokens.spend_token(db.uow(), issued.token, actor="alice").id == device.id


def test_an_auto_token_is_bound_to_its_user(db: Database, device: Device) -> None:
    with pytest.raises(InvalidArgument, match="bound to a user"):
        tokens.create_token(db.uow(), device.asset_tag, actor="auto", kind=TokenKind.AUTO)
    issued = tokens.create_token(
        db.uow(), device.asset_tag, actor="auto", kind=TokenKind.AUTO, user="alice"
    )
    with pytest.raises(TokenInvalid, match="another user"):
        tokens.spend_token(db.uow(), issued.token, actor="bob", user="bob")
    assert tokens.spend_token(db.uow(), issued.token, actor="alice", user="alice").id == device.id


def test_refused_token_creation_is_audited_with_its_reason(db: Database) -> None:
    with pytest.raises(NotFound):
        tokens.create_token(db.uow(), "NOPE", actor="admin")
    [event] = audit.list_events(db.uow(), type=audit.DEVICE_TOKEN_CREATE, failed_only=True)
    assert "device 'NOPE' not found" in event.message


def test_no_token_for_an_enrolled_device(db: Database, device: Device) -> None:
    with db.uow() as uow:
        row = uow.session.get(DeviceRow, device.id)
        assert row is not None
        row.enroll_status = "enrolled"
        uow.commit()
    with pytest.raises(InvalidArgument, match="already enrolled: run `devtrust devices unenroll"):
        tokens.create_token(db.uow(), device.asset_tag, actor="admin")


def test_bad_ttl_is_refused(db: Database, device: Device) -> None:
    with pytest.raises(InvalidArgument, match="TTL"):
        tokens.create_token(db.uow(), device.asset_tag, actor="admin", ttl=timedelta(days=30))


def test_tokens_go_with_their_device(db: Database, device: Device) -> None:
    issued = tokens.create_token(db.uow(), device.asset_tag, actor="admin")
    devices_svc.remove_device(db.uow(), actor="admin", device_id=device.id)
    with pytest.raises(TokenInvalid, match="invalid enrollment token"):
        tokens.spend_token(db.uow(), issued.token, actor="alice")


def test_twenty_concurrent_redemptions_of_one_token_succeed_exactly_once(
    db: Database, device: Device
) -> None:
    issued = tokens.create_token(db.uow(), device.asset_tag, actor="admin")
    start = threading.Barrier(20)
    outcomes: list[str] = []
    lock = threading.Lock()

    def redeem() -> None:
        start.wait()
        try:
            tokens.spend_token(db.uow(), issued.token, actor="racer")
            result = "ok"
        except TokenInvalid as exc:
            result = str(exc)
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=redeem) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(outcomes) == 20
    assert outcomes.count("ok") == 1
    assert set(outcomes) - {"ok"} == {"enrollment token was already used"}
    spent = audit.list_events(db.uow(), type=audit.DEVICE_TOKEN_SPENT)
    assert sum(e.success for e in spent) == 1 and len(spent) == 20
