"""The audit log: every change writes its event in the transaction that makes it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, select

from inventory.db import UnitOfWork, inserting
from inventory.domain import AuditEvent, Device
from inventory.errors import InvalidArgument, clip, quoted
from inventory.models import AuditEventRow

DEVICE_CREATE = "device.create"
DEVICE_UPDATE = "device.update"
DEVICE_DELETE = "device.delete"
DEVICE_TOKEN_CREATE = "device.token.create"  # noqa: S105 (an event name)
DEVICE_TOKEN_SPENT = "device.token.spent"  # noqa: S105
DEVICE_ENROLL = "device.enroll"
DEVICE_AUTHENTICATE = "device.authenticate"
JAMF_SYNC = "jamf.sync"
CONFIG_UPDATE = "config.update"
USER_CREATE = "user.create"
USER_UPDATE = "user.update"
USER_DELETE = "user.delete"
EVENT_TYPES = (
    DEVICE_CREATE,
    DEVICE_UPDATE,
    DEVICE_DELETE,
    DEVICE_TOKEN_CREATE,
    DEVICE_TOKEN_SPENT,
    DEVICE_ENROLL,
    DEVICE_AUTHENTICATE,
    JAMF_SYNC,
    CONFIG_UPDATE,
    USER_CREATE,
    USER_UPDATE,
    USER_DELETE,
)


#: The ``actor`` column's width: callers naming an actor from outside input check it.
MAX_ACTOR_LENGTH = 128
#: What one event's message keeps. Messages quote user input through ``errors.quoted``;
#: this bounds whatever else a message carries, so no argument is stored whole.
MAX_MESSAGE_LENGTH = 2000


def record_within(
    uow: UnitOfWork,
    type: str,
    *,
    actor: str,
    message: str,
    success: bool = True,
    device: Device | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Add an event to the caller's open transaction; it commits or rolls back with it.

    A plain INSERT, not an ORM object: nothing reads the row back, so the unit of work's
    bookkeeping would be pure cost on every audited change.
    """
    uow.session.execute(
        INSERT,
        {
            "time": uow.now(),
            "type": type,
            "success": success,
            "actor": clip(actor, MAX_ACTOR_LENGTH),
            "message": clip(message, MAX_MESSAGE_LENGTH),
            "device_id": device.id if device else None,
            "asset_tag": device.asset_tag if device else None,
            "os_type": device.os_type.value if device else None,
            "details": details or None,
        },
    )


# Built once: a plain INSERT with its values passed as parameters (all but the id).
INSERT = inserting(cast(Table, AuditEventRow.__table__))


def record_failure(
    uow: UnitOfWork,
    type: str,
    *,
    actor: str,
    message: str,
    device: Device | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Record a refused operation in a transaction of its own (the refused one rolled back)."""
    with uow:
        record_within(
            uow, type, actor=actor, message=message, success=False, device=device, details=details
        )
        uow.commit()


def list_events(
    uow: UnitOfWork,
    *,
    type: str | None = None,
    failed_only: bool = False,
    since: datetime | None = None,
    limit: int = 100,
) -> list[AuditEvent]:
    """The newest ``limit`` matching events, oldest first."""
    newest = events_page(uow, type=type, failed_only=failed_only, since=since, limit=limit)
    return newest[::-1]


#: The most events one page of the admin API holds (``GET /v1/admin/audit?limit=``).
MAX_PAGE = 5000


def check_event_type(type: str | None) -> None:
    """Refuse a ``type`` filter no event can have (an empty one included)."""
    if type is not None and type not in EVENT_TYPES:
        raise InvalidArgument(
            f"unknown event type {quoted(type)}: use one of {', '.join(EVENT_TYPES)}"
        )


def events_page(
    uow: UnitOfWork,
    *,
    type: str | None = None,
    failed_only: bool = False,
    since: datetime | None = None,
    before: int | None = None,
    limit: int = 100,
) -> list[AuditEvent]:
    """Up to ``limit`` matching events older than the event ``before`` (keyset on the
    id; None: from the newest), newest first: ``list_events`` a page at a time."""
    where = EventFilter(type=type, success=False if failed_only else None, since=since)
    return filtered_events(uow, where, before=before, limit=limit)


@dataclass(frozen=True)
class EventFilter:
    """Which audit events a listing holds; None: any. ``success`` False: failed only."""

    type: str | None = None
    success: bool | None = None
    actor: str | None = None
    asset_tag: str | None = None
    device_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None  # exclusive


def filtered_events(
    uow: UnitOfWork, where: EventFilter, *, before: int | None = None, limit: int = 100
) -> list[AuditEvent]:
    """Up to ``limit`` events ``where`` matches, older than the event ``before`` (keyset
    on the id; None: from the newest), newest first: what the CLI, the admin API and the
    console's filters (actor, asset tag, device, a time range, success) list."""
    check_event_type(where.type)
    row = AuditEventRow
    query = select(row).order_by(row.id.desc()).limit(limit)
    if where.type is not None:
        query = query.where(row.type == where.type)
    if where.success is not None:
        query = query.where(row.success.is_(where.success))
    if where.actor is not None:
        query = query.where(row.actor == where.actor)
    if where.asset_tag is not None:
        query = query.where(row.asset_tag == where.asset_tag)
    if where.device_id is not None:
        query = query.where(row.device_id == where.device_id)
    if where.since is not None:
        query = query.where(row.time >= where.since)
    if where.until is not None:
        query = query.where(row.time < where.until)
    if before is not None:
        query = query.where(row.id < before)
    with uow.read():
        return [_to_event(r) for r in uow.session.scalars(query).all()]


def device_events(uow: UnitOfWork, device_id: str, *, limit: int = 50) -> list[AuditEvent]:
    """The audit trail of one device, newest first."""
    return filtered_events(uow, EventFilter(device_id=device_id), limit=limit)


def _to_event(row: AuditEventRow) -> AuditEvent:
    return AuditEvent(
        id=row.id,
        time=row.time,
        type=row.type,
        success=row.success,
        actor=row.actor,
        message=row.message,
        device_id=row.device_id,
        asset_tag=row.asset_tag,
        os_type=row.os_type,
        details=row.details or {},
    )
