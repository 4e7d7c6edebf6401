"""Users, their roles, and the credential a device agent sends on their behalf."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import Row, Table, bindparam, select

from inventory.credentials import hash_secret, new_secret, secret_matches
from inventory.db import UnitOfWork
from inventory.domain import Role, User, normalize_user_name
from inventory.errors import AlreadyExists, InvalidArgument, NotFound, Unauthenticated, quoted
from inventory.models import UserRow
from inventory.services import audit

MAX_LOGINS = 16


def parse_logins(texts: list[str] | str) -> tuple[str, ...]:
    """Comma-separated logins (``alice,alice.smith@corp.example``), each a valid user
    name, deduplicated in order; an empty text declares none."""
    parts = [texts] if isinstance(texts, str) else texts
    logins: list[str] = []
    for text in parts:
        for part in text.split(","):
            if not part.strip():
                continue
            try:
                login = normalize_user_name(part)
            except InvalidArgument as exc:
                raise InvalidArgument(f"--logins: {exc}") from None
            if login not in logins:
                logins.append(login)
    if len(logins) > MAX_LOGINS:
        raise InvalidArgument(f"--logins: {len(logins)} logins given, the limit is {MAX_LOGINS}")
    return tuple(logins)


def add_user(
    uow: UnitOfWork,
    name: str,
    roles: tuple[Role, ...],
    *,
    actor: str,
    logins: tuple[str, ...] = (),
) -> tuple[User, str]:
    """Create a user; returns the user and its credential, which is never shown again.
    ``logins`` are the names the user logs in to their devices with, besides their own."""
    name = normalize_user_name(name)
    token = new_secret()
    with uow:
        if uow.session.get(UserRow, name) is not None:
            raise AlreadyExists(f"user {name!r} already exists")
        now = uow.now()
        row = UserRow(
            name=name,
            roles=[r.value for r in roles],
            logins=list(logins),
            token_hash=hash_secret(token),
            create_time=now,
            update_time=now,
        )
        uow.session.add(row)
        audit.record_within(
            uow,
            audit.USER_CREATE,
            actor=actor,
            message=f"user {name} created with roles {', '.join(row.roles)}"
            + (f" and logins {', '.join(logins)}" if logins else ""),
            details={"user": name, "roles": row.roles, "logins": list(logins)},
        )
        uow.commit()
        return _to_user(row), token


def list_users(uow: UnitOfWork) -> list[User]:
    with uow.read():
        return [_to_user(r) for r in uow.session.scalars(select(UserRow).order_by(UserRow.name))]


def get_user(uow: UnitOfWork, name: str) -> User:
    with uow.read():
        return _to_user(_row(uow, name))


def user_and_credential_hash(uow: UnitOfWork, name: str) -> tuple[User, str] | None:
    """The user and the hash of their current credential (what a console session is
    bound to: it changes with ``reset_token`` and goes with the user); None: no such user."""
    with uow.read():
        row = uow.session.get(UserRow, name)
        return (_to_user(row), row.token_hash) if row is not None else None


def remove_user(uow: UnitOfWork, name: str, *, actor: str) -> User:
    with uow:
        row = _row(uow, name)
        user = _to_user(row)
        uow.session.delete(row)
        audit.record_within(
            uow,
            audit.USER_DELETE,
            actor=actor,
            message=f"user {user.name} removed",
            details={"user": user.name},
        )
        uow.commit()
        return user


def edit_user(
    uow: UnitOfWork,
    name: str,
    *,
    actor: str,
    roles: tuple[Role, ...] | None = None,
    logins: tuple[str, ...] | None = None,
    check: Callable[[User], None] | None = None,
) -> User:
    """Replace a user's roles and/or logins (None: keep them); audited with both.

    ``check`` is called with the user as the transaction found it (its row locked), and
    may refuse the change by raising: who may grant what is judged on the roles the user
    has when they change, not on an earlier read another admin's change could overtake."""
    if roles is None and logins is None:
        raise InvalidArgument("nothing to change: give --roles and/or --logins")
    with uow:
        row = _row(uow, name, for_update=True)
        if check is not None:
            check(_to_user(row))
        changes = []
        if roles is not None:
            row.roles = [r.value for r in roles]
            changes.append(f"roles {', '.join(row.roles)}")
        if logins is not None:
            row.logins = list(logins)
            changes.append(f"logins {', '.join(logins) or '(none)'}")
        row.update_time = uow.now()
        audit.record_within(
            uow,
            audit.USER_UPDATE,
            actor=actor,
            message=f"user {row.name} now has {' and '.join(changes)}",
            details={"user": row.name, "roles": row.roles, "logins": list(row.logins or ())},
        )
        uow.commit()
        return _to_user(row)


def reset_token(
    uow: UnitOfWork, name: str, *, actor: str, check: Callable[[User], None] | None = None
) -> tuple[User, str]:
    """Replace a user's credential; the old one stops working at once. ``check`` as in
    ``edit_user``: whoever sees the new credential holds the user's roles."""
    token = new_secret()
    with uow:
        row = _row(uow, name, for_update=True)
        if check is not None:
            check(_to_user(row))
        row.token_hash = hash_secret(token)
        row.update_time = uow.now()
        audit.record_within(
            uow,
            audit.USER_UPDATE,
            actor=actor,
            message=f"credential of user {row.name} reset",
            details={"user": row.name},
        )
        uow.commit()
        return _to_user(row), token


def authenticate(uow: UnitOfWork, token: str) -> User:
    """The user whose credential this is, or Unauthenticated."""
    with uow.read():
        return authenticate_within(uow, token)


def authenticate_within(uow: UnitOfWork, token: str) -> User:
    """``authenticate`` inside the caller's transaction."""
    row = uow.session.execute(_BY_TOKEN_HASH, {"hash": credential_hash(token)}).one_or_none()
    return user_with_credential(token, row)


def credential_hash(token: str) -> str:
    """What a user is looked up by: the hash of their credential (which must be given)."""
    token = token.strip()
    if not token:
        raise Unauthenticated("no user credential given: set DEVTRUST_USER_TOKEN")
    return hash_secret(token)


def user_with_credential(token: str, row: Any) -> User:
    """The user of ``row`` (columns of the users table; None: not found), looked up by
    ``credential_hash(token)``, or Unauthenticated. For queries that find the user along
    with what the request is about, in one round trip."""
    if row is None or not secret_matches(token.strip(), row.token_hash):
        raise Unauthenticated("invalid user credential (check DEVTRUST_USER_TOKEN)")
    return _to_user(row)


def _row(uow: UnitOfWork, name: str, *, for_update: bool = False) -> UserRow:
    """The user's row; ``for_update``: locked until the transaction ends (PostgreSQL; a
    SQLite write transaction that read a row another has changed since fails instead)."""
    row = uow.session.get(UserRow, normalize_user_name(name), with_for_update=for_update)
    if row is None:
        raise NotFound(f"user {quoted(name.strip())} not found")
    return row


def _to_user(row: UserRow | Row[Any]) -> User:
    return User(
        name=row.name,
        roles=tuple(Role(r) for r in row.roles),
        create_time=row.create_time,
        update_time=row.update_time,
        logins=tuple(row.logins or ()),
    )


# Built once: every request from a device agent authenticates.
_USERS = cast(Table, UserRow.__table__)
_BY_TOKEN_HASH = select(_USERS).where(_USERS.c.token_hash == bindparam("hash"))
