"""Ceremony challenges on SQLite and PostgreSQL: single use, short-lived, server-side."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from inventory.db import Database
from inventory.services import challenges, devices
from inventory.services.challenges import ChallengeInvalid
from tests.conftest import Clock, _empty


@pytest.fixture
def device_id(db: Database) -> str:
    return devices.register_device(db.uow(), os_type="linux", asset_tag="LNX-1", actor="a").id


def issue(db: Database, device_id: str, **kw: object) -> challenges.Challenge:
    return challenges.issue_challenge(
        db.uow(),
        kind="tpm",
        device_id=device_id,
        user_name="alice",
        state={"secret": "c2VjcmV0", "nonce": "bm9uY2U="},
        **kw,  # type: ignore[arg-type]
    )


def test_a_challenge_is_taken_once_with_its_state(db: Database, device_id: str) -> None:
    issued = issue(db, device_id)
    taken = challenges.take_challenge(db.uow(), issued.id, kind="tpm")
    assert taken.state == {"secret": "c2VjcmV0", "nonce": "bm9uY2U="}
    assert (taken.device_id, taken.user_name) == (device_id, "alice")
    with pytest.raises(ChallengeInvalid, match="already answered"):
        challenges.take_challenge(db.uow(), issued.id, kind="tpm")


def test_late_unknown_and_mismatched_responses_are_refused(
    db: Database, device_id: str, clock: Clock
) -> None:
    issued = issue(db, device_id)
    assert issued.expire_time == clock.now + timedelta(seconds=60)
    with pytest.raises(ChallengeInvalid, match="issued for tpm, not for macos"):
        challenges.take_challenge(db.uow(), issued.id, kind="macos")
    clock.advance(seconds=60)
    with pytest.raises(ChallengeInvalid, match="challenge expired at 12:01:00 UTC"):
        challenges.take_challenge(db.uow(), issued.id, kind="tpm")
    with pytest.raises(ChallengeInvalid, match="unknown challenge"):
        challenges.take_challenge(db.uow(), "no-such-challenge", kind="tpm")


def test_of_many_racing_responses_exactly_one_takes_the_challenge(
    db: Database, device_id: str
) -> None:
    issued = issue(db, device_id)
    wins: list[str] = []
    refusals: list[str] = []
    start = threading.Barrier(12)

    def respond() -> None:
        start.wait()
        try:
            wins.append(challenges.take_challenge(db.uow(), issued.id, kind="tpm").id)
        except ChallengeInvalid as exc:
            refusals.append(str(exc))

    threads = [threading.Thread(target=respond) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wins == [issued.id] and len(refusals) == 11


def test_expired_challenges_are_purged_and_go_with_their_device(
    db: Database, device_id: str, clock: Clock
) -> None:
    old = issue(db, device_id)
    clock.advance(hours=2)
    fresh = issue(db, device_id)
    assert challenges.purge_expired(db.uow()) == 1
    with pytest.raises(ChallengeInvalid, match="unknown"):
        challenges.take_challenge(db.uow(), old.id, kind="tpm")
    devices.remove_device(db.uow(), device_id=device_id, actor="a")
    with pytest.raises(ChallengeInvalid, match="unknown"):
        challenges.take_challenge(db.uow(), fresh.id, kind="tpm")


@pytest.mark.postgres
def test_a_challenge_alone_commits_without_waiting_for_the_disk_and_only_itself(
    postgres_url: str,
) -> None:
    db = Database.connect(postgres_url)
    try:
        device = devices.register_device(db.uow(), os_type="linux", asset_tag="PG-1", actor="a")
        uow = db.uow(autocommit=True)
        with uow:
            issued = challenges.issue_challenge_within(
                uow, kind="tpm", device_id=device.id, user_name="alice", state={"n": 1}
            )
            # SET LOCAL for the INSERT's own transaction: the connection's next statement
            # (an enrollment, say) waits for the disk again.
            (setting,) = uow.run(select(func.current_setting("synchronous_commit")))[0]
            assert setting == "on"
        taken = challenges.take_challenge(db.uow(), issued.id, kind="tpm")
        assert taken.state == {"n": 1}
    finally:
        _empty(db)
        db.close()
