"""Ceremony challenges: what the server must remember between a ceremony's two round trips.

A challenge is issued with its state (the TPM secret and nonce, the AK's public area,
the enrollment token it will spend...) and a short life (default 60 s). Taking it back is
a conditional UPDATE, so of any number of responses racing for one challenge exactly one
gets it; a replayed, late or unknown one is refused. Any instance behind a load balancer
can continue a ceremony another one started: the state is in the database.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, func, insert, select, true, update
from sqlalchemy.sql.dml import ReturningUpdate

from inventory.db import UnitOfWork, inserting, labelled, unlabelled
from inventory.domain import User
from inventory.errors import DevtrustError
from inventory.models import ChallengeRow, UserRow
from inventory.services import users

DEFAULT_TTL = timedelta(seconds=60)


class ChallengeInvalid(DevtrustError):
    """An unknown, used, expired or mismatched challenge; the message says which."""

    http_status = 400


@dataclass(frozen=True)
class Challenge:
    id: str
    kind: str
    device_id: str
    user_name: str | None
    state: dict[str, Any]
    expire_time: datetime


def issue_challenge(
    uow: UnitOfWork,
    *,
    kind: str,
    device_id: str,
    user_name: str | None,
    state: dict[str, Any],
    ttl: timedelta = DEFAULT_TTL,
) -> Challenge:
    """Remember ``state`` for one response; returns the challenge with its id."""
    with uow:
        challenge = issue_challenge_within(
            uow, kind=kind, device_id=device_id, user_name=user_name, state=state, ttl=ttl
        )
        uow.commit()
        return challenge


def new_id() -> str:
    """A fresh challenge id: 32 random bytes, URL-safe."""
    return secrets.token_urlsafe(32)


def issue_challenge_within(
    uow: UnitOfWork,
    *,
    kind: str,
    device_id: str,
    user_name: str | None,
    state: dict[str, Any],
    ttl: timedelta = DEFAULT_TTL,
) -> Challenge:
    """``issue_challenge`` inside the caller's transaction."""
    if ttl <= timedelta(0):
        raise ValueError("a challenge's lifetime must be positive")
    now = uow.now()
    challenge = Challenge(
        id=new_id(),
        kind=kind,
        device_id=device_id,
        user_name=user_name,
        state=state,
        expire_time=now + ttl,
    )
    # A challenge lives a minute and a crash only makes its device start again: alone in
    # its transaction (autocommit, PostgreSQL), its commit need not wait for the disk.
    alone = uow.autocommit and uow.dialect == "postgresql"
    uow.run(
        _INSERT_WITHOUT_WAITING if alone else _INSERT,
        {
            "id": challenge.id,
            "kind": kind,
            "device_id": device_id,
            "user_name": user_name,
            "state": state,
            "create_time": now,
            "expire_time": challenge.expire_time,
            "used_time": None,
        },
    )
    return challenge


def take_challenge(
    uow: UnitOfWork, challenge_id: str, *, kind: str, user_name: str | None = None
) -> Challenge:
    """The challenge's state, once: used, expired, unknown or of another kind is refused.

    With ``user_name``, only that user may answer: another user's attempt is refused and
    leaves the challenge for its owner.
    """
    with uow:
        challenge = take_challenge_within(uow, challenge_id, kind=kind, user_name=user_name)
        uow.commit()
        return challenge


def take_challenge_within(
    uow: UnitOfWork, challenge_id: str, *, kind: str, user_name: str | None = None
) -> Challenge:
    """``take_challenge`` inside the caller's transaction: one UPDATE ... RETURNING."""
    now = uow.now()
    statement = TAKE_AS_USER if user_name is not None else _TAKE
    params = {"challenge": challenge_id, "wanted_kind": kind, "user": user_name, "now": now}
    taken = uow.run(statement, params)
    if not taken:
        raise ChallengeInvalid(why_not(find_challenge(uow, challenge_id), kind, user_name, now))
    return Challenge(**taken[0]._asdict())


def find_challenge_within(
    uow: UnitOfWork, credential: str, challenge_id: str
) -> tuple[User, SimpleNamespace | None]:
    """The user of ``credential`` (or Unauthenticated) and the challenge ``challenge_id``
    as stored (None: unknown), in one SELECT, neither taken nor locked: ``opened`` checks
    it; the caller verifies the answer and then takes the challenge in the statement that
    acts on it, whose ``used_time IS NULL`` condition makes that once only."""
    params = {"user_hash": users.credential_hash(credential), "challenge": challenge_id}
    row = uow.first(_FIND, params)
    user = users.user_with_credential(credential, unlabelled(row, "u_"))
    return user, unlabelled(row, "c_")


def find_challenge(uow: UnitOfWork, challenge_id: str) -> Any:
    """The challenge ``challenge_id`` as stored, taken or not; None: unknown."""
    return uow.first(_BY_ID, {"challenge": challenge_id})


def opened(row: SimpleNamespace | None, *, kind: str, user_name: str, now: datetime) -> Challenge:
    """The challenge ``row`` if ``user_name`` may answer it ``now``; else ChallengeInvalid."""
    if (
        row is None
        or row.kind != kind
        or row.user_name != user_name
        or row.used_time is not None
        or row.expire_time <= now
    ):
        raise ChallengeInvalid(why_not(row, kind, user_name, now))
    return Challenge(**{name: getattr(row, name) for name in _FIELDS})


def purge_expired(uow: UnitOfWork, *, older_than: timedelta = timedelta(hours=1)) -> int:
    """Forget challenges that expired more than ``older_than`` ago; returns how many."""
    with uow:
        result = uow.session.execute(
            delete(ChallengeRow).where(ChallengeRow.expire_time < uow.now() - older_than)
        )
        uow.commit()
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


def why_not(
    row: ChallengeRow | SimpleNamespace | None, kind: str, user_name: str | None, now: datetime
) -> str:
    """Why the challenge ``row`` (None: unknown) cannot be taken by ``user_name`` ``now``."""
    if row is None:
        return "unknown challenge: start the ceremony again"
    if row.kind != kind:
        return f"this challenge was issued for {row.kind}, not for {kind}"
    if user_name is not None and row.user_name != user_name:
        return "this challenge was issued to another user"
    if row.used_time is not None:
        return "challenge already answered: a response is accepted once"
    return f"challenge expired at {row.expire_time:%H:%M:%S} UTC: start the ceremony again"


_COLUMNS = (
    ChallengeRow.id,
    ChallengeRow.kind,
    ChallengeRow.device_id,
    ChallengeRow.user_name,
    ChallengeRow.state,
    ChallengeRow.expire_time,
)


# Built once: every ceremony stores one challenge and takes it back.
_TABLE = cast(Table, ChallengeRow.__table__)
_USERS = cast(Table, UserRow.__table__)
_INSERT = inserting(_TABLE)
_INSERT_WITHOUT_WAITING = insert(_TABLE).from_select(
    [c.name for c in _TABLE.c],
    select(*(bindparam(c.name, type_=c.type) for c in _TABLE.c)).where(
        # SET LOCAL, for the statement's own transaction
        func.set_config("synchronous_commit", "off", true()) == "off"
    ),
)


def _take(*, as_user: bool) -> ReturningUpdate[Any]:
    now = bindparam("now", type_=_TABLE.c.used_time.type)
    conditions = [
        _TABLE.c.id == bindparam("challenge"),
        _TABLE.c.kind == bindparam("wanted_kind"),
        _TABLE.c.used_time.is_(None),
        _TABLE.c.expire_time > now,
    ]
    if as_user:
        conditions.append(_TABLE.c.user_name == bindparam("user"))
    return update(_TABLE).where(*conditions).values(used_time=now).returning(*_COLUMNS)


_TAKE = _take(as_user=False)
_FIELDS = tuple(column.key for column in _COLUMNS)
# The user by their credential's hash, with the challenge they answer if it exists.
_FIND = (
    select(*labelled(_USERS, "u_"), *labelled(_TABLE, "c_"))
    .select_from(_USERS.outerjoin(_TABLE, _TABLE.c.id == bindparam("challenge")))
    .where(_USERS.c.token_hash == bindparam("user_hash"))
)
TAKE_AS_USER = _take(as_user=True)
_BY_ID = select(_TABLE).where(_TABLE.c.id == bindparam("challenge"))
