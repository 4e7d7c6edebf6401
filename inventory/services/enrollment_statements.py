"""The enrollment ceremony's statements, built once at import (``enrollment`` runs them).

On PostgreSQL each round trip is one statement: ``START_AND_ISSUE`` checks the user,
the token, its device and the EK CAs allowed and inserts the challenge with them;
``CHAINED`` takes the answered challenge, enrolls the device, spends the token, stores
the report, trims the history and writes both audit events, as data-modifying CTEs each
acting only if the one before did. On SQLite the same steps run one by one (``START``,
``TAKE``, ``ENROLL_IF_ENROLLABLE``, ``SPEND``) in a short transaction.

Shared parameters: now, challenge, wanted_kind, user, hash, device, serial, os,
enrolled_status and the new credential's (new_credential_id, new_public_key,
new_ek_cert_serial, new_attestation_type, new_binding).

One TPM, one device: enrolling sets ``credential_binding`` (the digest of the EK, or of a
macOS enclave key), which a unique index keeps to one device, so of two racing
enrollments with one EK the database lets one through. The first round trip also reads,
in its own statement, which other device holds ``:binding`` (one read of that index):
a device whose EK is taken is refused before its TPM does any work.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import (
    JSON,
    Select,
    String,
    Table,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    null,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import JSONB

from inventory.db import labelled
from inventory.models import (
    AuditEventRow,
    ChallengeRow,
    ClusterPreferenceRow,
    CollectedDataRow,
    DeviceRow,
    EnrollmentTokenRow,
    UserRow,
)
from inventory.services import challenges, tokens

_DEVICES = cast(Table, DeviceRow.__table__)
# What enrolling sets on the device row.
_ENROLLED = {
    "enroll_status": bindparam("enrolled_status"),
    "owner": bindparam("user"),
    "credential_id": bindparam("new_credential_id"),
    "credential_public_key": bindparam("new_public_key"),
    "credential_ek_cert_serial": bindparam("new_ek_cert_serial"),
    "credential_attestation_type": bindparam("new_attestation_type"),
    "credential_binding": bindparam("new_binding", type_=String),
    "update_time": bindparam("now", type_=_DEVICES.c.update_time.type),
}
# The enrollment's own UPDATE, returning the enrolled device (``enroll_device_within``).
ENROLL = (
    update(_DEVICES)
    .where(_DEVICES.c.id == bindparam("device"))
    .values(**_ENROLLED)
    .returning(*_DEVICES.c)
)

_USERS = cast(Table, UserRow.__table__)
_TOKENS = cast(Table, EnrollmentTokenRow.__table__)
_PREFERENCES = cast(Table, ClusterPreferenceRow.__table__)
_CHALLENGES = cast(Table, ChallengeRow.__table__)
_COLLECTED = cast(Table, CollectedDataRow.__table__)
_AUDIT = cast(Table, AuditEventRow.__table__)

_HOLDERS = _DEVICES.alias("holder")
# The other device enrolled with ``:binding`` (the same EK or enclave key), if any: at
# most one, by the unique index, which this reads.
_BOUND_TO = (
    select(_HOLDERS.c.asset_tag)
    .where(
        _HOLDERS.c.credential_binding == bindparam("binding", type_=String),
        _HOLDERS.c.id != _DEVICES.c.id,
    )
    .scalar_subquery()
)
# The other device holding ``:binding``, after a unique violation said there is one.
BOUND_TO = select(_DEVICES.c.asset_tag).where(
    _DEVICES.c.credential_binding == bindparam("binding", type_=String)
)

# The user by their credential's hash, with the token, its device, the EK CAs allowed,
# the minimum trust level and the device already enrolled with the same EK.
START = (
    select(
        *labelled(_USERS, "u_"),
        *labelled(_TOKENS, "t_"),
        *labelled(_DEVICES, "d_"),
        _PREFERENCES.c.ekcert_allowed_cas.label("p_ekcert_allowed_cas"),
        _PREFERENCES.c.min_attestation.label("p_min_attestation"),
        _BOUND_TO.label("bound_to"),
    )
    .select_from(
        _USERS.outerjoin(_TOKENS, _TOKENS.c.token_hash == bindparam("token_hash"))
        .outerjoin(_DEVICES, _DEVICES.c.id == _TOKENS.c.device_id)
        .outerjoin(_PREFERENCES, _PREFERENCES.c.name == bindparam("preference"))
    )
    .where(_USERS.c.token_hash == bindparam("user_hash"))
)


def _start_and_issue() -> Select[Any]:
    """``START``, and in the same statement (PostgreSQL) the challenge ``:id`` stored if
    the token is spendable by this user now, its device is the one the collected data
    names (``:serial``, ``:os``) and is not enrolled; ``issued`` is its id, else NULL.

    The state is ``:state`` with the token's kind and, for a TPM ceremony
    (``:attestation_type`` set), the attestation type: tpm_ekcert_trusted when EK CAs are
    configured (the device's chain is verified after), else ``:attestation_type``. The
    challenge is alone in its transaction: as ``challenges``' own INSERT, its commit need
    not wait for the disk."""
    now = bindparam("create_time", type_=_CHALLENGES.c.create_time.type)
    attestation = bindparam("attestation_type", type_=String)
    cas = _PREFERENCES.c.ekcert_allowed_cas
    known = func.jsonb_strip_nulls(
        func.jsonb_build_object(
            "token_kind",
            _TOKENS.c.kind,
            "attestation_type",
            case(
                (attestation.is_(None), null()),
                (func.json_typeof(cas) != "array", attestation),
                (func.json_array_length(cas) > 0, "tpm_ekcert_trusted"),
                else_=attestation,
            ),
        )
    )
    state = sql_cast(
        sql_cast(bindparam("state", type_=_CHALLENGES.c.state.type), JSONB).op("||")(known), JSON
    )
    checked = (
        select(
            bindparam("id", type_=_CHALLENGES.c.id.type),
            bindparam("kind", type_=_CHALLENGES.c.kind.type),
            _DEVICES.c.id,
            _USERS.c.name,
            state,
            now,
            bindparam("expire_time", type_=_CHALLENGES.c.expire_time.type),
            null(),
        )
        .select_from(
            _USERS.join(_TOKENS, _TOKENS.c.token_hash == bindparam("token_hash"))
            .join(_DEVICES, _DEVICES.c.id == _TOKENS.c.device_id)
            .outerjoin(_PREFERENCES, _PREFERENCES.c.name == bindparam("preference"))
        )
        .where(
            _USERS.c.token_hash == bindparam("user_hash"),
            _TOKENS.c.spent_time.is_(None),
            _TOKENS.c.expire_time > now,
            _TOKENS.c.user_name.is_(None) | (_TOKENS.c.user_name == _USERS.c.name),
            _DEVICES.c.asset_tag == bindparam("serial"),
            _DEVICES.c.os_type == bindparam("os"),
            _DEVICES.c.enroll_status != bindparam("enrolled_status"),
            func.set_config("synchronous_commit", "off", true()) == "off",
        )
    )
    issued = (
        insert(_CHALLENGES)
        .from_select([c.name for c in _CHALLENGES.c], checked)
        .returning(_CHALLENGES.c.id)
        .cte("issued")
    )
    return START.add_columns(issued.c.id.label("issued")).join_from(
        _USERS, issued, true(), isouter=True
    )


START_AND_ISSUE = _start_and_issue()


def _now(table: Table, column: str) -> Any:
    return bindparam("now", type_=table.c[column].type)


ENROLL_STEP = (
    update(_DEVICES)
    .where(
        _DEVICES.c.id == bindparam("device"),
        _DEVICES.c.enroll_status != bindparam("enrolled_status"),
        _DEVICES.c.asset_tag == bindparam("serial"),
        _DEVICES.c.os_type == bindparam("os"),
        # its token, still spendable by this user
        exists().where(*tokens.spendable(), _TOKENS.c.device_id == _DEVICES.c.id),
    )
    .values(**_ENROLLED)
)
SPEND_STEP = (
    update(_TOKENS)
    .where(_TOKENS.c.token_hash == bindparam("hash"))
    .values(spent_time=_now(_TOKENS, "spent_time"))
)

# Step by step, in a transaction (SQLite).
TAKE = challenges.TAKE_AS_USER
ENROLL_IF_ENROLLABLE = ENROLL_STEP.returning(*_DEVICES.c)
SPEND = SPEND_STEP


def _values(table: Table, prefix: str, columns: list[str]) -> Select[Any]:
    """SELECT the parameters ``<prefix><column>``, typed as ``table``'s columns."""
    return select(*(bindparam(f"{prefix}{c}", type_=table.c[c].type) for c in columns))


def _chained() -> Select[Any]:
    """The steps as one statement (PostgreSQL): each a data-modifying CTE that acts only
    if the one before returned its row. All of them see the same snapshot, so the trim
    keeps one old report fewer than the limit: the new one is not visible to it."""
    taken = challenges.TAKE_AS_USER.cte("taken")
    enrolled = ENROLL_STEP.where(exists(select(taken.c.id))).returning(*_DEVICES.c).cte("enrolled")
    if_enrolled = exists(select(enrolled.c.id))
    spent = SPEND_STEP.where(if_enrolled).returning(_TOKENS.c.id).cte("spent")
    report = [c.name for c in _COLLECTED.c if c.name != "id"]
    collected = (
        insert(_COLLECTED)
        .from_select(report, _values(_COLLECTED, "c_", report).where(if_enrolled))
        .returning(_COLLECTED.c.id)
        .cte("collected")
    )
    newest = (
        select(_COLLECTED.c.id)
        .where(_COLLECTED.c.device_id == bindparam("device"))
        .order_by(_COLLECTED.c.id.desc())
        .offset(bindparam("keep_older"))
        .limit(1)
        .scalar_subquery()
    )
    trimmed = (
        delete(_COLLECTED)
        .where(_COLLECTED.c.device_id == bindparam("device"), _COLLECTED.c.id <= newest)
        .where(if_enrolled)
        .returning(_COLLECTED.c.id)
        .cte("trimmed")
    )
    event = [c.name for c in _AUDIT.c if c.name != "id"]
    audited = (
        insert(_AUDIT)
        .from_select(
            event,
            union_all(
                _values(_AUDIT, "spent_", event).where(if_enrolled),
                _values(_AUDIT, "enroll_", event).where(if_enrolled),
            ),
        )
        .returning(_AUDIT.c.id)
        .cte("audited")
    )
    return (
        select(taken.c.id.label("taken"), *enrolled.c)
        .select_from(taken.outerjoin(enrolled, true()))
        .add_cte(spent, collected, trimmed, audited)
    )


CHAINED = _chained()
