"""One device's sync, as a Jamf Pro webhook asks for it: read its record, apply it.

A webhook names one computer or mobile device by its Jamf id (``jssID``). The worker
reads that record by id (``JamfClient.computer`` / ``mobile_device``), maps it as a page's
records are mapped, and writes it with ``source_sync.apply_page``, the code a full or
partial sync writes a page with: the same content hash (a no-change webhook writes
nothing at all, not even a run), the same source rules (a hand-registered device gains
its profile and stays the admin's), the same conflict handling (a serial that moved to a
new Jamf id follows it when the old record is gone, and is skipped while the old record
still holds it), and the same run record and ``jamf.sync`` audit event, of kind
``device``. A record Jamf no longer has goes through the inventory's ``on_missing`` rule:
deleted (and audited) with ``DELETE``, kept with ``NOOP``.

Which inventory entry a device belongs to: the one it was synced into, when it is
already in the inventory; else the first whose filter selects it (asked of Jamf as a
one-record listing, ``id==N;(filter)``), so that a webhook never adds a device a full
sync would not.

Bursts are coalesced by :class:`Coalescer`: one pending mark per device (a Redis key, or
a file for the embedded queue), set by the service when it queues the device's sync and
cleared by the worker when that sync starts. A webhook that finds the mark set queues
nothing (the queued sync will read the newest record anyway); one arriving once the
sync has started finds it cleared and queues exactly one more.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from inventory.db import Database
from inventory.domain import OSType, SourceRecord
from inventory.errors import DevtrustError, one_line
from inventory.models import DeviceRow
from inventory.services import source_sync as store
from jamf.client import JamfClient
from jamf.config import InventorySpec, OnMissing, SourceSpec
from jamf.mapping import MappedDevice, map_computer, map_mobile_device

log = logging.getLogger("devtrust.jamf.device_sync")

# The kind a device sync's run is recorded with (sync_runs.kind holds 8 characters).
DEVICE_RUN = "device"
# A pending mark outlives a lost task by no more than this.
PENDING_TTL = 120.0


class DeviceKind(StrEnum):
    COMPUTER = "computer"
    MOBILE_DEVICE = "mobile-device"

    @property
    def os_type(self) -> OSType:
        return OSType.MACOS if self is DeviceKind.COMPUTER else OSType.IOS


@dataclass(frozen=True)
class DeviceRef:
    """One Jamf record: a computer or a mobile device, by its Jamf id."""

    kind: DeviceKind
    jamf_id: str

    def __str__(self) -> str:
        return f"{self.kind.value} {self.jamf_id}"


def _lookup(client: JamfClient, ref: DeviceRef) -> dict[str, Any] | None:
    if ref.kind is DeviceKind.COMPUTER:
        return client.computer(ref.jamf_id)
    return client.mobile_device(ref.jamf_id)


def _map(ref: DeviceRef, record: dict[str, Any], ignored: frozenset[str]) -> Any:
    convert = map_computer if ref.kind is DeviceKind.COMPUTER else map_mobile_device
    return convert(record, ignored)


def _selected_by(client: JamfClient, ref: DeviceRef, spec: InventorySpec) -> bool:
    """Whether the entry's filter selects this record: a one-record listing."""
    if ref.kind is DeviceKind.COMPUTER:
        query = _narrowed(spec.filter_rsql, f"id=={ref.jamf_id}")
        page = client.computers_page(page=0, page_size=1, sections=("GENERAL",), filter=query)
    else:
        query = _narrowed(spec.mobile_filter_rsql, f"mobileDeviceId=={ref.jamf_id}")
        page = client.mobile_devices_page(page=0, page_size=1, filter=query)
    return page.total_count > 0


def _narrowed(filter_rsql: str, clause: str) -> str:
    return f"{clause};({filter_rsql})" if filter_rsql.strip() else clause


@dataclass
class DeviceOutcome:
    """What one device sync did: ``created``, ``updated``, ``unchanged``, ``deleted``,
    ``kept`` (gone from Jamf, on_missing NOOP), ``skipped`` (with ``reason``),
    ``ignored`` (in no inventory entry) or ``failed`` (recorded on its run)."""

    result: str
    ref: DeviceRef
    inventory: str | None = None
    run_id: int | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": store.FAILED if self.result == "failed" else store.SUCCEEDED,
            "result": self.result,
            "kind": self.ref.kind.value,
            "jamf_id": self.ref.jamf_id,
            "inventory": self.inventory,
            "run_id": self.run_id,
            "reason": self.reason,
        }


def sync_device(
    db: Database,
    client: JamfClient,
    source: SourceSpec,
    ref: DeviceRef,
    *,
    event: str | None = None,
    actor: str = "jamf-webhook",
) -> DeviceOutcome:
    """Read one record from Jamf and apply it (or its absence) to the inventory.

    Jamf errors are raised before anything is written (the caller records them)."""
    record = _lookup(client, ref)
    if record is None:
        return _gone(db, source, ref, event, actor)
    mapped = _map(ref, record, source.ignored_usernames)
    if not isinstance(mapped, MappedDevice):
        log.info("Jamf %s skipped: %s", ref, mapped.reason)
        return DeviceOutcome("skipped", ref, reason=mapped.reason)
    row = _row_of(db, source, mapped)
    if row is not None and row.source_hash == mapped.content_hash:
        return DeviceOutcome("unchanged", ref, inventory=row.source_inventory)
    spec = _inventory_of(client, source, ref, row)
    if spec is None:
        log.info("Jamf %s is in no inventory entry's filter: not synced", ref)
        return DeviceOutcome("ignored", ref, reason="in no inventory entry's filter")
    run_id = store.start_run(db.uow(), source=source.name, inventory=spec.name, kind=DEVICE_RUN)
    details: dict[str, Any] = {"mode": DEVICE_RUN, "jamf_id": ref.jamf_id, "kind": ref.kind.value}
    if event:
        details["event"] = event
    try:
        result, reason = _apply(db, client, source, spec, ref, run_id, mapped)
    except DevtrustError as exc:  # Jamf failed a conflict's lookup: recorded, not raised
        error = one_line(exc, limit=500)
        store.finish_run(db.uow(), run_id, status=store.FAILED, actor=actor, error=error,
                         details=details)  # fmt: skip
        log.error("the sync of Jamf %s failed: %s", ref, error)
        return DeviceOutcome("failed", ref, inventory=spec.name, run_id=run_id, reason=error)
    except BaseException as exc:
        store.finish_run(
            db.uow(), run_id, status=store.FAILED, actor=actor,
            error=f"interrupted: {type(exc).__name__}: {exc}"[:500], details=details,
        )  # fmt: skip
        raise
    if reason:
        details["skip_samples"] = [f"Jamf id {ref.jamf_id}: {reason}"]
    store.finish_run(db.uow(), run_id, status=store.SUCCEEDED, actor=actor, details=details)
    log.info("Jamf %s synced into %s/%s: %s", ref, source.name, spec.name, result)
    return DeviceOutcome(result, ref, inventory=spec.name, run_id=run_id, reason=reason)


def _apply(
    db: Database,
    client: JamfClient,
    source: SourceSpec,
    spec: InventorySpec,
    ref: DeviceRef,
    run_id: int,
    mapped: MappedDevice,
) -> tuple[str, str | None]:
    def page(replace: frozenset[str] = frozenset(), fetched: int = 1) -> store.PageOutcome:
        return store.apply_page(
            db.uow(), run_id, [mapped], source=source.name, inventory=spec.name,
            track_seen=False, replace_ids=replace, fetched=fetched,
        )  # fmt: skip

    try:
        outcome = page()
    except IntegrityError:
        # A sync wrote the same new device between our look and our write (the page's
        # transaction rolled back whole): write it again, as the update it now is.
        outcome = page()
    for record, old_id in outcome.conflicts:
        if _still_holds(client, ref, old_id, record, source.ignored_usernames):
            reason = f"serial {record.asset_tag} also on Jamf id {old_id}"
            store.add_counts(db.uow(), run_id, skipped=1)
            return "skipped", reason
        log.info("device %s moved from Jamf id %s to %s", record.asset_tag, old_id, ref.jamf_id)
        outcome = page(frozenset({record.external_id}), fetched=0)
    if outcome.skipped:
        return "skipped", outcome.skipped[0][1]
    if outcome.created:
        return "created", None
    return ("updated", None) if outcome.updated else ("unchanged", None)


def _still_holds(
    client: JamfClient, ref: DeviceRef, old_id: str, record: SourceRecord, ignored: frozenset[str]
) -> bool:
    """Whether the device's old Jamf record still carries its serial (a duplicate)."""
    old = DeviceRef(ref.kind, old_id)
    found = _lookup(client, old)
    previous = _map(old, found, ignored) if found is not None else None
    return isinstance(previous, MappedDevice) and previous.asset_tag == record.asset_tag


def _row_of(db: Database, source: SourceSpec, mapped: MappedDevice) -> Any:
    with db.uow().read() as uow:
        return uow.session.execute(
            select(
                DeviceRow.id, DeviceRow.source_name, DeviceRow.source_inventory,
                DeviceRow.source_hash, DeviceRow.profile_external_id,
            ).where(DeviceRow.asset_tag == mapped.asset_tag, DeviceRow.os_type == mapped.os_type)
        ).one_or_none()  # fmt: skip


def _inventory_of(
    client: JamfClient, source: SourceSpec, ref: DeviceRef, row: Any
) -> InventorySpec | None:
    if row is not None and row.source_name == source.name and row.source_inventory:
        for spec in source.inventories:
            if spec.name == row.source_inventory:
                return spec
    for spec in source.inventories:
        if _selected_by(client, ref, spec):
            return spec
    return None


def _gone(
    db: Database, source: SourceSpec, ref: DeviceRef, event: str | None, actor: str
) -> DeviceOutcome:
    """Jamf no longer has the record: the device's inventory entry's on_missing rule."""
    with db.uow().read() as uow:
        row = uow.session.execute(
            select(DeviceRow.id, DeviceRow.source_inventory).where(
                DeviceRow.source_name == source.name,
                DeviceRow.os_type == ref.kind.os_type.value,
                DeviceRow.profile_external_id == ref.jamf_id,
            )
        ).first()
    if row is None:
        return DeviceOutcome("unchanged", ref, reason="not in Jamf nor in the inventory")
    spec = next((s for s in source.inventories if s.name == row.source_inventory), None)
    if spec is None or spec.on_missing is not OnMissing.DELETE:
        log.info("Jamf %s is gone; kept (on_missing NOOP)", ref)
        return DeviceOutcome("kept", ref, inventory=row.source_inventory,
                             reason="gone from Jamf; on_missing is NOOP")  # fmt: skip
    run_id = store.start_run(db.uow(), source=source.name, inventory=spec.name, kind=DEVICE_RUN)
    deleted = store.delete_gone(db.uow(), run_id, [row.id], source=source.name, actor=actor)
    details = {"mode": DEVICE_RUN, "jamf_id": ref.jamf_id, "kind": ref.kind.value}
    if event:
        details["event"] = event
    store.finish_run(db.uow(), run_id, status=store.SUCCEEDED, actor=actor, details=details)
    log.info("Jamf %s is gone: device deleted (on_missing DELETE)", ref)
    return DeviceOutcome("deleted" if deleted else "unchanged", ref, inventory=spec.name,
                         run_id=run_id)  # fmt: skip


# -- coalescing -------------------------------------------------------------------------


class Coalescer(Protocol):
    def claim(self, key: str) -> bool:
        """Set the device's pending mark; False when it was set already (a sync is queued)."""

    def release(self, key: str) -> None:
        """Clear the mark: the queued sync has started."""

    def close(self) -> None: ...


def pending_key(source: str, ref: DeviceRef) -> str:
    return f"{source}:{ref.kind.value}:{ref.jamf_id}"


class RedisCoalescer:
    PREFIX = "devtrust:webhook:pending:"

    def __init__(self, url: str, ttl: float = PENDING_TTL) -> None:
        from redis import Redis

        self.client = Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self.ttl = max(1, int(ttl))

    def claim(self, key: str) -> bool:
        return bool(self.client.set(self.PREFIX + key, b"1", nx=True, ex=self.ttl))

    def release(self, key: str) -> None:
        self.client.delete(self.PREFIX + key)

    def close(self) -> None:
        self.client.close()


class FileCoalescer:
    """Marks as files under one directory, for the embedded queue (one machine)."""

    def __init__(self, directory: Path, ttl: float = PENDING_TTL) -> None:
        self.directory = directory
        self.ttl = ttl
        directory.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.directory / re.sub(r"[^A-Za-z0-9_.-]", "_", key.replace(":", "--"))

    def claim(self, key: str) -> bool:
        path = self._path(key)
        for _ in range(2):
            try:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
                return True
            except FileExistsError:
                try:
                    age = time.time() - path.stat().st_mtime
                except FileNotFoundError:
                    continue  # released meanwhile: try again
                if age < self.ttl:
                    return False
                path.unlink(missing_ok=True)  # a mark whose sync was lost
        return False

    def release(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def close(self) -> None:
        pass


def coalescer_for(
    broker_url: str | None, data_dir: Path, *, redis_url: str | None = None
) -> Coalescer:
    """On the sync locks' Redis when there is one (``worker.locks.locks_for``), else
    files under the data directory, which the service and the worker share."""
    url = redis_url or (
        broker_url if broker_url and broker_url.lower().startswith(("redis://", "rediss://"))
        else None
    )  # fmt: skip
    if url:
        return RedisCoalescer(url)
    return FileCoalescer(Path(data_dir).resolve() / "webhooks" / "pending")
