"""The sync engine: one run of one inventory entry, from Jamf Pro pages to inventory rows.

A run reads the computers the entry's filter selects, in a stable order (``id:asc``),
and writes each page as it arrives: pages ``n+1 .. n+k`` are being fetched and mapped
by a small thread pool while page ``n`` is written, so a sync costs about what the
slower of the two sides costs, not their sum. Nothing grows with the fleet: a page is
dropped once written, and which devices a full run has seen is stamped on their rows
(``sync_run_id``), not kept in a set.

Full sync
    Every page; new and changed devices are upserted, unchanged ones are not written.
    With ``on_missing: DELETE``, and only when every page was read without error, the
    devices of this source and inventory that the run did not see are candidates. If
    there are more of them than ``max_delete_share`` of the inventory's devices, the
    run stops and deletes nothing unless forced. Each candidate is then looked up by its
    Jamf id: only a 404 deletes it. One still there (offset paging skips a record when
    another is deleted mid-sync) is written as seen instead.

Partial sync
    Only computers whose ``general.reportDate`` is at or after the last successful run's
    watermark (the newest report date it saw), minus an overlap margin for clock skew
    and reports landing mid-sync. Its cost follows the number of changes, not the fleet.
    With no earlier successful run it reads everything, like a full sync that deletes
    nothing. It never deletes.

Conflicts
    A known serial under a new Jamf id is either a re-enrolled device (the old Jamf
    record is gone or now holds another serial: the device follows the new id) or two
    live Jamf records sharing a serial (the newer one is skipped, with its reason). The
    old id is looked up to tell which.

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
from concurrent.futures import Future, ThreadPoolExecutor, wait
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
# Devices created in a run before the first ANALYZE (PostgreSQL), then every 4x more.
ANALYZE_FIRST = 2000


class Kind(StrEnum):
    FULL = "full"
    PARTIAL = "partial"


class SyncRefused(DevtrustError):
    """The run stopped on purpose (the deletion cap); recorded, nothing deleted."""

    http_status = 409


@dataclass(frozen=True)
class Target:
    """One kind of Jamf record a sync reads: how to page it, look one up, and map it."""

    name: str
    os_type: OSType
    # The RSQL field a partial sync narrows on: when the device last reported.
    report_field: str
    page: Callable[[JamfClient, int, int, str], InventoryPage]
    lookup: Callable[[JamfClient, str], dict[str, Any] | None]
    # (record, the source's ignored usernames) -> device or skip
    map: Callable[[Mapping[str, Any], frozenset[str]], MappedDevice | Skipped]

    def filter_for(self, spec: InventorySpec) -> str:
        return spec.filter_rsql if self.os_type is OSType.MACOS else spec.mobile_filter_rsql


COMPUTERS = Target(
    name="computers",
    os_type=OSType.MACOS,
    report_field="general.reportDate",
    page=lambda c, n, size, q: c.computers_page(page=n, page_size=size, filter=q),
    lookup=lambda c, ext: c.computer(ext),
    map=map_computer,
)
MOBILE_DEVICES = Target(
    name="mobile devices",
    os_type=OSType.IOS,
    report_field="lastInventoryUpdateDate",
    page=lambda c, n, size, q: c.mobile_devices_page(page=n, page_size=size, filter=q),
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
    """One inventory page, mapped: the devices, the records skipped and why."""

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
) -> SyncRun:
    """Run one sync and return its record; a Jamf or configuration failure is recorded
    on the run (status ``failed``, ``error``), not raised. Anything unexpected is
    recorded when the database still answers, then raised."""
    kind = Kind(kind)
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    run_id = store.start_run(db.uow(), source=source.name, inventory=inventory.name, kind=kind)
    targets = (COMPUTERS, MOBILE_DEVICES) if source.mobile_devices else (COMPUTERS,)
    sync = _Sync(
        db, client, source.name, inventory, run_id, kind, force, progress, concurrency, targets,
        source.ignored_usernames,
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


def page_fetcher(
    client: JamfClient,
    query: str,
    page_size: int,
    target: Target = COMPUTERS,
    ignored_usernames: frozenset[str] = frozenset(),
) -> Callable[[int], Page]:
    """Fetch and map page ``n`` of the records ``query`` selects (in a pool thread)."""
    read, convert = target.page, target.map

    def fetch(number: int) -> Page:
        answer = read(client, number, page_size, query)
        devices: list[MappedDevice] = []
        skipped: list[Skipped] = []
        for raw in answer.results:
            mapped = convert(raw, ignored_usernames)
            if isinstance(mapped, MappedDevice):
                devices.append(mapped)
            else:
                skipped.append(mapped)
        reports = [d.report_time for d in devices if d.report_time is not None]
        return Page(
            number=number,
            total_count=answer.total_count,
            raw_count=len(answer.results),
            devices=devices,
            skipped=skipped,
            newest_report=max(reports, default=None),
        )

    return fetch


def fetch_pages(
    client: JamfClient,
    query: str,
    *,
    page_size: int,
    concurrency: int = 4,
    target: Target = COMPUTERS,
    ignored_usernames: frozenset[str] = frozenset(),
) -> Generator[Page, None, None]:
    """Every page of ``query`` in order, fetched ahead; what a sync reads, without writing."""
    with bulk_gc(), ThreadPoolExecutor(concurrency, thread_name_prefix="jamf-fetch") as pool:
        fetch = page_fetcher(client, query, page_size, target, ignored_usernames)
        reader = PageReader(pool, fetch)
        yield from reader.pages(page_size, concurrency)


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
    ) -> None:
        self.db = db
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
        return marks

    def _read(self, target: Target, query: str, track_seen: bool) -> datetime | None:
        """Write every page of ``query`` as it arrives; the newest report date seen."""
        newest: datetime | None = None
        fetch = page_fetcher(self.client, query, self.spec.page_size, target, self.ignored)
        reader = PageReader(self.pool, fetch)
        with closing(reader.pages(self.spec.page_size, self.window)) as pages:
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

    # -- writing pages --------------------------------------------------------------

    def _write(self, page: Page, track_seen: bool) -> None:
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
        while batch := store.missing_batch(
            uow(), self.run_id, source=self.source, inventory=spec.name, after=after,
            limit=CONFIRM_BATCH,
        ):  # fmt: skip
            after = batch[-1][0]
            gone: list[str] = []
            present: list[SourceRecord] = []
            for target in self.targets:
                # A device of a kind this run does not read cannot be confirmed: kept.
                mine = [(d, ext) for d, ext, os in batch if ext and os == target.os_type.value]
                found = self._lookup(target, {ext for _, ext in mine})
                gone += [device_id for device_id, ext in mine if found[ext] is None]
                present += [
                    mapped
                    for record in found.values()
                    if record is not None
                    and isinstance(mapped := target.map(record, self.ignored), MappedDevice)
                ]
            # Still in Jamf: a record the listing skipped, or one outside the filter now.
            self.totals.kept_unseen += len(batch) - len(gone)
            if present:
                self._apply(present, True, fetched=0)
            if gone:
                self.totals.deleted += store.delete_gone(
                    uow(), self.run_id, gone, source=self.source, actor=f"{self.source}-sync"
                )
            self._tell("delete")

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


class PageReader:
    """Pages in order, up to ``window`` of them fetched ahead by the pool.

    Reading stops at the first page shorter than the page size. How far to read ahead
    follows the newest ``totalCount``, and a full page always asks for the next, so
    computers added during the run are read too.
    """

    def __init__(self, pool: ThreadPoolExecutor, fetch: Callable[[int], Page]) -> None:
        self.pool = pool
        self.fetch = fetch

    def pages(self, page_size: int, window: int) -> Generator[Page, None, None]:
        pending: deque[Future[Page]] = deque()
        next_page, limit = 0, 1
        try:
            while True:
                while len(pending) < window and next_page < limit:
                    # The fetch threads log with the caller's context (task id, inventory).
                    context = contextvars.copy_context()
                    pending.append(self.pool.submit(context.run, self.fetch, next_page))
                    next_page += 1
                if not pending:
                    return
                page = pending.popleft().result()
                yield page
                if page.raw_count < page_size:
                    return
                expected = math.ceil(page.total_count / page_size)
                limit = max(limit, expected, page.number + 2)
        finally:
            for future in pending:
                future.cancel()
            wait(pending)
