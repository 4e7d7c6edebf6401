"""Read and change the stored cluster device-trust preference."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Row, Table, bindparam, select

from inventory.db import UnitOfWork
from inventory.errors import AlreadyExists
from inventory.models import ClusterPreferenceRow
from inventory.preference import (
    FIELDS,
    NAME,
    DeviceTrust,
    DeviceTrustMode,
    Preference,
    min_attestation_text,
    parse_min_attestation,
)
from inventory.services import audit


def get_preference(uow: UnitOfWork) -> Preference:
    """The stored preference, or the defaults when nobody has set one."""
    with uow.read():
        return get_preference_within(uow)


def get_preference_within(uow: UnitOfWork) -> Preference:
    """The stored preference, read in the caller's transaction."""
    return _to_preference(uow.session.execute(_BY_NAME, {"name": NAME}).one_or_none())


def update_preference(
    uow: UnitOfWork,
    device_trust: DeviceTrust,
    *,
    actor: str,
    expected_revision: int | None = None,
) -> tuple[Preference, list[str]]:
    """Store a validated preference; returns it and the names of the fields that changed.

    With ``expected_revision`` the update is refused if someone else changed the
    preference since it was read (an editor open for minutes must not clobber it).
    """
    with uow:
        row = uow.session.get(ClusterPreferenceRow, NAME, with_for_update=True)
        current = _to_preference(row)
        if expected_revision is not None and current.revision != expected_revision:
            raise AlreadyExists(
                f"the preference changed while you were editing it (revision "
                f"{expected_revision} -> {current.revision}); run the command again"
            )
        old = current.device_trust
        changed = [f for f in FIELDS if getattr(old, f) != getattr(device_trust, f)]
        if not changed:
            return current, []
        if row is None:
            row = ClusterPreferenceRow(name=NAME, revision=0)
            uow.session.add(row)
        row.mode = device_trust.mode.value
        row.auto_enroll = device_trust.auto_enroll
        row.ekcert_allowed_cas = list(device_trust.ekcert_allowed_cas)
        minimum = device_trust.min_attestation
        row.min_attestation = None if minimum is None else minimum.value
        row.revision = current.revision + 1
        row.update_time = uow.now()
        audit.record_within(
            uow,
            audit.CONFIG_UPDATE,
            actor=actor,
            message="cluster preference updated: "
            + ", ".join(f"device_trust.{f}" for f in changed),
            details={
                "changed": changed,
                "mode": row.mode,
                "auto_enroll": row.auto_enroll,
                "ekcert_allowed_cas": len(row.ekcert_allowed_cas),
                "min_attestation": min_attestation_text(minimum),
            },
        )
        uow.commit()
        return _to_preference(row), changed


def _to_preference(row: ClusterPreferenceRow | Row[Any] | None) -> Preference:
    if row is None:
        return Preference(device_trust=DeviceTrust())
    return Preference(
        device_trust=DeviceTrust(
            mode=DeviceTrustMode(row.mode),
            auto_enroll=row.auto_enroll,
            ekcert_allowed_cas=tuple(row.ekcert_allowed_cas),
            min_attestation=parse_min_attestation(row.min_attestation),
        ),
        revision=row.revision,
        update_time=row.update_time,
    )


# Built once: every enrollment reads the preference.
_PREFERENCES = cast(Table, ClusterPreferenceRow.__table__)
_BY_NAME = select(_PREFERENCES).where(_PREFERENCES.c.name == bindparam("name"))
