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
import gc
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from inventory.db import Database
from inventory.domain import OSType, SourceRecord, SyncRun
from inventory.errors import DevtrustError
from inventory.services import source_sync as store
from jamf.client import InventoryPage, JamfClient
from jamf.config import InventorySpec, OnMissing, SourceSpec
from jamf.mapping import (
    MappedDevice,
    Skipped,
    map_computer,
    map_mobile_device,
    split_duplicates,
)

log = logging.getLogger("devtrust.jamf.sync")

# Skip reasons kept on the run record for `jamf status`; the rest are counted and logged.
SKIP_SAMPLES = 20
# Unseen devices confirmed per round of lookups in the deletion phase.
CONFIRM_BATCH = 200
# Pages read ahead per fetch thread: the threads go on reading while the writer waits
# for the database. Memory stays bounded: a mapped page of 500 is about 1 MB.
PREFETCH = 2
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
class Target:
    """One kind of Jamf record a sync reads: how to page it, look one up, and map it."""

    name: str
    os_type: OSType
    # The RSQL field a partial sync narrows on: when the device last reported.
    report_field: str
    # The record's Jamf id: the RSQL and sort field keyset reads go by, and its key in
    # a listed record.
    id_field: str
    # (client, page size, filter, sort) -> the first page of what the filter selects
    page: Callable[[JamfClient, int, str, str], InventoryPage]
    lookup: Callable[[JamfClient, str], dict[str, Any] | None]
    # (record, the source's ignored usernames) -> device or skip
    map: Callable[[Mapping[str, Any], frozenset[str]], MappedDevice | Skipped]

    def filter_for(self, spec: InventorySpec) -> str:
        return spec.filter_rsql if self.os_type is OSType.MACOS else spec.mobile_filter_rsql


COMPUTERS = Target(
    name="computers",
    os_type=OSType.MACOS,
    report_field="general.reportDate",
    id_field="id",
    page=lambda c, size, q, sort: c.computers_page(page=0, page_size=size, filter=q, sort=sort),
    lookup=lambda c, ext: c.computer(ext),
    map=map_computer,
)
MOBILE_DEVICES = Target(
    name="mobile devices",
    os_type=OSType.IOS,
    report_field="lastInventoryUpdateDate",
    id_field="mobileDeviceId",
    page=lambda c, size, q, sort: c.mobile_devices_page(
        page=0, page_size=size, filter=q, sort=sort
    ),
    lookup=lambda c, ext: c.mobile_device(ext),
    map=map_mobile_device,
)
TARGETS = {t.os_type.value: t for t in (COMPUTERS, MOBILE_DEVICES)}


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


@dataclass(frozen=True)
class Page:
    """One inventory page, mapped: the devices, the records skipped and why.

    ``number`` counts the pages of a listing as they arrive (from 0); ``total_count`` is
    how many records Jamf reported for the whole listing when it began."""

    number: int
    total_count: int
    raw_count: int
    devices: list[MappedDevice]
    skipped: list[Skipped]
    newest_report: datetime | None


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
    listings: dict[str, dict[str, int]] = field(default_factory=dict)
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
) -> SyncRun:
    """Run one sync and return its record; a Jamf or configuration failure is recorded
    on the run (status ``failed``, ``error``), not raised. Anything unexpected is
    recorded when the database still answers, then raised.

    ``still_held`` (the sync lock's ``Lease.ensure_held``) is called before every write:
    each page, each batch of deletions or detachments. When it raises (a lost lock),
    the run stops there, failed with its message: another worker may be syncing the
    inventory by then, and two syncs must not write, least of all delete, at once."""
    kind = Kind(kind)
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    run_id = store.start_run(db.uow(), source=source.name, inventory=inventory.name, kind=kind)
    targets = (COMPUTERS, MOBILE_DEVICES) if source.mobile_devices else (COMPUTERS,)
    sync = _Sync(
        db, client, source.name, inventory, run_id, kind, force, progress, concurrency, targets,
        source.ignored_usernames, still_held,
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


_gc_lock = threading.Lock()
_gc_depth = 0


@contextmanager
def bulk_gc() -> Iterator[None]:
    """Keep the cyclic GC off what the process held before the sync began.

    A sync allocates millions of short-lived JSON objects, so the collector runs often,
    and each of its full passes rescans every object the process already had (modules,
    SQLAlchemy's caches, ...). ``gc.freeze`` sets those aside for the duration: 20% less
    CPU for a full sync in ``bench/sync.py``. The thresholds stay as they are: raising
    them let httpx responses (which sit in reference cycles, each holding a page's body)
    pile up, and memory grew with the fleet. Nested and concurrent uses share one freeze.
    """
    global _gc_depth
    with _gc_lock:
        _gc_depth += 1
        if _gc_depth == 1:
            gc.freeze()
    try:
        yield
    finally:
        with _gc_lock:
            _gc_depth -= 1
            if _gc_depth == 0:
                gc.unfreeze()


def _always_held() -> None:
    """A run with no lock to lose (tests, the CLI's direct sync)."""


class JamfIdError(DevtrustError):
    """A listed record without a Jamf id a keyset read can go on from."""


@dataclass(frozen=True)
class PageFetcher:
    """The requests of one keyset listing (``query`` narrowed by id ranges), and the
    mapping of what they return; called from the pool's threads."""

    client: JamfClient
    query: str
    page_size: int
    target: Target = COMPUTERS
    ignored_usernames: frozenset[str] = frozenset()

    def top(self) -> InventoryPage:
        """One record, the highest id ``query`` selects; ``total_count`` is the listing's."""
        field = self.target.id_field
        return self.target.page(self.client, 1, self.query, f"{field}:desc")

    def read(self, after: int, upto: int | None) -> InventoryPage:
        """The first page of ``query`` among ids above ``after`` and at most ``upto``,
        ascending; its ``total_count`` is how many that range still holds."""
        field = self.target.id_field
        terms = [f"({self.query})"] if self.query.strip() else []
        terms.append(f"{field}>{after}")
        if upto is not None:
            terms.append(f"{field}<={upto}")
        return self.target.page(self.client, self.page_size, ";".join(terms), f"{field}:asc")

    def ident(self, raw: Mapping[str, Any]) -> int:
        """A listed record's Jamf id as a number (Jamf sends it as a string)."""
        value = raw.get(self.target.id_field, raw.get("id"))
        try:
            return int(str(value))
        except ValueError:
            raise JamfIdError(
                f"Jamf listed a {self.target.name} record whose id is {value!r}, not a number: "
                "the listing cannot go on from it"
            ) from None

    def page(self, number: int, total_count: int, records: Sequence[Mapping[str, Any]]) -> Page:
        convert, ignored = self.target.map, self.ignored_usernames
        devices: list[MappedDevice] = []
        skipped: list[Skipped] = []
        for raw in records:
            mapped = convert(raw, ignored)
            if isinstance(mapped, MappedDevice):
                devices.append(mapped)
            else:
                skipped.append(mapped)
        reports = [d.report_time for d in devices if d.report_time is not None]
        return Page(
            number=number,
            total_count=total_count,
            raw_count=len(records),
            devices=devices,
            skipped=skipped,
            newest_report=max(reports, default=None),
        )


def page_fetcher(
    client: JamfClient,
    query: str,
    page_size: int,
    target: Target = COMPUTERS,
    ignored_usernames: frozenset[str] = frozenset(),
) -> PageFetcher:
    """How to read the records ``query`` selects, a keyset page at a time (in pool threads)."""
    return PageFetcher(client, query, page_size, target, ignored_usernames)


def fetch_pages(
    client: JamfClient,
    query: str,
    *,
    page_size: int,
    concurrency: int = 4,
    target: Target = COMPUTERS,
    ignored_usernames: frozenset[str] = frozenset(),
) -> Generator[Page, None, None]:
    """Every page of ``query``, fetched ahead, as they arrive; what a sync reads, without
    writing."""
    with bulk_gc(), ThreadPoolExecutor(concurrency, thread_name_prefix="jamf-fetch") as pool:
        fetcher = page_fetcher(client, query, page_size, target, ignored_usernames)
        reader = PageReader(pool, fetcher)
        yield from reader.pages(PREFETCH * concurrency, concurrency)


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
    ) -> None:
        self.db = db
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
                newest = self._read(target, query, track_seen)
                if mark is not None or newest is not None:
                    marks[target.name] = max(m for m in (mark, newest) if m is not None)
            if track_seen:
                self._delete_missing()
            elif spec.on_missing is not OnMissing.DELETE:
                self._detach_ghosts()
            # A partial sync of an entry that deletes leaves ghosts to the next full one.
        return marks

    def _read(self, target: Target, query: str, track_seen: bool) -> datetime | None:
        """Write every page of ``query`` as it arrives; the newest report date seen."""
        newest: datetime | None = None
        with closing(self._pages(target, query)) as pages:
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

    def _pages(self, target: Target, query: str) -> Generator[Page, None, None]:
        """The pages of ``query``, read to the end of its id space (see ``PageReader``)."""
        fetcher = page_fetcher(self.client, query, self.spec.page_size, target, self.ignored)
        reader = PageReader(self.pool, fetcher)
        yield from reader.pages(self.window, self.concurrency)
        self._listed(target, reader.read_count, reader.reported_total)

    def _listed(self, target: Target, read: int, reported: int) -> None:
        """A listing read to its end: ``read`` records, of ``reported`` at its start.

        Complete, for the deletion phase, means every range was read to its end without
        an error (an error fails the run before any deletion). Fewer records read than
        Jamf reported is then what records deleted during the read look like; it is
        kept on the run (``details["listings"]``) and logged, and the deletion phase
        treats each device the run did not see as it always does: within the cap, and
        deleted only when Jamf confirms its id is gone or now another device's.
        """
        self.totals.listings[target.name] = {"read": read, "reported": reported}
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


@dataclass
class _Range:
    """Ids above ``after`` and at most ``upto`` (None: no upper bound) not yet read."""

    after: int
    upto: int | None
    busy: bool = False  # a request for it is on the way
    done: bool = False


class PageReader:
    """Every record a listing selects, by keyset reads over id ranges fetched side by side.

    Why keysets: an offset page (``page=N``) is a position in a list that moves when Jamf
    deletes a record already read, so every later page shifts and a live record is
    never read. A keyset page, ``filter=(<the listing's filter>);id>N`` sorted by id, is
    defined by the last id read: a deletion anywhere changes nothing about which records
    come next. So a record that exists for the whole read is always read.

    Why ranges: keyset pages of one range follow each other (the next needs the last id
    of the one before), so one range is one request at a time. To keep ``workers``
    requests going (Jamf advises at most five connections), the reader first asks for
    the highest id (``sort=id:desc``, one record, which also gives Jamf's ``totalCount``
    at the start), splits ``0 .. top`` into ``workers`` ranges of equal id span, and
    reads them side by side. The last range has no upper bound: computers enrolled
    during the read get ids above ``top`` and are read too. When a range is done while
    another still has a long way to go, the longest is split in two at the middle of
    what it has left (work stealing), so an uneven fleet (old ids deleted, a filter
    that selects clusters) does not leave one connection doing the tail alone. A
    request already on the way for a range that was split meanwhile may return records
    past its new end: they are dropped, the other half reads them.

    When a range is done: a page is the last of its range when it is empty, or holds
    every record the range still had (its ``totalCount``), or reaches past the range's
    end. A short page is not the end: a record deleted while Jamf built the page makes
    it short, and the range goes on from the page's last id. A run ends when every range
    is done, that is, when the id space is exhausted.

    Pages are yielded as they arrive, not in id order, ``window`` at most fetched or
    waiting, so memory is bounded by the window, never the fleet. Each request is one
    task in the pool (never a thread held for a whole range), so the sync's own lookups
    share the pool without waiting for the listing to end.

    After the pages are all read, ``reported_total`` is what Jamf reported at the
    start and ``read_count`` the records read; fewer read than reported is expected when
    records are deleted during the read, and the sync records it (see ``_Sync``).
    """

    def __init__(self, pool: ThreadPoolExecutor, fetcher: PageFetcher) -> None:
        self.pool = pool
        self.fetcher = fetcher
        self.reported_total = 0
        self.read_count = 0
        self._cond = threading.Condition()
        self._ranges: list[_Range] = []
        self._ready: deque[Page] = deque()
        self._in_flight = 0
        self._error: BaseException | None = None
        self._stopped = False
        self._numbered = 0
        self._splitting = False
        self._top = 0
        self._window = 1
        self._workers = 1
        self._context = contextvars.copy_context()

    def pages(self, window: int, workers: int) -> Generator[Page, None, None]:
        if window < 1 or workers < 1:
            raise ValueError("the window and the workers must be at least 1")
        # The fetch threads log with the caller's context (task id, inventory).
        self._context = contextvars.copy_context()
        self._window, self._workers = window, workers
        # One range to begin with, read at once while the highest id is asked for; the
        # answer splits what that range has left (a listing of one page never waits).
        self._ranges = [_Range(after=0, upto=None)]
        self._splitting = True
        with self._cond:
            self._in_flight += 1
            self.pool.submit(self._context.copy().run, self._probe)
        try:
            while True:
                with self._cond:
                    self._pump()
                    while not self._ready and self._in_flight and self._error is None:
                        self._cond.wait()
                    if self._error is not None:
                        raise self._error
                    if not self._ready:
                        return  # nothing on the way, nothing left to ask: all read
                    page = self._ready.popleft()
                    self._pump()
                yield page
        finally:
            with self._cond:
                self._stopped = True
                while self._in_flight:
                    self._cond.wait()

    def _failed(self, exc: BaseException, span: _Range | None = None) -> None:
        """A request's failure: the first one is the read's error, and the reader wakes."""
        with self._cond:
            self._in_flight -= 1
            if span is not None:
                span.busy = False
            if self._error is None:
                self._error = exc
            self._cond.notify_all()

    def _probe(self) -> None:
        """The highest id and Jamf's total at the start; then split the id space."""
        try:
            first = self.fetcher.top()
            top = max((self.fetcher.ident(r) for r in first.results), default=0)
        except BaseException as exc:
            self._failed(exc)
            return
        with self._cond:
            self._in_flight -= 1
            self.reported_total, self._top = first.total_count, top
            self._split(first.total_count, top)
            self._splitting = False
            self._pump()
            self._cond.notify_all()

    def _split(self, total: int, top: int) -> None:
        """Share what the first range has left, up to ``top``, among the workers, each
        range a whole number of pages as far as the ids' density tells (the last page
        of a range is its short one: a range costs no more requests than it must)."""
        first, size = self._ranges[0], self.fetcher.page_size
        if first.done or top <= first.after or total <= size:
            self._workers = 1 if total <= size else self._workers
            return
        span = top - first.after
        left = total * span / top  # records the first range still has, about
        pages = math.ceil(left / size)
        ranges = max(1, min(self._workers, pages))
        self._workers = ranges
        if ranges == 1:
            return
        # Each range a whole number of pages at this density, a tenth of a page short so
        # its last page is not pushed into one more by a few records (an uneven fleet is
        # what stealing is for).
        per_range = math.ceil(pages / ranges)
        ids_per_range = max(1.0, (per_range * size - size / 10) * span / left)
        bounds = [first.after + round(ids_per_range * n) for n in range(1, ranges)]
        bounds = [b for b in bounds if b < top]
        ends = [*bounds, None]
        first.upto = ends[0]
        self._ranges += [
            _Range(after=low, upto=high) for low, high in zip(bounds, ends[1:], strict=True)
        ]

    # -- scheduling (under the condition's lock) ----------------------------------------

    def _pump(self) -> None:
        """Ask for the next page of each range that has none on the way, window allowing."""
        while not self._stopped and self._error is None:
            if self._in_flight + len(self._ready) >= self._window:
                return
            span = self._claim()
            if span is None:
                return
            span.busy = True
            self._in_flight += 1
            after, upto = span.after, span.upto
            context = self._context.copy()
            try:
                self.pool.submit(context.run, self._fetch, span, after, upto)
            except RuntimeError as exc:  # the pool is shutting down
                self._in_flight -= 1
                span.busy = False
                self._error = exc
                return

    def _claim(self) -> _Range | None:
        """A range to read next: an idle one, or half of the longest one left."""
        active = [r for r in self._ranges if not r.done]
        for span in active:
            if not span.busy:
                return span
        if self._splitting or len(active) >= self._workers or not active:
            return None
        longest = max(active, key=self._left)
        left = self._left(longest)
        # Records it has left, about, at the density the start showed: splitting what
        # two pages hold saves nothing, and costs a short page more.
        density = self.reported_total / self._top if self._top else 1.0
        if left * min(density, 1.0) < 2 * self.fetcher.page_size:
            return None
        middle = longest.after + left // 2
        half = _Range(after=middle, upto=longest.upto)
        longest.upto = middle
        self._ranges.append(half)
        return half

    def _left(self, span: _Range) -> int:
        """Ids a range has left, as far as ``top`` for the one without an upper bound."""
        end = span.upto if span.upto is not None else max(self._top, span.after)
        return end - span.after

    # -- one request (in a pool thread) -------------------------------------------------

    def _fetch(self, span: _Range, after: int, upto: int | None) -> None:
        try:
            if self._stopped:
                raise _Stopped
            answer = self.fetcher.read(after, upto)
            records = answer.results
            idents = [self.fetcher.ident(r) for r in records]
            with self._cond:
                end = span.upto  # smaller than ``upto`` if the range was split meanwhile
                kept = [r for r, i in zip(records, idents, strict=True) if end is None or i <= end]
                beyond = len(kept) < len(records)
                if not records or beyond or len(records) >= answer.total_count:
                    span.done = True
                elif max(idents) <= after:
                    raise JamfIdError(
                        f"Jamf answered a read of {self.fetcher.target.name} above id {after} "
                        "with no record above it: the listing cannot go on"
                    )
                else:
                    span.after = max(idents)
                span.busy = False
                number = self._numbered
                if kept:
                    self._numbered += 1
                    self.read_count += len(kept)
            page = self.fetcher.page(number, self.reported_total, kept) if kept else None
        except _Stopped:
            page = None
        except BaseException as exc:
            self._failed(exc, span)
            return
        with self._cond:
            self._in_flight -= 1
            if page is not None:
                self._ready.append(page)
            self._pump()
            self._cond.notify_all()


class _Stopped(Exception):
    """The reader was closed before this request was sent."""
