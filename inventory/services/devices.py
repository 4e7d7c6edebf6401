"""Register, find, list, remove and unenroll devices; keep their collected data."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, bindparam, delete, func, or_, select, tuple_
from sqlalchemy.exc import IntegrityError

from inventory.db import UnitOfWork, inserting
from inventory.domain import (
    POSTURE_FIELDS,
    AttestationType,
    CollectedData,
    Credential,
    Device,
    EnrollStatus,
    OSType,
    Page,
    Posture,
    Profile,
    Source,
    SourceOrigin,
    TrustLevel,
    normalize_asset_tag,
    normalize_user_name,
)
from inventory.errors import AlreadyExists, InvalidArgument, NotFound, quoted
from inventory.models import CollectedDataRow, DeviceRow, UserRow
from inventory.services import audit

DEFAULT_PAGE_SIZE = 500
MAX_PAGE_SIZE = 5000


def register_device(
    uow: UnitOfWork,
    *,
    os_type: OSType | str,
    asset_tag: str,
    actor: str,
    source: Source | None = None,
    profile: Profile | None = None,
    assigned_user: str | None = None,
) -> Device:
    """Add a device to the inventory, not enrolled. Refuses a second (asset tag, OS).

    ``assigned_user`` (an existing user) is the one user the device auto-enrolls for when
    no MDM profile vouches for who uses it."""
    os_type = OSType.parse(os_type) if isinstance(os_type, str) else os_type
    asset_tag = normalize_asset_tag(asset_tag)
    if assigned_user is not None:
        assigned_user = normalize_user_name(assigned_user)
    with uow:
        if assigned_user is not None and uow.session.get(UserRow, assigned_user) is None:
            raise NotFound(
                f"user {assigned_user!r} not found: add them first (`devtrust users add`)"
            )
        existing = row_by_tag_within(uow, asset_tag, os_type)
        if existing is not None:
            raise _duplicate(asset_tag, os_type, existing.id)
        now = uow.now()
        row = DeviceRow(
            id=str(uuid.uuid4()),
            os_type=os_type.value,
            asset_tag=asset_tag,
            enroll_status=EnrollStatus.NOT_ENROLLED.value,
            source_name=source.name if source else None,
            source_origin=source.origin.value if source else None,
            assigned_user=assigned_user,
            create_time=now,
            update_time=now,
        )
        if profile is not None:
            _apply_profile(row, profile)
        uow.session.add(row)
        device = to_device(row)
        audit.record_within(
            uow,
            audit.DEVICE_CREATE,
            actor=actor,
            message=f"device {device.label} added to the inventory"
            + (f", assigned to {assigned_user}" if assigned_user else ""),
            device=device,
            details={"assigned_user": assigned_user} if assigned_user else None,
        )
        try:
            uow.commit()
        except IntegrityError:
            # Another writer registered the same device between our check and our insert.
            raise _duplicate(asset_tag, os_type, None) from None
        return device


def _duplicate(asset_tag: str, os_type: OSType, device_id: str | None) -> AlreadyExists:
    suffix = f" (device id {device_id})" if device_id else ""
    return AlreadyExists(
        f"device {asset_tag}/{os_type.display} is already in the inventory{suffix}"
    )


GIVE_ONE = "give exactly one of DEVICE (an asset tag or a device id), --asset-tag or --device-id"


def one_ref(ref: str | None, *, device_id: str | None, asset_tag: str | None) -> str:
    """The one device an admin names, as ``row_by_ref_within`` looks it up: an asset tag
    or a device id (``ref``), an asset tag (``asset_tag``) or a device id (``device_id``).
    Every command that addresses a device takes the same three ways."""
    given = [value for value in (ref, device_id, asset_tag) if value is not None]
    if len(given) != 1:
        raise InvalidArgument(GIVE_ONE)
    if device_id is not None:
        ident = device_id.strip()
        if not _looks_like_uuid(ident):
            raise InvalidArgument(f"invalid device id {quoted(ident)}: expected a UUID")
        return ident.lower()
    if asset_tag is not None:
        return normalize_asset_tag(asset_tag)
    return given[0]


def get_device(uow: UnitOfWork, ref: str, *, os_type: OSType | None = None) -> Device:
    """Find a device by its id or its asset tag."""
    with uow.read():
        return to_device(row_by_ref_within(uow, ref, os_type=os_type))


def row_by_ref_within(uow: UnitOfWork, ref: str, *, os_type: OSType | None = None) -> DeviceRow:
    """The device ``ref`` names (its id, or its asset tag; ``os_type`` picks between
    devices of two OSes sharing one tag)."""
    ref = ref.strip()
    if not ref:
        raise InvalidArgument("device reference is empty: give an asset tag or a device id")
    if _looks_like_uuid(ref):
        row = uow.session.get(DeviceRow, ref.lower())
        if row is not None and (os_type is None or row.os_type == os_type.value):
            return row
    query = select(DeviceRow).where(DeviceRow.asset_tag == ref)
    if os_type is not None:
        query = query.where(DeviceRow.os_type == os_type.value)
    rows = uow.session.scalars(query.limit(2)).all()
    if not rows:
        on = f" on {os_type.display}" if os_type is not None else ""
        raise NotFound(f"device {quoted(ref)}{on} not found")
    if len(rows) > 1:
        raise InvalidArgument(
            f"asset tag {quoted(ref)} names devices of more than one OS: give --os or the device id"
        )
    return rows[0]


def row_by_tag_within(uow: UnitOfWork, asset_tag: str, os_type: OSType) -> DeviceRow | None:
    """The device with this asset tag and OS, if any, in the caller's transaction."""
    return uow.session.scalars(
        select(DeviceRow).where(
            DeviceRow.asset_tag == asset_tag, DeviceRow.os_type == os_type.value
        )
    ).one_or_none()


def _looks_like_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def list_devices(
    uow: UnitOfWork, *, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None
) -> Page:
    """One page of devices in a stable order (asset tag, then OS), by keyset pagination."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidArgument(f"page size must be between 1 and {MAX_PAGE_SIZE}, got {limit}")
    query = select(DeviceRow).order_by(DeviceRow.asset_tag, DeviceRow.os_type).limit(limit + 1)
    if cursor:
        after = _decode_cursor(cursor)
        query = query.where(tuple_(DeviceRow.asset_tag, DeviceRow.os_type) > after)
    with uow.read():
        return _page(uow.session.scalars(query).all(), limit)


def _page(rows: Sequence[Any], limit: int) -> Page:
    """A keyset page of the ``limit + 1`` rows read (ordered by asset tag, then OS):
    the first ``limit`` as devices, and the cursor after the last when there were more."""
    items = [to_device(row) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        next_cursor = _encode_cursor(items[-1].asset_tag, items[-1].os_type.value)
    return Page(items=items, next_cursor=next_cursor)


def iter_pages(uow: UnitOfWork, *, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[Page]:
    """Every page, each read in its own short transaction, so memory stays flat."""
    cursor: str | None = None
    while True:
        page = list_devices(uow, limit=page_size, cursor=cursor)
        yield page
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def count_devices(uow: UnitOfWork) -> int:
    with uow.read():
        return uow.session.scalar(select(func.count()).select_from(DeviceRow)) or 0


def list_user_devices(
    uow: UnitOfWork, user: str, *, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None
) -> Page:
    """One page of the devices that are ``user``'s: enrolled by them (their owner) or
    assigned to them; ordered and paged as ``list_devices``, with the same cursors."""
    return list_matching_devices(uow, DeviceFilter(user=user), limit=limit, cursor=cursor)


def _encode_cursor(asset_tag: str, os_type: str) -> str:
    raw = json.dumps([asset_tag, os_type], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        asset_tag, os_type = json.loads(raw)
        if not isinstance(asset_tag, str) or not isinstance(os_type, str):
            raise ValueError
    except (ValueError, TypeError):  # TypeError: JSON that is no pair at all (5, null)
        raise InvalidArgument(f"invalid page cursor {quoted(cursor)}") from None
    return asset_tag, os_type


def remove_device(
    uow: UnitOfWork,
    ref: str | None = None,
    *,
    actor: str,
    device_id: str | None = None,
    asset_tag: str | None = None,
    os_type: OSType | None = None,
) -> Device:
    """Remove one device, named as ``one_ref`` takes it."""
    ref = one_ref(ref, device_id=device_id, asset_tag=asset_tag)
    with uow:
        row = row_by_ref_within(uow, ref, os_type=os_type)
        device = to_device(row)
        uow.session.delete(row)
        audit.record_within(
            uow,
            audit.DEVICE_DELETE,
            actor=actor,
            message=f"device {device.label} removed from the inventory",
            device=device,
        )
        uow.commit()
        return device


def unenroll_device(
    uow: UnitOfWork, ref: str, *, actor: str, os_type: OSType | None = None
) -> tuple[Device, bool]:
    """Make a device not enrolled again: owner and credential cleared.

    Returns the device and whether anything changed (unenrolling twice is not an error).
    """
    with uow:
        row = row_by_ref_within(uow, ref, os_type=os_type)
        if row.enroll_status == EnrollStatus.NOT_ENROLLED.value and row.credential_id is None:
            return to_device(row), False
        previous_owner = row.owner
        row.enroll_status = EnrollStatus.NOT_ENROLLED.value
        row.owner = None
        row.credential_id = None
        row.credential_public_key = None
        row.credential_ek_cert_serial = None
        row.credential_attestation_type = None
        row.credential_binding = None  # the TPM (or enclave key) may enroll another device
        row.update_time = uow.now()
        device = to_device(row)
        audit.record_within(
            uow,
            audit.DEVICE_UPDATE,
            actor=actor,
            message=f"device {device.label} unenrolled (was owned by {previous_owner or 'nobody'})",
            device=device,
            details={"enroll_status": EnrollStatus.NOT_ENROLLED.value},
        )
        uow.commit()
        return device, True


def record_collected_data_within(
    uow: UnitOfWork, device_id: str, data: CollectedData, *, keep: int
) -> None:
    """Store what a device reported, keeping only its ``keep`` newest reports."""
    uow.run(_INSERT_COLLECTED, collected_params(device_id, data, uow.now()))
    uow.run(_TRIM_COLLECTED, {"device": device_id, "keep": keep})


def collected_params(device_id: str, data: CollectedData, now: datetime) -> dict[str, Any]:
    """A row of ``collected_data`` (its columns are CollectedData's fields) for what
    ``device_id`` reported, recorded ``now``."""
    values = {field.name: getattr(data, field.name) for field in fields(data)}
    return values | {"device_id": device_id, "os_type": data.os_type.value, "record_time": now}


# Built once: collected data is written on every enrollment and login.
_COLLECTED = cast(Table, CollectedDataRow.__table__)
_DEVICES = cast(Table, DeviceRow.__table__)
# The device row ``:id`` (Core: no ORM object for a row only read).
BY_ID = select(_DEVICES).where(_DEVICES.c.id == bindparam("id"))
_INSERT_COLLECTED = inserting(_COLLECTED)
# The newest report beyond the window; it and everything older go (none: no-op).
_TRIM_COLLECTED = delete(_COLLECTED).where(
    _COLLECTED.c.device_id == bindparam("device"),
    _COLLECTED.c.id
    <= select(_COLLECTED.c.id)
    .where(_COLLECTED.c.device_id == bindparam("device"))
    .order_by(_COLLECTED.c.id.desc())
    .offset(bindparam("keep"))
    .limit(1)
    .scalar_subquery(),
)


def collected_history(uow: UnitOfWork, device_id: str, *, limit: int = 10) -> list[CollectedData]:
    """A device's reports, newest first."""
    with uow.read():
        rows = uow.session.scalars(
            select(CollectedDataRow)
            .where(CollectedDataRow.device_id == device_id)
            .order_by(CollectedDataRow.id.desc())
            .limit(limit)
        ).all()
        return [_to_collected(row) for row in rows]


def _to_collected(row: CollectedDataRow) -> CollectedData:
    """The report of a ``collected_data`` row (its columns are CollectedData's fields)."""
    values = {field.name: getattr(row, field.name) for field in fields(CollectedData)}
    return CollectedData(**values | {"os_type": OSType(row.os_type)})


def _apply_profile(row: DeviceRow, profile: Profile) -> None:
    row.profile_model_identifier = profile.model_identifier
    row.profile_os_version = profile.os_version
    row.profile_os_build = profile.os_build
    row.profile_os_build_supplemental = profile.os_build_supplemental
    row.profile_os_usernames = list(profile.os_usernames)
    row.profile_jamf_binary_version = profile.jamf_binary_version
    row.profile_external_id = profile.external_id
    row.profile_update_time = profile.update_time
    posture = profile.posture or Posture()
    for name in POSTURE_FIELDS:
        setattr(row, f"posture_{name}", getattr(posture, name))


def _posture(row: Any) -> Posture | None:
    """The posture the row's ``posture_*`` columns hold; None when they hold nothing."""
    posture = Posture(**{name: getattr(row, f"posture_{name}", None) for name in POSTURE_FIELDS})
    return posture if posture.reported else None


def raw_record(
    uow: UnitOfWork, ref: str, *, os_type: OSType | None = None
) -> tuple[Device, str | None]:
    """The device ``ref`` names and its MDM's raw record as last written (compact JSON,
    size-capped), None when no MDM sync has written one."""
    with uow.read():
        row = row_by_ref_within(uow, ref, os_type=os_type)
        return to_device(row), row.source_record


def to_device(row: Any) -> Device:
    """The device of an ORM row, a Core row or a namespace with the devices table's names."""
    credential = None
    if row.credential_id is not None:
        credential = Credential(
            id=row.credential_id,
            public_key=row.credential_public_key,
            ek_cert_serial=row.credential_ek_cert_serial,
            attestation_type=AttestationType(row.credential_attestation_type or "none"),
        )
    source = None
    if row.source_name is not None:
        source = Source(name=row.source_name, origin=SourceOrigin(row.source_origin or "api"))
    profile = None
    if row.profile_update_time is not None or row.profile_model_identifier is not None:
        profile = Profile(
            model_identifier=row.profile_model_identifier,
            os_version=row.profile_os_version,
            os_build=row.profile_os_build,
            os_build_supplemental=row.profile_os_build_supplemental,
            os_usernames=tuple(row.profile_os_usernames or ()),
            jamf_binary_version=row.profile_jamf_binary_version,
            external_id=row.profile_external_id,
            update_time=row.profile_update_time,
            posture=_posture(row),
        )
    return Device(
        id=row.id,
        os_type=OSType(row.os_type),
        asset_tag=row.asset_tag,
        enroll_status=EnrollStatus(row.enroll_status),
        credential=credential,
        source=source,
        profile=profile,
        owner=row.owner,
        create_time=row.create_time,
        update_time=row.update_time,
        assigned_user=getattr(row, "assigned_user", None),
    )


# -- the web console's listings and counts ------------------------------------------------

#: ``DeviceFilter.source`` for devices no source wrote (registered by hand).
NO_SOURCE = "-"


@dataclass(frozen=True)
class DeviceFilter:
    """Which devices a listing holds; None: any. ``user``: only that user's devices
    (their owner, or assigned to them), as ``list_user_devices``."""

    os_type: OSType | None = None
    enroll_status: EnrollStatus | None = None
    trust_level: TrustLevel | None = None
    source: str | None = None  # a source's name, or NO_SOURCE
    owner: str | None = None
    tag_prefix: str | None = None  # asset tags starting with it
    user: str | None = None


def _matching(where: DeviceFilter) -> list[ColumnElement[bool]]:
    c = _DEVICES.c
    clauses: list[ColumnElement[bool]] = []
    if where.os_type is not None:
        clauses.append(c.os_type == where.os_type.value)
    if where.enroll_status is not None:
        clauses.append(c.enroll_status == where.enroll_status.value)
    if where.trust_level is TrustLevel.SOFTWARE_KEY:
        clauses.append(c.credential_id.is_not(None))
        clauses.append(
            or_(c.credential_attestation_type.is_(None), c.credential_attestation_type == "none")
        )
    elif where.trust_level is not None:
        clauses.append(c.credential_id.is_not(None))
        clauses.append(c.credential_attestation_type == where.trust_level.value)
    if where.source == NO_SOURCE:
        clauses.append(c.source_name.is_(None))
    elif where.source is not None:
        clauses.append(c.source_name == where.source)
    if where.owner is not None:
        clauses.append(c.owner == where.owner)
    if where.user is not None:
        clauses.append(or_(c.owner == where.user, c.assigned_user == where.user))
    if where.tag_prefix:
        # The lower bound lets the (asset_tag, os_type) index start the scan at the prefix.
        escaped = where.tag_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        clauses.append(c.asset_tag >= where.tag_prefix)
        clauses.append(c.asset_tag.like(f"{escaped}%", escape="\\"))
    return clauses


def list_matching_devices(
    uow: UnitOfWork,
    where: DeviceFilter,
    *,
    limit: int = DEFAULT_PAGE_SIZE,
    cursor: str | None = None,
) -> Page:
    """One page of the devices ``where`` matches, ordered and paged (keyset, the same
    cursors) as ``list_devices``."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidArgument(f"page size must be between 1 and {MAX_PAGE_SIZE}, got {limit}")
    c = _DEVICES.c
    query = (
        select(*[col for col in _DEVICES.c if col.name != "source_record"])
        .where(*_matching(where))
        .order_by(c.asset_tag, c.os_type)
        .limit(limit + 1)
    )
    if cursor:
        query = query.where(tuple_(c.asset_tag, c.os_type) > _decode_cursor(cursor))
    with uow.read():
        return _page(uow.session.execute(query).all(), limit)


@dataclass(frozen=True)
class DeviceCounts:
    """What the console's devices page shows at its top."""

    registered: int
    enrolled: int
    by_trust_level: dict[TrustLevel, int]
    by_os: dict[OSType, int]
    by_source: dict[str, int]  # a source's name, or NO_SOURCE
    drifted: int  # enrolled or not, whose last collected data fails its comparison


def device_counts(uow: UnitOfWork, *, user: str | None = None) -> DeviceCounts:
    """The inventory's devices counted (``user``: only theirs), in one grouped pass,
    and how many have drifted from their MDM profile (``inventory.drift.compare`` over
    each device's last collected data: the verdict of ``devtrust devices diff``)."""
    c = _DEVICES.c
    scope = [] if user is None else _matching(DeviceFilter(user=user))
    # Grouped by what is counted; a credential is counted, not grouped on.
    groups = (
        select(
            c.os_type,
            c.enroll_status,
            c.credential_attestation_type,
            c.source_name,
            func.count().label("n"),
            func.count(c.credential_id).label("credentials"),
        )
        .where(*scope)
        .group_by(c.os_type, c.enroll_status, c.credential_attestation_type, c.source_name)
    )
    registered = enrolled = 0
    by_trust: dict[TrustLevel, int] = dict.fromkeys(TrustLevel, 0)
    by_os: dict[OSType, int] = {}
    by_source: dict[str, int] = {}
    with uow.read():
        for row in uow.session.execute(groups):
            registered += row.n
            if row.enroll_status == EnrollStatus.ENROLLED.value:
                enrolled += row.n
            if row.credentials:
                level = AttestationType(row.credential_attestation_type or "none").level
                by_trust[level] += row.credentials
            os_type = OSType(row.os_type)
            by_os[os_type] = by_os.get(os_type, 0) + row.n
            name = row.source_name or NO_SOURCE
            by_source[name] = by_source.get(name, 0) + row.n
        drifted = _count_drifted_within(uow, scope)
    return DeviceCounts(registered, enrolled, by_trust, by_os, by_source, drifted)


# What the drift count reads of each device's newest report: its columns, prefixed.
_REPORTED = [f.name for f in fields(CollectedData)]


def _count_drifted_within(uow: UnitOfWork, scope: list[ColumnElement[bool]]) -> int:
    from inventory.drift import compare

    newest = (
        select(_COLLECTED.c.device_id, func.max(_COLLECTED.c.id).label("id"))
        .group_by(_COLLECTED.c.device_id)
        .subquery()
    )
    device_columns = [col for col in _DEVICES.c if col.name != "source_record"]
    query = (
        select(*device_columns, *[_COLLECTED.c[n].label(f"reported_{n}") for n in _REPORTED])
        .select_from(_DEVICES)
        .join(newest, newest.c.device_id == _DEVICES.c.id)
        .join(_COLLECTED, _COLLECTED.c.id == newest.c.id)
        .where(*scope)
    )
    drifted = 0
    for row in uow.session.execute(query):
        values = {n: getattr(row, f"reported_{n}") for n in _REPORTED}
        collected = CollectedData(**values | {"os_type": OSType(values["os_type"])})
        if any(not f.ok for f in compare(to_device(row), collected)):
            drifted += 1
    return drifted
