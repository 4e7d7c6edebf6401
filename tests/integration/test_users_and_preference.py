"""Users and their credentials; the stored cluster preference."""

from __future__ import annotations

import pytest

from inventory.db import Database
from inventory.domain import Role
from inventory.errors import AlreadyExists, NotFound, Unauthenticated
from inventory.models import UserRow
from inventory.preference import DeviceTrust, DeviceTrustMode
from inventory.services import audit, users
from inventory.services import preference as pref_svc


def test_a_user_is_authenticated_by_the_credential_printed_once(db: Database) -> None:
    user, token = users.add_user(db.uow(), "alice", (Role.ACCESS, Role.EDITOR), actor="admin")
    assert user.roles == (Role.ACCESS, Role.EDITOR)
    assert users.authenticate(db.uow(), token) == user
    with db.uow() as uow:
        row = uow.session.get(UserRow, "alice")
        assert row is not None and token not in row.token_hash
    with pytest.raises(Unauthenticated, match="invalid user credential"):
        users.authenticate(db.uow(), token[:-1] + ("A" if token[-1] != "A" else "B"))
    with pytest.raises(Unauthenticated, match="set DEVTRUST_USER_TOKEN"):
        users.authenticate(db.uow(), "")


def test_reset_token_retires_the_old_credential(db: Database) -> None:
    _, old = users.add_user(db.uow(), "alice", (Role.ACCESS,), actor="admin")
    _, new = users.reset_token(db.uow(), "alice", actor="admin")
    assert new != old
    assert users.authenticate(db.uow(), new).name == "alice"
    with pytest.raises(Unauthenticated):
        users.authenticate(db.uow(), old)


def test_users_are_unique_listed_and_removed(db: Database) -> None:
    users.add_user(db.uow(), "bob", (Role.BOT,), actor="admin")
    users.add_user(db.uow(), "alice", (Role.DEVICE_ADMIN,), actor="admin")
    with pytest.raises(AlreadyExists, match="user 'alice' already exists"):
        users.add_user(db.uow(), "alice", (Role.ACCESS,), actor="admin")
    assert [u.name for u in users.list_users(db.uow())] == ["alice", "bob"]
    users.remove_user(db.uow(), "bob", actor="admin")
    with pytest.raises(NotFound, match="user 'bob' not found"):
        users.remove_user(db.uow(), "bob", actor="admin")
    types = [e.type for e in audit.list_events(db.uow())]
    assert types == [audit.USER_CREATE, audit.USER_CREATE, audit.USER_DELETE]


def test_preference_defaults_until_set(db: Database) -> None:
    pref = pref_svc.get_preference(db.uow())
    assert pref.device_trust == DeviceTrust(DeviceTrustMode.OPTIONAL, False, ())
    assert pref.revision == 0


def test_preference_update_is_audited_with_the_changed_fields(db: Database) -> None:
    wanted = DeviceTrust(DeviceTrustMode.REQUIRED, True, ())
    pref, changed = pref_svc.update_preference(db.uow(), wanted, actor="admin")
    assert changed == ["mode", "auto_enroll"]
    assert pref_svc.get_preference(db.uow()) == pref
    assert pref.revision == 1
    [event] = audit.list_events(db.uow(), type=audit.CONFIG_UPDATE)
    assert event.details["changed"] == ["mode", "auto_enroll"]
    # Writing the same values again changes and records nothing.
    assert pref_svc.update_preference(db.uow(), wanted, actor="admin")[1] == []
    assert len(audit.list_events(db.uow(), type=audit.CONFIG_UPDATE)) == 1


def test_a_stale_edit_is_refused_and_changes_nothing(db: Database) -> None:
    pref_svc.update_preference(db.uow(), DeviceTrust(auto_enroll=True), actor="a")
    with pytest.raises(AlreadyExists, match="changed while you were editing"):
        pref_svc.update_preference(
            db.uow(), DeviceTrust(mode=DeviceTrustMode.OFF), actor="b", expected_revision=0
        )
    assert pref_svc.get_preference(db.uow()).device_trust == DeviceTrust(auto_enroll=True)
