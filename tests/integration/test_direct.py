"""Statements run on the driver's own connection (inventory.direct), on SQLite and
PostgreSQL: they read and write what a Session does, refuse what they cannot run, and
fail as SQLAlchemy would."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Executable, bindparam, func, select
from sqlalchemy.exc import IntegrityError

from inventory import direct
from inventory.db import Database
from inventory.domain import CollectedData, OSType, Role
from inventory.models import ChallengeRow
from inventory.services import challenges, devices, enrollment_statements, tokens, users
from inventory.services.devices import record_collected_data_within

TAG = "LNX-DIRECT-1"
STATE = {"secret": "c2VjcmV0", "nested": {"pcrs": [0, 7]}, "none": None}


@pytest.fixture
def seeded(db: Database) -> tuple[str, str, str]:
    """A user's credential, a device's id and its token."""
    _, credential = users.add_user(db.uow(), "alice", (Role.ACCESS,), actor="admin")
    device = devices.register_device(db.uow(), os_type="linux", asset_tag=TAG, actor="admin")
    token = tokens.create_token(db.uow(), TAG, actor="admin", user="alice").token
    return credential, device.id, token


def both_ways(
    db: Database, statement: Executable, params: Mapping[str, object]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``statement``'s rows through a Session and on the driver's connection."""
    with db.uow() as uow:
        through_session = [row._asdict() for row in uow.run(statement, params)]
    with db.uow(autocommit=True) as uow:
        assert uow.autocommit
        directly = [row._asdict() for row in uow.run(statement, params)]
    return through_session, directly


def test_rows_are_a_sessions_rows(db: Database, seeded: tuple[str, str, str]) -> None:
    credential, device_id, token = seeded
    start = {
        "user_hash": users.credential_hash(credential),
        "token_hash": tokens.hash_token(token),
        "preference": "cluster",
        "binding": None,
    }
    through_session, directly = both_ways(db, enrollment_statements.START, start)
    assert directly == through_session and len(directly) == 1
    row = directly[0]
    assert row["u_name"] == "alice" and row["t_user_name"] == "alice" and row["d_id"] == device_id
    # Typed by their columns: aware UTC times on both databases, JSON as Python.
    assert row["t_expire_time"].tzinfo is not None
    assert row["t_expire_time"].utcoffset() == timedelta(0)
    assert row["u_roles"] == ["access"]

    with db.uow(autocommit=True) as uow:
        issued = challenges.issue_challenge_within(
            uow, kind="tpm", device_id=device_id, user_name="alice", state=STATE
        )
    find = {"user_hash": users.credential_hash(credential), "challenge": issued.id}
    through_session, directly = both_ways(db, challenges._FIND, find)
    assert directly == through_session
    assert directly[0]["c_state"] == STATE and directly[0]["c_used_time"] is None
    assert directly[0]["c_expire_time"] == issued.expire_time


def test_writes_are_read_back_by_a_session(db: Database, seeded: tuple[str, str, str]) -> None:
    _, device_id, _ = seeded
    report = CollectedData(serial_number=TAG, os_type=OSType.LINUX, os_login_user="alice")
    with db.uow(autocommit=True) as uow:
        for _ in range(3):
            record_collected_data_within(uow, device_id, report, keep=2)
    history = devices.collected_history(db.uow(), device_id)
    assert len(history) == 2 and all(h.os_login_user == "alice" for h in history)


def test_parameters_go_through_their_columns_types(
    db: Database, seeded: tuple[str, str, str]
) -> None:
    _, device_id, _ = seeded
    naive = datetime(2026, 1, 1)  # the point of the test
    with db.uow(autocommit=True) as uow, pytest.raises(ValueError, match="naive datetime"):
        uow.run(
            challenges._INSERT,
            {
                "id": "c-1",
                "kind": "tpm",
                "device_id": device_id,
                "user_name": None,
                "state": {},
                "create_time": naive,
                "expire_time": naive,
                "used_time": None,
            },
        )


def test_a_driver_error_is_sqlalchemys_and_the_connection_goes_on(db: Database) -> None:
    now = datetime.now(UTC)
    values: dict[str, object] = {
        "id": "c-1",
        "kind": "tpm",
        "device_id": "no-such-device",
        "user_name": None,
        "state": {},
        "create_time": now,
        "expire_time": now,
        "used_time": None,
    }
    with db.uow(autocommit=True) as uow:
        with pytest.raises(IntegrityError, match="FOREIGN KEY|foreign key"):
            uow.run(challenges._INSERT, values)
        [(one,)] = uow.run(select(func.abs(-1)))
    assert one == 1


def test_a_transaction_commits_together_or_not_at_all(
    db: Database, seeded: tuple[str, str, str]
) -> None:
    _, device_id, _ = seeded
    report = CollectedData(serial_number=TAG, os_type=OSType.LINUX)

    def refused_half_way() -> None:
        with db.uow(autocommit=True) as uow, uow.transaction():
            record_collected_data_within(uow, device_id, report, keep=5)
            raise RuntimeError("refused half-way")

    with pytest.raises(RuntimeError, match="half-way"):
        refused_half_way()
    assert devices.collected_history(db.uow(), device_id) == []
    with db.uow(autocommit=True) as uow:
        with uow.transaction():
            record_collected_data_within(uow, device_id, report, keep=5)
            record_collected_data_within(uow, device_id, report, keep=5)
        # after the transaction, statements commit one by one again
        record_collected_data_within(uow, device_id, report, keep=5)
    assert len(devices.collected_history(db.uow(), device_id)) == 3


def test_what_it_cannot_run_is_refused_up_front(db: Database) -> None:
    expanding = select(ChallengeRow.id).where(ChallengeRow.id.in_(bindparam("ids", expanding=True)))
    with db.uow(autocommit=True) as uow, pytest.raises(ValueError, match="rendered per execution"):
        uow.run(expanding, {"ids": ["a"]})


def test_columns_of_one_name_must_be_labelled(db: Database) -> None:
    twice = select(ChallengeRow.id, ChallengeRow.kind, ChallengeRow.id)
    with db.uow(autocommit=True) as uow, pytest.raises(ValueError, match="id are selected twice"):
        uow.run(twice)


def test_a_statement_compiles_once_per_dialect(db: Database) -> None:
    dialect = db.engine.dialect
    assert direct.compiled(enrollment_statements.START, dialect) is direct.compiled(
        enrollment_statements.START, dialect
    )
