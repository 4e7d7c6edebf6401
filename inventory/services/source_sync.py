"""Writing an MDM source into the inventory: runs, batched upserts, deletions.

The sync engine (``jamf/sync.py``) streams pages in; each page is one transaction of
a handful of statements (a lookup that answers one row, multi-row INSERTs or a COPY,
one executemany UPDATE), whatever its size. Rows whose content hash is unchanged are
not read back, nor written.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, cast

import orjson
from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    bindparam,
    func,
    or_,
    select,
    text,
    update,
)

from inventory.db import UnitOfWork
from inventory.domain import (
    POSTURE_FIELDS,
    EnrollStatus,
    Posture,
    SourceOrigin,
    SourceRecord,
    SyncRun,
)
from inventory.models import DeviceRow, SyncRunRow
from inventory.serialize import capped_raw
from inventory.services import audit
from inventory.services.devices import to_device

_DEVICES = cast(Table, DeviceRow.__table__)
_SYNC_RUNS = cast(Table, SyncRunRow.__table__)
# Bound parameters a SQLite statement may hold (SQLITE_MAX_VARIABLE_NUMBER since 3.32).
_SQLITE_VARIABLES = 32766

RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"


@dataclass
class PageOutcome:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    # (record, external id the device is synced from now): the engine decides whether
    # the old Jamf record is gone (re-enrolled device) or still there (duplicate serial).
    conflicts: list[tuple[SourceRecord, str]] = field(default_factory=list)
    # Records older than the device's profile, not written (within ``unchanged``).
    stale: int = 0


def start_run(uow: UnitOfWork, *, source: str, inventory: str, kind: str) -> int:
    with uow:
        row = SyncRunRow(
            source=source,
            inventory=inventory,
            kind=kind,
            status=RUNNING,
            start_time=uow.now(),
            fetched=0,
            created=0,
            updated=0,
            unchanged=0,
            deleted=0,
            skipped=0,
        )
        uow.session.add(row)
        uow.commit()
        return row.id


def apply_page(
    uow: UnitOfWork,
    run_id: int,
    records: Sequence[SourceRecord],
    *,
    source: str,
    inventory: str,
    track_seen: bool,
    replace_ids: frozenset[str] = frozenset(),
    fetched: int | None = None,
    skipped_before: int = 0,
) -> PageOutcome:
    """Upsert one page. ``replace_ids`` are external ids confirmed to replace an older one.

    The run's counters grow by ``fetched`` (default: the records given) and by the
    records skipped here plus ``skipped_before``, those the caller dropped on the way.
    """
    outcome = PageOutcome()
    first: dict[tuple[str, str], SourceRecord] = {}
    for record in records:
        key = (record.asset_tag, record.os_type.value)
        if key in first and first[key].external_id != record.external_id:
            outcome.skipped.append(
                (
                    record.external_id,
                    f"serial {record.asset_tag} also on Jamf id {first[key].external_id}",
                )
            )
            continue
        first.setdefault(key, record)
    fetched = len(records) if fetched is None else fetched
    if not first:
        if fetched or skipped_before or outcome.skipped:
            add_counts(uow, run_id, fetched=fetched, skipped=skipped_before + len(outcome.skipped))
        return outcome
    with uow:
        absent, attention = _look_up(uow, list(first.items()), run_id=run_id, track_seen=track_seen)
        now = uow.now()
        inserts: list[tuple[str, SourceRecord]] = []
        updates: list[dict[str, Any]] = []
        seen: list[str] = []
        new_ids = iter(_uuid4s(len(absent)))
        for index, record in enumerate(first.values()):
            if index in absent:
                inserts.append((next(new_ids), record))
                continue
            row = attention.get(index)
            if row is None:  # there, with this content, from this record: nothing to do
                outcome.unchanged += 1
                continue
            ours = row.source_name == source
            # Another Jamf id already gives this device its profile, whether the device
            # is the source's or one registered by hand: the same serial under two live
            # ids must not take turns rewriting it.
            if row.profile_external_id not in (None, record.external_id):
                if row.sync_run_id == run_id:
                    outcome.skipped.append(
                        (
                            record.external_id,
                            f"serial {record.asset_tag} also on Jamf id {row.profile_external_id}",
                        )
                    )
                    continue
                if record.external_id not in replace_ids:
                    outcome.conflicts.append((record, row.profile_external_id))
                    continue
            if row.source_hash == record.content_hash or _older(record, row.profile_update_time):
                # An older report than the one the device has (a webhook's read and a
                # page can cross) never overwrites it; it is counted as unchanged.
                if row.source_hash != record.content_hash:
                    outcome.stale += 1
                outcome.unchanged += 1
                if track_seen and row.sync_run_id != run_id:
                    seen.append(row.id)
                continue
            updates.append(_changed_row(row.id, record, source, inventory, run_id, now, ours))
        if inserts:
            _insert_rows(uow, inserts, source=source, inventory=inventory, run_id=run_id, now=now)
        _update_by_id(uow, updates)
        if seen:
            uow.session.execute(
                update(DeviceRow).where(DeviceRow.id.in_(seen)).values(sync_run_id=run_id),
                execution_options={"synchronize_session": False},
            )
        _add_counts(
            uow,
            run_id,
            fetched=fetched,
            created=len(inserts),
            updated=len(updates),
            unchanged=outcome.unchanged,
            skipped=skipped_before + len(outcome.skipped),
        )
        uow.commit()
    outcome.created, outcome.updated = len(inserts), len(updates)
    return outcome


def _older(record: SourceRecord, stored: datetime | None) -> bool:
    """Whether the record reports from before the profile the device already has."""
    reported = record.profile.update_time
    return stored is not None and reported is not None and reported < stored


class _Stored(NamedTuple):
    """What the page's write needs of a device already in the inventory."""

    id: str
    source_name: str | None
    source_hash: str | None
    sync_run_id: int | None
    profile_external_id: str | None
    profile_update_time: datetime | None


# The page's lookup, in one statement that answers one row: which of the page's
# records have no device yet, and the devices that need more than counting as
# unchanged: another content, another Jamf id giving the profile, or a run that stamps
# the devices it saw (``track``) and has not stamped this one. One row, because
# SQLite's driver lets go of the GIL around every row it steps, and while the fetch
# threads parse a page each row then waits its turn to come back: a lookup that
# answered the page's 500 rows kept a no-change sync's writer waiting 37 ms a page.
# A record is (asset tag, OS, Jamf id, content hash), numbered from 0 in the page.
_LOOK_UP_SQLITE = """
SELECT json_group_array(j.key) FILTER (WHERE d.id IS NULL),
       json_group_array(json_array(j.key, d.id, d.source_name, d.source_hash,
                                   d.sync_run_id, d.profile_external_id, d.profile_update_time))
           FILTER (WHERE d.id IS NOT NULL AND (
               d.source_hash IS NOT json_extract(j.value, '$[3]')
               OR (d.profile_external_id IS NOT NULL
                   AND d.profile_external_id <> json_extract(j.value, '$[2]'))
               OR (? AND d.sync_run_id IS NOT ?)))
FROM json_each(?) AS j
LEFT JOIN devices AS d
    ON d.asset_tag = json_extract(j.value, '$[0]') AND d.os_type = json_extract(j.value, '$[1]')
"""
_LOOK_UP_POSTGRES = """
SELECT (json_agg(j.n - 1) FILTER (WHERE d.id IS NULL))::text,
       (json_agg(json_build_array(j.n - 1, d.id, d.source_name, d.source_hash,
                                  d.sync_run_id, d.profile_external_id, d.profile_update_time))
           FILTER (WHERE d.id IS NOT NULL AND (
               d.source_hash IS DISTINCT FROM j.hash
               OR (d.profile_external_id IS NOT NULL AND d.profile_external_id <> j.ext)
               OR (%(track)s AND d.sync_run_id IS DISTINCT FROM %(run)s))))::text
FROM ROWS FROM (json_array_elements_text(%(tags)s::json), json_array_elements_text(%(os)s::json),
               json_array_elements_text(%(ext)s::json), json_array_elements_text(%(hash)s::json))
    WITH ORDINALITY AS j(tag, os, ext, hash, n)
LEFT JOIN devices AS d ON d.asset_tag = j.tag AND d.os_type = j.os
"""


def _look_up(
    uow: UnitOfWork,
    page: list[tuple[tuple[str, str], SourceRecord]],
    *,
    run_id: int,
    track_seen: bool,
) -> tuple[set[int], dict[int, _Stored]]:
    """Of the page's (key, record) pairs, by their place in it: those with no device
    yet, and the stored devices that need looking at (the FILTER in the statements
    above). Any other record's device is there with its content, from its Jamf id:
    unchanged."""
    connection = uow.session.connection()
    if connection.dialect.name == "postgresql":
        # Each column as one JSON text: psycopg dumps a list element by element in Python.
        dumps = orjson.dumps
        params: Any = {
            "tags": dumps([key[0] for key, _ in page]).decode(),
            "os": dumps([key[1] for key, _ in page]).decode(),
            "ext": dumps([record.external_id for _, record in page]).decode(),
            "hash": dumps([record.content_hash for _, record in page]).decode(),
            "track": track_seen,
            "run": run_id,
        }
        sql = _LOOK_UP_POSTGRES
    else:
        entries = [(*key, record.external_id, record.content_hash) for key, record in page]
        params = (track_seen, run_id, orjson.dumps(entries).decode())
        sql = _LOOK_UP_SQLITE
    absent, stored = connection.exec_driver_sql(sql, params).one()
    attention = {
        index: _Stored(device_id, name, content, run, external_id, _stored_time(updated))
        for index, device_id, name, content, run, external_id, updated in (
            orjson.loads(stored) if stored else ()
        )
    }
    return set(orjson.loads(absent)) if absent else set(), attention


def _stored_time(value: str | None) -> datetime | None:
    """A time the lookup read as JSON text: SQLite's stored form (UTC, no zone) or
    PostgreSQL's ISO form with its offset."""
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _uuid4s(count: int) -> list[str]:
    """``count`` of ``str(uuid.uuid4())`` from one ``os.urandom`` call.

    A page's new devices need hundreds of ids; one system call for all of them matters
    because each one lets the fetch threads take the GIL, and getting it back is slow.
    """
    pool = bytearray(os.urandom(16 * count))
    ids = []
    for start in range(0, 16 * count, 16):
        raw = pool[start : start + 16]
        raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
        raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
        h = raw.hex()
        ids.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return ids


def _insert_rows(
    uow: UnitOfWork,
    new: list[tuple[str, SourceRecord]],
    *,
    source: str,
    inventory: str,
    run_id: int,
    now: datetime,
) -> None:
    """New devices, straight to the driver: COPY on PostgreSQL, multi-row INSERTs on SQLite.

    This is the hot path of a first sync. SQLAlchemy's per-row parameter processing
    (and psycopg's per-row executemany) cost more than the database's own work, so each
    row goes to the driver as a plain tuple, converted the way the column types would:
    JSON as JSON, UTC times as SQLAlchemy stores them on SQLite. Columns a new device
    leaves null (owner, credential) are not sent. It runs on the session's connection,
    inside the page's transaction.
    """
    connection = uow.session.connection()
    dbapi: Any = connection.connection.dbapi_connection
    postgres = connection.dialect.name == "postgresql"
    # Times and JSON go as the text the database reads: for COPY, psycopg's own dumpers
    # cost three times the rest of the row (a time 1.4 us, stdlib json for a list).
    when: Callable[[datetime], Any] = _postgres_time if postgres else _sqlite_time
    as_json: Callable[[Any], Any] = _json_text
    stamp = when(now)
    head = (_NOT_ENROLLED, source, _JAMF, inventory, run_id, stamp, stamp)
    names = ", ".join(_INSERTED)  # our own column names, never input
    cursor = dbapi.cursor()
    try:
        if postgres:
            with cursor.copy(f"COPY devices ({names}) FROM STDIN") as copy:
                for device_id, record in new:
                    copy.write_row(
                        (
                            device_id,
                            record.os_type.value,
                            record.asset_tag,
                            *head,
                            *_profile_values(record, when, as_json),
                        )
                    )
        else:
            # Many rows a statement, not executemany: the driver lets go of the GIL around
            # every row it steps, and while the fetch threads parse a page each row would
            # then wait for it to come back. Statements of a power of two rows (475 rows:
            # 256 + 128 + 64 + 16 + 8 + 2 + 1): the driver keeps each statement it has
            # prepared, and one for every page size there is held megabytes per page size.
            # The columns every row of the page shares (``head``) are bound once a
            # statement, not once a row: binding is most of what a row costs the GIL.
            rows = [
                (device_id, record.os_type.value, record.asset_tag,
                 *_profile_values(record, when, as_json))
                for device_id, record in new
            ]  # fmt: skip
            width = len(_INSERTED) - len(head)
            columns = [f"column{n}" for n in range(1, width + 1)]
            picked = ", ".join([*columns[:3], *("?" * len(head)), *columns[3:]])
            marks = "(" + ", ".join("?" * width) + ")"
            most = 1 << (((_SQLITE_VARIABLES - len(head)) // width).bit_length() - 1)
            start = 0
            while start < len(rows):
                size = min(most, 1 << ((len(rows) - start).bit_length() - 1))
                chunk = rows[start : start + size]
                cursor.execute(
                    f"INSERT INTO devices ({names}) SELECT {picked} "  # noqa: S608
                    f"FROM (VALUES {', '.join([marks] * size)})",
                    [*head, *(value for row in chunk for value in row)],
                )
                start += size
    finally:
        cursor.close()


def _same(value: Any) -> Any:
    return value


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def _postgres_time(value: datetime) -> str:
    """An aware time as PostgreSQL reads it into a ``timestamptz``: ISO with its offset."""
    return value.isoformat()


def _sqlite_time(value: datetime) -> str:
    """A UTC time as SQLAlchemy's SQLite DateTime stores it (and reads it back):
    ``2026-12-03 11:00:00.000000``, microseconds always, no zone. Not cached: a row's
    times are its own, and a cache that misses costs twice the formatting."""
    return value.astimezone(UTC).isoformat(" ", "microseconds")[:-6]  # less "+00:00"


def _update_by_id(uow: UnitOfWork, rows: list[dict[str, Any]]) -> None:
    """One Core executemany UPDATE per shape of row (claimed or not), keyed by id.

    Core rather than the ORM's bulk UPDATE: this is the hot path of a sync, and the ORM
    spends more time on bookkeeping for these plain rows than the database does.
    """
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        shapes.setdefault(tuple(sorted(row)), []).append(row)
    for keys, group in shapes.items():
        statement = (
            update(_DEVICES)
            .where(_DEVICES.c.id == bindparam("_id"))
            .values({k: bindparam(k) for k in keys if k != "id"})
        )
        uow.session.connection().execute(statement, [{**r, "_id": r["id"]} for r in group])


_PROFILE_COLUMNS = (
    "profile_model_identifier",
    "profile_os_version",
    "profile_os_build",
    "profile_os_build_supplemental",
    "profile_os_usernames",
    "profile_jamf_binary_version",
    "profile_external_id",
    "profile_update_time",
    *(f"posture_{name}" for name in POSTURE_FIELDS),
    "source_record",
    "source_hash",
)
# What an insert writes, in the order of ``_insert_rows``' tuples.
_INSERTED = (
    "id", "os_type", "asset_tag",  # then the columns every new row of a page shares:
    "enroll_status", "source_name", "source_origin", "source_inventory", "sync_run_id",
    "create_time", "update_time",
    *_PROFILE_COLUMNS,
)  # fmt: skip


def _profile_values(
    record: SourceRecord,
    when: Callable[[datetime], Any] = _same,
    as_json: Callable[[Any], Any] = _same,
) -> tuple[Any, ...]:
    """The ``_PROFILE_COLUMNS`` of a record; times through ``when`` and JSON through
    ``as_json`` (the driver's forms, for ``_insert_rows``)."""
    p = record.profile
    posture = p.posture or _NO_POSTURE
    updated = p.update_time
    return (
        p.model_identifier,
        p.os_version,
        p.os_build,
        p.os_build_supplemental,
        as_json(list(p.os_usernames)),
        p.jamf_binary_version,
        record.external_id,
        None if updated is None else when(updated),
        *posture.values(when),
        None if record.raw is None else capped_raw(record.raw),
        record.content_hash,
    )


_NO_POSTURE = Posture()
_NOT_ENROLLED = EnrollStatus.NOT_ENROLLED.value  # an enum's .value costs a descriptor call
_JAMF = SourceOrigin.JAMF.value


def _changed_row(
    device_id: str,
    record: SourceRecord,
    source: str,
    inventory: str,
    run_id: int,
    now: datetime,
    claim: bool,
) -> dict[str, Any]:
    # Enroll status, credential and owner are never touched by a sync. A device an
    # admin registered by hand gains its profile but stays the admin's (no source), so
    # on_missing: DELETE can never remove it.
    values = {
        "id": device_id,
        "update_time": now,
        "sync_run_id": run_id,
        **dict(zip(_PROFILE_COLUMNS, _profile_values(record), strict=True)),
    }
    if claim:
        values |= {
            "source_name": source,
            "source_origin": SourceOrigin.JAMF.value,
            "source_inventory": inventory,
        }
    return values


def add_counts(uow: UnitOfWork, run_id: int, **counts: int) -> None:
    """Grow the run's counters (``fetched=``, ``skipped=``, ...) in a transaction of its own."""
    with uow:
        _add_counts(uow, run_id, **counts)
        uow.commit()


def _add_counts(uow: UnitOfWork, run_id: int, **counts: int) -> None:
    runs = _SYNC_RUNS.c
    grown = {runs[k]: runs[k] + v for k, v in counts.items() if v}
    if grown:  # Core, not the ORM: this runs once a page, on the sync's hot path
        uow.session.connection().execute(update(_SYNC_RUNS).where(runs.id == run_id).values(grown))


def _missing(run_id: int, source: str, inventory: str) -> tuple[ColumnElement[bool], ...]:
    """Devices of this source and inventory that the run has not stamped as seen."""
    return (
        DeviceRow.source_name == source,
        DeviceRow.source_inventory == inventory,
        or_(DeviceRow.sync_run_id.is_(None), DeviceRow.sync_run_id != run_id),
    )


def refresh_statistics(uow: UnitOfWork) -> None:
    """Let the planner see a table a sync just grew (autovacuum lags bulk loads).

    Without it, PostgreSQL's page lookups run on plans made for the empty table: a
    sequential scan per page, which makes the first sync of a large fleet quadratic.
    SQLite without statistics takes ``source_name = ?`` for a narrow condition and reads
    every device of the source for a question by Jamf id (the ghost check: 0.13 s of a
    0.54 s partial sync at 95,000 devices); its ANALYZE samples (``analysis_limit``), so
    it costs milliseconds whatever the table's size.
    """
    with uow:
        if uow.session.get_bind().dialect.name == "postgresql":
            uow.session.execute(text("ANALYZE devices"))
        else:
            uow.session.execute(text("PRAGMA analysis_limit = 1000"))
            uow.session.execute(text("ANALYZE devices"))
        uow.commit()


def count_missing(uow: UnitOfWork, run_id: int, *, source: str, inventory: str) -> tuple[int, int]:
    """(devices of this source and inventory not seen by the run, all of them)."""
    with uow.read():
        missing = uow.session.scalar(
            select(func.count()).where(*_missing(run_id, source, inventory))
        )
        total = uow.session.scalar(
            select(func.count()).where(
                DeviceRow.source_name == source, DeviceRow.source_inventory == inventory
            )
        )
        return missing or 0, total or 0


def missing_batch(
    uow: UnitOfWork, run_id: int, *, source: str, inventory: str, after: str, limit: int = 200
) -> list[tuple[str, str | None, str]]:
    """The next (device id, external id, OS type) not seen by the run, in id order."""
    with uow.read():
        rows = uow.session.execute(
            select(DeviceRow.id, DeviceRow.profile_external_id, DeviceRow.os_type)
            .where(*_missing(run_id, source, inventory), DeviceRow.id > after)
            .order_by(DeviceRow.id)
            .limit(limit)
        ).all()
        return [(device_id, external_id, os_type) for device_id, external_id, os_type in rows]


@dataclass(frozen=True)
class SyncedDevice:
    """A device a source synced, as the deletion phase checks it against the source."""

    device_id: str
    external_id: str | None
    os_type: str
    asset_tag: str


def missing_devices(
    uow: UnitOfWork, run_id: int, *, source: str, inventory: str, after: str, limit: int = 200
) -> list[SyncedDevice]:
    """The next devices not seen by the run, in id order, with their serials."""
    with uow.read():
        rows = uow.session.execute(
            select(
                DeviceRow.id, DeviceRow.profile_external_id, DeviceRow.os_type, DeviceRow.asset_tag
            )
            .where(*_missing(run_id, source, inventory), DeviceRow.id > after)
            .order_by(DeviceRow.id)
            .limit(limit)
        ).all()
        return [SyncedDevice(*row) for row in rows]


def shared_external_ids(
    uow: UnitOfWork,
    *,
    source: str,
    inventory: str,
    os_type: str,
    among: set[str] | None = None,
    limit: int = 1000,
) -> dict[str, list[SyncedDevice]]:
    """Jamf ids two devices claim (this source's, or registered by hand), with the
    devices of this source and inventory that claim them: one of them at most is the
    device Jamf's record now describes. Only ids ``among`` when given; at most ``limit``
    ids a call."""
    statement = shared_ids_statement(source, inventory, os_type, among, limit)
    with uow.read():
        rows = uow.session.execute(statement).all()
    out: dict[str, list[SyncedDevice]] = {}
    for row in rows:
        device = SyncedDevice(*row)
        assert device.external_id is not None
        out.setdefault(device.external_id, []).append(device)
    return out


def shared_ids_statement(
    source: str, inventory: str, os_type: str, among: set[str] | None, limit: int
) -> Select[str, str | None, str, str]:
    """``shared_external_ids``' question: on the index of Jamf ids when ``among`` is given."""
    claimants = or_(DeviceRow.source_name == source, DeviceRow.source_name.is_(None))
    ids = (
        DeviceRow.profile_external_id.is_not(None)
        if among is None
        else DeviceRow.profile_external_id.in_(sorted(among))
    )
    shared = (
        select(DeviceRow.profile_external_id)
        .where(claimants, DeviceRow.os_type == os_type, ids)
        .group_by(DeviceRow.profile_external_id)
        .having(func.count() > 1)
        .limit(limit)
    )
    return (
        select(DeviceRow.id, DeviceRow.profile_external_id, DeviceRow.os_type, DeviceRow.asset_tag)
        .where(
            DeviceRow.source_name == source,
            DeviceRow.source_inventory == inventory,
            DeviceRow.os_type == os_type,
            DeviceRow.profile_external_id.in_(shared),
        )
        .order_by(DeviceRow.id)
    )


def detach(uow: UnitOfWork, device_ids: Sequence[str], *, source: str, actor: str) -> int:
    """Unlink devices from the source whose Jamf record now describes another device;
    each one audited. Enrollment, owner and profile stay; the source, its Jamf id and
    content hash go, so the source neither rewrites nor deletes the device again."""
    detached = 0
    with uow:
        for device_id in device_ids:
            row = uow.session.get(DeviceRow, device_id)
            if row is None or row.source_name != source:
                continue
            external_id = row.profile_external_id
            row.source_name = row.source_origin = row.source_inventory = None
            row.profile_external_id = row.source_hash = None
            row.sync_run_id = None
            row.update_time = uow.now()
            audit.record_within(
                uow,
                audit.DEVICE_UPDATE,
                actor=actor,
                message=(
                    f"device {to_device(row).label} detached from {source}: its Jamf id "
                    f"{external_id} now describes another serial"
                ),
                device=to_device(row),
            )
            detached += 1
        uow.commit()
    return detached


def delete_gone(
    uow: UnitOfWork, run_id: int, device_ids: Sequence[str], *, source: str, actor: str
) -> int:
    """Delete devices confirmed gone from the source; each one audited."""
    deleted = 0
    with uow:
        for device_id in device_ids:
            row = uow.session.get(DeviceRow, device_id)
            # Re-check under the transaction: seen meanwhile, or no longer ours, stays.
            if row is None or row.source_name != source or row.sync_run_id == run_id:
                continue
            device = to_device(row)
            uow.session.delete(row)
            audit.record_within(
                uow,
                audit.DEVICE_DELETE,
                actor=actor,
                message=f"device {device.label} removed: gone from {source}",
                device=device,
            )
            deleted += 1
        _add_counts(uow, run_id, deleted=deleted)
        uow.commit()
    return deleted


def finish_run(
    uow: UnitOfWork,
    run_id: int,
    *,
    status: str,
    actor: str,
    error: str | None = None,
    watermark: datetime | None = None,
    details: dict[str, Any] | None = None,
) -> SyncRun:
    """Close the run and write its ``jamf.sync`` audit event in the same transaction."""
    with uow:
        row = uow.session.get(SyncRunRow, run_id)
        assert row is not None, f"sync run {run_id} vanished"
        row.status = status
        row.end_time = uow.now()
        row.error = error
        row.watermark = watermark
        row.details = details or None
        run = to_run(row)
        _audit_run(uow, run, actor)
        uow.commit()
        return run


def record_not_started(
    uow: UnitOfWork, *, source: str, inventory: str, kind: str, actor: str, error: str
) -> SyncRun:
    """A sync that could not start (the worker's settings), recorded as a failed run
    with its reason and audited like any other, in one transaction."""
    with uow:
        now = uow.now()
        row = SyncRunRow(
            source=source, inventory=inventory, kind=kind, status=FAILED, start_time=now,
            end_time=now, error=error, fetched=0, created=0, updated=0, unchanged=0,
            deleted=0, skipped=0,
        )  # fmt: skip
        uow.session.add(row)
        uow.session.flush()
        run = to_run(row)
        _audit_run(uow, run, actor)
        uow.commit()
        return run


def _audit_run(uow: UnitOfWork, run: SyncRun, actor: str) -> None:
    counts = (
        f"fetched {run.fetched}, created {run.created}, updated {run.updated}, "
        f"unchanged {run.unchanged}, deleted {run.deleted}, skipped {run.skipped}"
    )
    audit.record_within(
        uow,
        audit.JAMF_SYNC,
        actor=actor,
        success=run.status == SUCCEEDED,
        message=f"{run.kind} sync of {run.source}/{run.inventory} {run.status}: {counts}"
        + (f"; {run.error}" if run.error else ""),
        details={
            "run_id": run.id,
            "kind": run.kind,
            "inventory": run.inventory,
            "fetched": run.fetched,
            "created": run.created,
            "updated": run.updated,
            "unchanged": run.unchanged,
            "deleted": run.deleted,
            "skipped": run.skipped,
        },
    )


def abandon_running(uow: UnitOfWork, inventory: str, *, actor: str) -> list[int]:
    """Close runs of the inventory left ``running`` by a worker that died mid-sync.

    Only call this holding the inventory's sync lock: then no run can really be going.
    The devices they wrote stay (every page was its own transaction); the next full
    sync finishes the job. Returns the ids of the runs closed.
    """
    with uow.read():
        ids = list(
            uow.session.scalars(
                select(SyncRunRow.id).where(
                    SyncRunRow.inventory == inventory, SyncRunRow.status == RUNNING
                )
            )
        )
    for run_id in ids:
        finish_run(
            uow,
            run_id,
            status=FAILED,
            actor=actor,
            error="interrupted: the worker stopped before the run finished",
        )
    return ids


# The runs of an inventory entry's schedule. A webhook's one-device sync is recorded as a
# run of kind "device" (``jamf.device_sync``): audited like any run, but it neither moves
# a partial sync's watermark nor counts towards the alert, and `jamf status` lists the
# scheduled runs, which thousands of device runs a day would otherwise push out.
SCHEDULED_KINDS = ("full", "partial")


def recent_runs(
    uow: UnitOfWork,
    inventory: str,
    *,
    limit: int = 20,
    kinds: Sequence[str] | None = SCHEDULED_KINDS,
) -> list[SyncRun]:
    """The inventory's newest runs of ``kinds`` (None: every kind), newest first."""
    with uow.read():
        query = select(SyncRunRow).where(SyncRunRow.inventory == inventory)
        if kinds is not None:
            query = query.where(SyncRunRow.kind.in_(list(kinds)))
        rows = uow.session.scalars(query.order_by(SyncRunRow.id.desc()).limit(limit)).all()
        return [to_run(r) for r in rows]


def last_success(uow: UnitOfWork, inventory: str) -> SyncRun | None:
    with uow.read():
        row = uow.session.scalars(
            select(SyncRunRow)
            .where(SyncRunRow.inventory == inventory, SyncRunRow.status == SUCCEEDED)
            .order_by(SyncRunRow.id.desc())
            .limit(1)
        ).one_or_none()
        return to_run(row) if row else None


def last_watermarks(uow: UnitOfWork, inventory: str) -> dict[str, datetime]:
    """Where the next partial sync starts, per kind of record ("computers", ...): the
    newest successful full or partial run's watermarks (``details["watermarks"]``, else
    its column). A device run (a webhook's) has none and moves nothing."""
    with uow.read():
        row = uow.session.scalars(
            select(SyncRunRow)
            .where(
                SyncRunRow.inventory == inventory,
                SyncRunRow.status == SUCCEEDED,
                SyncRunRow.kind.in_(SCHEDULED_KINDS),
            )
            .order_by(SyncRunRow.id.desc())
            .limit(1)
        ).one_or_none()
        if row is None:
            return {}
        marks = (row.details or {}).get("watermarks")
        if isinstance(marks, dict):
            return {str(k): datetime.fromisoformat(str(v)) for k, v in marks.items() if v}
        return {"computers": row.watermark} if row.watermark is not None else {}


def alert(runs: Sequence[SyncRun]) -> bool:
    """Two failed runs in a row (newest first, finished full and partial runs only)
    raise the alert; a device run, failed or not, neither raises nor clears it."""
    finished = [r for r in runs if r.status != RUNNING and r.kind in SCHEDULED_KINDS][:2]
    return len(finished) == 2 and all(r.status == FAILED for r in finished)


def to_run(row: SyncRunRow) -> SyncRun:
    return SyncRun(
        id=row.id,
        source=row.source,
        inventory=row.inventory,
        kind=row.kind,
        status=row.status,
        start_time=row.start_time,
        end_time=row.end_time,
        fetched=row.fetched,
        created=row.created,
        updated=row.updated,
        unchanged=row.unchanged,
        deleted=row.deleted,
        skipped=row.skipped,
        error=row.error,
        watermark=row.watermark,
        details=row.details or {},
    )
