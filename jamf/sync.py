"""The sync engine: one run of one inventory entry, from Jamf Pro pages to inventory rows.

A run reads the computers the entry's filter selects by keyset pages on the Jamf id
(``filter=(<filter>);id>N``, ``sort=id:asc``) over id ranges fetched side by side (see
``PageReader``), and writes each page as it arrives: while one page is written, the
next ones are being fetched and mapped by a small thread pool, so a sync costs about
what the slower of the two sides costs, not their sum. A computer that exists in Jamf
for the whole run is read by it, whatever is added, changed or deleted meanwhile.
Nothing grows with the fleet: a page is dropped once written, and which devices a full
run has seen is stamped on their rows (``sync_run_id``), not kept in a set.

Full sync
    Every page; new and changed devices are upserted, unchanged ones are not written.
    With ``on_missing: DELETE``, and only when every id range was read to its end
    without error, the devices of this source and inventory that the run did not see
    are candidates. If there are more of them than ``max_delete_share`` of the
    inventory's devices, the run stops and deletes nothing unless forced. Each candidate
    is then looked up by its Jamf id: it is deleted when Jamf has no such record, or
    when the record now carries another serial (it describes another device now). One
    still there with its serial (outside the filter now, say) is written as seen.
    Without ``DELETE``, a device whose Jamf id another device now claims, and whose
    record carries the other's serial, is detached from the source instead.

Partial sync
    Only computers whose ``general.reportDate`` is at or after the last successful run's
    watermark (the newest report date it saw), minus an overlap margin for clock skew
    and reports landing mid-sync. Its cost follows the number of changes, not the fleet.
    With no earlier successful run it reads everything, like a full sync that deletes
    nothing. It never deletes; without ``DELETE`` it detaches as a full sync does.

Conflicts
    A known serial under a new Jamf id is either a re-enrolled device (the old Jamf
    record is gone or now holds another serial: the device follows the new id) or two
    live Jamf records sharing a serial (the newer one is skipped, with its reason). The
    old id is looked up to tell which. This holds for a device registered by hand as
    for the source's own, so two live ids never take turns rewriting one device. A
    record whose report is older than the profile the device has (a webhook's read and
    a page can cross) never overwrites it.

Every run is recorded with its counts and writes one ``jamf.sync`` audit event; a
failure is recorded with its one-line reason, and two failed runs in a row raise the
inventory's alert flag.
"""

from __future__ import annotations

import contextvars
import logging
import math
import time
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from inventory.db import Database
from inventory.domain import SourceRecord, SyncRun
from inventory.errors import DevtrustError
from inventory.services import source_sync as store
from jamf.client import JamfClient
from jamf.config import InventorySpec, OnMissing, SourceSpec
from jamf.mapping import MappedDevice, Skipped, split_duplicates

# The read side, re-exported: a sync's callers and tests know these names from here.
from jamf.reading import (
    COMPUTERS,
    MOBILE_DEVICES,
    PREFETCH,
    PROCESS_READ_MIN,
    TARGETS,
    JamfIdError,
    Page,
    PageFetcher,
    PageReader,
    Target,
    bulk_gc,
    fetch_pages,
    open_reader,
    page_fetcher,
)

__all__ = [
    "COMPUTERS", "MOBILE_DEVICES", "PREFETCH", "PROCESS_READ_MIN", "TARGETS", "JamfIdError",
    "Kind", "Page", "PageFetcher", "PageReader", "Progress", "ProgressCallback",
    "SyncRefused", "SyncStopped", "Target", "bulk_gc", "fetch_pages", "page_fetcher",
    "partial_filter", "run_sync",
]  # fmt: skip

log = logging.getLogger("devtrust.jamf.sync")

# Skip reasons kept on the run record for `jamf status`; the rest are counted and logged.
SKIP_SAMPLES = 20
# Unseen devices confirmed per round of lookups in the deletion phase.
CONFIRM_BATCH = 200
# A partial run that read more Jamf ids than this checks every device for ghosts.
GHOST_CHECK_IDS = 5000
# Devices created in a run before the first ANALYZE (PostgreSQL), then every 4x more.
ANALYZE_FIRST = 2000


class Kind(StrEnum):
    FULL = "full"
    PARTIAL = "partial"


class SyncRefused(DevtrustError):
    """The run stopped on purpose (the deletion cap); recorded, nothing deleted."""

    http_status = 409


class SyncStopped(DevtrustError):
    """The run stopped before a write because ``still_held`` said it may not go on."""

    http_status = 409


@dataclass(frozen=True)
class Progress:
    """Where a run is, after each page and each round of deletions."""

    run_id: int
    inventory: str
    kind: str
    phase: str  # "fetch" or "delete"
    pages_done: int
    pages_expected: int
    fetched: int
    created: int
    updated: int
    unchanged: int
    skipped: int
    deleted: int


ProgressCallback = Callable[[Progress], None]


@dataclass
class _Totals:
    pages: int = 0
    pages_expected: int = 0
    fetched: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    deleted: int = 0
    replaced: int = 0
    kept_unseen: int = 0
    detached: int = 0
    stale: int = 0
    listings: dict[str, dict[str, Any]] = field(default_factory=dict)
    fetch_wait: float = 0.0
    write_time: float = 0.0
    skip_samples: list[str] = field(default_factory=list)


def run_sync(
    db: Database,
    client: JamfClient,
    source: SourceSpec,
    inventory: InventorySpec,
    *,
    kind: Kind | str = Kind.PARTIAL,
    force: bool = False,
    actor: str | None = None,
    progress: ProgressCallback | None = None,
    concurrency: int = 4,
    still_held: Callable[[], None] | None = None,
    process_min: int | None = PROCESS_READ_MIN,
) -> SyncRun:
    """Run one sync and return its record; a Jamf or configuration failure is recorded
    on the run (status ``failed``, ``error``), not raised. Anything unexpected is
    recorded when the database still answers, then raised.

    ``still_held`` (the sync lock's ``Lease.ensure_held``) is called before every write:
    each page, each batch of deletions or detachments. When it raises (a lost lock),
    the run stops there, failed with its message: another worker may be syncing the
    inventory by then, and two syncs must not write, least of all delete, at once.

    A whole listing of ``process_min`` records or more is read in a child process
    (``jamf.reading.open_reader``; None: always in this one)."""
    kind = Kind(kind)
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    run_id = store.start_run(db.uow(), source=source.name, inventory=inventory.name, kind=kind)
    targets = (COMPUTERS, MOBILE_DEVICES) if source.mobile_devices else (COMPUTERS,)
    sync = _Sync(
        db, client, source.name, inventory, run_id, kind, force, progress, concurrency, targets,
        source.ignored_usernames, still_held, process_min,
    )  # fmt: skip
    actor = actor or f"{source.name}-sync"
    log.info("%s sync of %s/%s started (run %d)", kind, source.name, inventory.name, run_id)
    try:
        with bulk_gc():
            marks = sync.run()
    except DevtrustError as exc:
        run = store.finish_run(
            db.uow(), run_id, status=store.FAILED, actor=actor, error=str(exc),
            details=sync.details(),
        )  # fmt: skip
        _report(run, db)
        return run
    except BaseException as exc:
        try:
            store.finish_run(
                db.uow(), run_id, status=store.FAILED, actor=actor,
                error=f"interrupted: {type(exc).__name__}: {exc}", details=sync.details(),
            )  # fmt: skip
        except Exception:  # the database may be what failed; the original error matters
            log.exception("could not record the failure of run %d", run_id)
        raise
    details = sync.details() | {"watermarks": {k: v.isoformat() for k, v in marks.items()}}
    run = store.finish_run(
        db.uow(), run_id, status=store.SUCCEEDED, actor=actor,
        watermark=marks.get(COMPUTERS.name), details=details,
    )  # fmt: skip
    _report(run, db)
    return run


def _report(run: SyncRun, db: Database) -> None:
    counts = (
        f"fetched {run.fetched}, created {run.created}, updated {run.updated}, "
        f"unchanged {run.unchanged}, deleted {run.deleted}, skipped {run.skipped}"
    )
    if run.status == store.SUCCEEDED:
        log.info("%s sync of %s/%s succeeded: %s", run.kind, run.source, run.inventory, counts)
        return
    log.error(
        "%s sync of %s/%s failed: %s (%s)", run.kind, run.source, run.inventory, run.error, counts
    )
    if store.alert(store.recent_runs(db.uow(), run.inventory, limit=2)):
        log.error("ALERT: the last two syncs of %s/%s failed", run.source, run.inventory)


def _always_held() -> None:
    """A run with no lock to lose (tests, the CLI's direct sync)."""


def partial_filter(filter_rsql: str, since: datetime, field: str = COMPUTERS.report_field) -> str:
    """The entry's filter narrowed to devices that reported at or after ``since``."""
    stamp = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    changed = f'{field}>="{stamp}"'
    return f"({filter_rsql});{changed}" if filter_rsql.strip() else changed


class _Sync:
    def __init__(
        self,
        db: Database,
        client: JamfClient,
        source: str,
        spec: InventorySpec,
        run_id: int,
        kind: Kind,
        force: bool,
        progress: ProgressCallback | None,
        concurrency: int,
        targets: Sequence[Target] = (COMPUTERS,),
        ignored_usernames: frozenset[str] = frozenset(),
        still_held: Callable[[], None] | None = None,
        process_min: int | None = PROCESS_READ_MIN,
    ) -> None:
        self.db = db
        self.process_min = process_min
        self.still_held = still_held or _always_held
        self.ignored = ignored_usernames
        self.targets = tuple(targets)
        self.client = client
        self.source = source
        self.spec = spec
        self.run_id = run_id
        self.kind = kind
        self.force = force
        self.progress = progress
        self.concurrency = concurrency
        self.window = PREFETCH * concurrency
        self.totals = _Totals()
        self.mode = kind.value
        self.since: dict[str, datetime] = {}
        self.pool: ThreadPoolExecutor  # the run's fetch threads, set by run()
        # The Jamf ids a partial run read, for its check for ghosts (None: look at all).
        self.read_ids: set[tuple[str, str]] | None = set() if kind is Kind.PARTIAL else None
        # Refresh the planner's statistics as a first sync grows the table 4x at a time.
        self.analyze_at = ANALYZE_FIRST

    def details(self) -> dict[str, Any]:
        t = self.totals
        details: dict[str, Any] = {
            "mode": self.mode,
            "pages": t.pages,
            "fetch_wait_seconds": round(t.fetch_wait, 3),
            "write_seconds": round(t.write_time, 3),
        }
        if COMPUTERS.name in self.since:
            details["since"] = self.since[COMPUTERS.name].isoformat()
        if MOBILE_DEVICES.name in self.since:
            details["mobile_since"] = self.since[MOBILE_DEVICES.name].isoformat()
        if t.replaced:
            details["replaced"] = t.replaced
        if t.kept_unseen:
            details["kept_unseen"] = t.kept_unseen
        if t.detached:
            details["detached"] = t.detached
        if t.stale:
            details["stale"] = t.stale
        if t.listings:
            details["listings"] = t.listings
        if t.skip_samples:
            details["skip_samples"] = t.skip_samples
        return details

    # -- the run --------------------------------------------------------------------

    def run(self) -> dict[str, datetime]:
        """Read every target, then settle what is missing; returns the new watermarks."""
        spec = self.spec
        full = self.kind is Kind.FULL
        previous = {} if full else store.last_watermarks(self.db.uow(), spec.name)
        marks: dict[str, datetime] = {}
        track_seen = full and spec.on_missing is OnMissing.DELETE
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="jamf-fetch") as pool:
            self.pool = pool
            for target in self.targets:
                query = target.filter_for(spec)
                mark = previous.get(target.name)
                if not full and mark is None:
                    self.mode = "partial read everything: no earlier successful sync"
                elif mark is not None:
                    since = mark - spec.partial_overlap
                    self.since[target.name] = since
                    query = partial_filter(query, since, target.report_field)
                newest = self._read(target, query, track_seen, whole=mark is None)
                if mark is not None or newest is not None:
                    marks[target.name] = max(m for m in (mark, newest) if m is not None)
            if track_seen:
                self._delete_missing()
            elif spec.on_missing is not OnMissing.DELETE:
                self._detach_ghosts()
            # A partial sync of an entry that deletes leaves ghosts to the next full one.
        return marks

    def _read(self, target: Target, query: str, track_seen: bool, whole: bool) -> datetime | None:
        """Write every page of ``query`` as it arrives; the newest report date seen.
        ``whole``: the listing is every record the filter selects (not recent reports)."""
        newest: datetime | None = None
        with closing(self._pages(target, query, whole)) as pages:
            while True:
                started = time.perf_counter()
                page = next(pages, None)
                self.totals.fetch_wait += time.perf_counter() - started
                if page is None:
                    return newest
                started = time.perf_counter()
                self._write(page, track_seen)
                self.totals.write_time += time.perf_counter() - started
                if page.newest_report is not None:
                    newest = max(newest or page.newest_report, page.newest_report)
                self._tell("fetch")

    def _pages(
        self, target: Target, query: str, whole: bool = False
    ) -> Generator[Page, None, None]:
        """The pages of ``query``, read to the end of its id space (see ``PageReader``),
        a large whole listing in a child process (``open_reader``)."""
        fetcher = page_fetcher(self.client, query, self.spec.page_size, target, self.ignored)
        reader = open_reader(self.pool, fetcher, whole=whole, process_min=self.process_min)
        yield from reader.pages(self.window, self.concurrency)
        self._listed(target, reader.read_count, reader.reported_total, reader.kind)

    def _listed(self, target: Target, read: int, reported: int, reader: str) -> None:
        """A listing read to its end: ``read`` records, of ``reported`` at its start.

        Complete, for the deletion phase, means every range was read to its end without
        an error (an error fails the run before any deletion). Fewer records read than
        Jamf reported is then what records deleted during the read look like; it is
        kept on the run (``details["listings"]``) and logged, and the deletion phase
        treats each device the run did not see as it always does: within the cap, and
        deleted only when Jamf confirms its id is gone or now another device's.
        """
        self.totals.listings[target.name] = {"read": read, "reported": reported, "reader": reader}
        if read < reported:
            log.info(
                "read %d %s of the %d Jamf reported at the start: %d deleted or moved out "
                "of the filter during the read",
                read, target.name, reported, reported - read,
            )  # fmt: skip

    # -- writing pages --------------------------------------------------------------

    def _write(self, page: Page, track_seen: bool) -> None:
        if self.read_ids is not None:
            self.read_ids.update((d.os_type.value, d.external_id) for d in page.devices)
            if len(self.read_ids) > GHOST_CHECK_IDS:
                self.read_ids = None  # too many to name: the check looks at every device
        kept, duplicates = split_duplicates(page.devices)
        skipped = page.skipped + duplicates
        for skip in skipped:
            self._skip(skip.external_id, skip.reason)
        self._apply(
            kept,  # a MappedDevice is a SourceRecord
            track_seen,
            fetched=page.raw_count,
            skipped_before=len(skipped),
        )
        t = self.totals
        t.pages += 1
        t.pages_expected = max(t.pages_expected, math.ceil(page.total_count / self.spec.page_size))

    def _apply(
        self,
        records: Sequence[SourceRecord],
        track_seen: bool,
        *,
        fetched: int,
        skipped_before: int = 0,
        replace_ids: frozenset[str] = frozenset(),
    ) -> None:
        self._check_held()  # at each page boundary: a lost lock stops the run here
        outcome = store.apply_page(
            self.db.uow(),
            self.run_id,
            records,
            source=self.source,
            inventory=self.spec.name,
            track_seen=track_seen,
            replace_ids=replace_ids,
            fetched=fetched,
            skipped_before=skipped_before,
        )
        t = self.totals
        t.fetched += fetched
        if t.created + outcome.created >= self.analyze_at:
            store.refresh_statistics(self.db.uow())
            self.analyze_at *= 4
        t.created += outcome.created
        t.updated += outcome.updated
        t.unchanged += outcome.unchanged
        t.stale += outcome.stale
        t.skipped += skipped_before
        for external_id, reason in outcome.skipped:
            self._skip(external_id, reason)
            t.skipped += 1
        if outcome.conflicts and not replace_ids:
            self._settle(outcome.conflicts, track_seen)

    def _settle(self, conflicts: list[tuple[SourceRecord, str]], track_seen: bool) -> None:
        """A known serial under a new Jamf id: re-enrolled device, or a duplicate serial?"""
        moved: list[SourceRecord] = []
        duplicates = 0
        for target in self.targets:
            mine = [(r, old_id) for r, old_id in conflicts if r.os_type is target.os_type]
            if not mine:
                continue
            old = self._lookup(target, {old_id for _, old_id in mine})
            for record, old_id in mine:
                found = old[old_id]
                if self._is_duplicate(target, record, old_id, found):
                    duplicates += 1
                else:
                    moved.append(record)
        self.totals.replaced += len(moved)
        if moved:
            replace = frozenset(r.external_id for r in moved)
            self._apply(
                moved, track_seen, fetched=0, skipped_before=duplicates, replace_ids=replace
            )
        elif duplicates:
            store.add_counts(self.db.uow(), self.run_id, skipped=duplicates)
            self.totals.skipped += duplicates

    def _is_duplicate(
        self, target: Target, record: SourceRecord, old_id: str, found: dict[str, Any] | None
    ) -> bool:
        """Whether the old Jamf record still holds the serial (else the device moved)."""
        previous = target.map(found, self.ignored) if found is not None else None
        if (
            isinstance(previous, MappedDevice)
            and previous.asset_tag == record.asset_tag
            and previous.os_type == record.os_type
        ):
            self._skip(record.external_id, f"serial {record.asset_tag} also on Jamf id {old_id}")
            return True
        log.info(
            "device %s moved from Jamf id %s to %s", record.asset_tag, old_id, record.external_id
        )
        return False

    def _skip(self, external_id: str | None, reason: str) -> None:
        line = f"Jamf id {external_id or '?'}: {reason}"
        log.info("skipped %s", line)
        if len(self.totals.skip_samples) < SKIP_SAMPLES:
            self.totals.skip_samples.append(line)

    def _lookup(self, target: Target, external_ids: set[str]) -> dict[str, dict[str, Any] | None]:
        """Per-id lookups, ``concurrency`` at a time; None for a record Jamf no longer has."""
        ordered = sorted(external_ids)
        futures = [
            self.pool.submit(contextvars.copy_context().run, target.lookup, self.client, ext)
            for ext in ordered
        ]
        try:
            return {ext: future.result() for ext, future in zip(ordered, futures, strict=True)}
        finally:
            for future in futures:
                future.cancel()

    # -- deleting what is gone ------------------------------------------------------

    def _delete_missing(self) -> None:
        spec, uow = self.spec, self.db.uow
        missing, total = store.count_missing(
            uow(), self.run_id, source=self.source, inventory=spec.name
        )
        if not missing:
            return
        allowed = math.floor(total * spec.max_delete_share)
        if missing > allowed and not self.force:
            raise SyncRefused(
                f"{missing} of the {total} devices synced from {self.source}/{spec.name} were "
                f"not seen, more than max_delete_share ({spec.max_delete_share:.0%}, "
                f"{allowed} devices) allows: nothing was deleted. If they are really gone from "
                "Jamf, run a full sync with --force"
            )
        log.info("%d devices were not seen; confirming each with Jamf before deleting", missing)
        after = ""
        while batch := store.missing_devices(
            uow(), self.run_id, source=self.source, inventory=spec.name, after=after,
            limit=CONFIRM_BATCH,
        ):  # fmt: skip
            after = batch[-1].device_id
            gone: list[str] = []
            present: dict[str, SourceRecord] = {}
            for target in self.targets:
                # A device of a kind this run does not read cannot be confirmed: kept.
                mine = [d for d in batch if d.external_id and d.os_type == target.os_type.value]
                found = self._lookup(target, {d.external_id for d in mine if d.external_id})
                for device in mine:
                    assert device.external_id is not None
                    verdict = self._still_there(target, device, found[device.external_id])
                    if verdict is None:
                        gone.append(device.device_id)
                    elif isinstance(verdict, MappedDevice):
                        present[verdict.external_id] = verdict
            # Still in Jamf: a record the listing skipped, or one outside the filter now.
            self.totals.kept_unseen += len(batch) - len(gone)
            if present:
                self._apply(list(present.values()), True, fetched=0)
            if gone:
                self._check_held()
                self.totals.deleted += store.delete_gone(
                    uow(), self.run_id, gone, source=self.source, actor=f"{self.source}-sync"
                )
            self._tell("delete")

    def _still_there(
        self, target: Target, device: store.SyncedDevice, found: dict[str, Any] | None
    ) -> MappedDevice | Skipped | None:
        """What Jamf's record at the device's id says: None when it is not that device's
        any more (no such record, or one that carries another serial: a new device)."""
        if found is None:
            return None
        mapped = target.map(found, self.ignored)
        if isinstance(mapped, MappedDevice) and mapped.asset_tag != device.asset_tag:
            log.info(
                "Jamf id %s is now serial %s: device %s is no longer that record's",
                device.external_id, mapped.asset_tag, device.asset_tag,
            )  # fmt: skip
            return None
        return mapped

    def _detach_ghosts(self) -> None:
        """Devices of this source whose Jamf id now answers with another serial, found
        where two devices claim one Jamf id: detached from the source (not deleted: the
        entry does not delete). Their enrollment and profile stay; nothing links them
        to Jamf any more, so they are the admin's, like a device registered by hand."""
        for target in self.targets:
            among = None
            if self.read_ids is not None:
                # A ghost is made by a read: the record now with another serial. A partial
                # run looks only at the ids it read (a full one at every device).
                among = {ext for os, ext in self.read_ids if os == target.os_type.value}
                if not among:
                    continue
            shared = store.shared_external_ids(
                self.db.uow(), source=self.source, inventory=self.spec.name,
                os_type=target.os_type.value, among=among,
            )  # fmt: skip
            if not shared:
                continue
            found = self._lookup(target, set(shared))
            ghosts: list[str] = []
            for external_id, claimants in shared.items():
                record = found[external_id]
                if record is None:
                    continue  # gone from Jamf: a full sync with on_missing DELETE decides
                for device in claimants:
                    if self._still_there(target, device, record) is None:
                        ghosts.append(device.device_id)
            if ghosts:
                self._check_held()
                self.totals.detached += store.detach(
                    self.db.uow(), ghosts, source=self.source, actor=f"{self.source}-sync"
                )

    def _check_held(self) -> None:
        try:
            self.still_held()
        except DevtrustError as exc:
            t = self.totals
            raise SyncStopped(
                f"stopped after {t.pages} pages ({t.created} created, {t.updated} updated, "
                f"{t.deleted} deleted): {exc}"
            ) from None

    def _tell(self, phase: str) -> None:
        if self.progress is None:
            return
        t = self.totals
        self.progress(
            Progress(
                run_id=self.run_id,
                inventory=self.spec.name,
                kind=self.kind.value,
                phase=phase,
                pages_done=t.pages,
                pages_expected=max(t.pages_expected, t.pages),
                fetched=t.fetched,
                created=t.created,
                updated=t.updated,
                unchanged=t.unchanged,
                skipped=t.skipped,
                deleted=t.deleted,
            )
        )
