"""Reading a Jamf listing: keyset pages over id ranges, fetched side by side and mapped.

This is the sync's read side, with no database in it, so that a child process can run
it (``python -m jamf.reader``) without importing the inventory. A large listing is read
there (``ProcessReader``): parsing Jamf's JSON and mapping each record is most of a full
sync's CPU, and in the sync's own process it takes turns on one GIL with the writes.
In a child it runs on another core, and the sync unpickles mapped pages (a tenth of the
cost of reading them) and writes. A small listing, or a client the child cannot rebuild
(a test's transport), is read by threads in the sync's process (``PageReader``).
"""

from __future__ import annotations

import contextvars
import gc
import logging
import math
import os
import pickle
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any, Protocol

from inventory.domain import OSType
from inventory.errors import DevtrustError
from jamf.client import InventoryPage, JamfClient
from jamf.mapping import MappedDevice, Skipped, map_computer, map_mobile_device

if TYPE_CHECKING:
    from jamf.config import InventorySpec

log = logging.getLogger("devtrust.jamf.sync")

# Pages read ahead per fetch thread: the threads go on reading while the writer waits
# for the database. Memory stays bounded: a mapped page of 500 is about 1 MB.
PREFETCH = 2
# A whole listing (a full sync, a first partial one) of at least this many records is
# read in a child process: below it, starting the child (about 0.25 s of CPU) costs more
# than sharing the GIL saves.
PROCESS_READ_MIN = 10_000


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
_BY_NAME = {t.name: t for t in (COMPUTERS, MOBILE_DEVICES)}


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

    def extent(self) -> tuple[int, int]:
        """(Jamf's total for the listing, its highest id), from one request."""
        first = self.top()
        return first.total_count, max((self.ident(r) for r in first.results), default=0)

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
    process_min: int | None = PROCESS_READ_MIN,
) -> Generator[Page, None, None]:
    """Every page of ``query``, fetched ahead, as they arrive; what a full sync reads,
    without writing, read as it reads them (``open_reader``)."""
    with bulk_gc(), ThreadPoolExecutor(concurrency, thread_name_prefix="jamf-fetch") as pool:
        fetcher = page_fetcher(client, query, page_size, target, ignored_usernames)
        reader = open_reader(pool, fetcher, whole=True, process_min=process_min)
        yield from reader.pages(PREFETCH * concurrency, concurrency)


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

    kind = "threads"

    def __init__(
        self,
        pool: ThreadPoolExecutor,
        fetcher: PageFetcher,
        known: tuple[int, int] | None = None,
    ) -> None:
        self.pool = pool
        self.fetcher = fetcher
        # (Jamf's total, the highest id), when the caller asked for them already.
        self.known = known
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
        if self.known is not None:
            with self._cond:
                self._probed(*self.known)
        else:
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
            total, top = self.fetcher.extent()
        except BaseException as exc:
            self._failed(exc)
            return
        with self._cond:
            self._in_flight -= 1
            self._probed(total, top)
            self._pump()
            self._cond.notify_all()

    def _probed(self, total: int, top: int) -> None:
        self.reported_total, self._top = total, top
        self._split(total, top)
        self._splitting = False

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


# -- which reader, and the one in a child process ------------------------------------


class Reader(Protocol):
    """What a sync reads a listing with: its pages, then how many were read of how many
    Jamf reported at the start."""

    kind: str  # "threads" or "process", kept on the run's details
    reported_total: int
    read_count: int

    def pages(self, window: int, workers: int) -> Generator[Page, None, None]: ...


def open_reader(
    pool: ThreadPoolExecutor,
    fetcher: PageFetcher,
    *,
    whole: bool,
    process_min: int | None = PROCESS_READ_MIN,
) -> Reader:
    """The reader for one listing.

    A whole listing (every record the filter selects, not only recent reports) is sized
    first, by the one request that gives its total and its highest id, which the reader
    then splits at once. At ``process_min`` records or more (None: never), and when the
    client can be rebuilt in a child (``JamfClient.spawn_config``), a ``ProcessReader``
    reads it; otherwise, and for every partial listing, threads of ``pool`` do."""
    if not whole or process_min is None:
        return PageReader(pool, fetcher)
    config = fetcher.client.spawn_config()
    if config is None:
        return PageReader(pool, fetcher)
    known = fetcher.extent()
    if known[0] < process_min:
        return PageReader(pool, fetcher, known)
    return ProcessReader(fetcher, known)


@dataclass(frozen=True)
class ReadRequest:
    """What the child needs to read a listing as ``PageReader`` would in the parent."""

    client: dict[str, Any]  # JamfClient's keyword arguments (spawn_config)
    query: str
    page_size: int
    target: str  # Target.name
    ignored_usernames: frozenset[str]
    known: tuple[int, int]
    window: int
    workers: int
    log_level: int


class ReadFailed(DevtrustError):
    """A Jamf or configuration failure in the reader process, with its own words, or the
    process gone without one."""


class ReaderCrashed(RuntimeError):
    """The reader process failed in a way that is not a Jamf failure (a bug)."""


class ProcessReader:
    """A listing read by ``python -m jamf.reader``: the same ``PageReader`` with its own
    client (rebuilt from the parent's settings, with the API version the parent probed),
    its own fetch threads, and the range split the parent's sizing request gave.

    The child writes pickled messages on its stdout: each mapped page as it is read,
    its log records (re-logged here, under the sync's context), then either the counts
    or its error. A Jamf error is raised here as it was there when it pickles, or as a
    ``ReadFailed`` with the same message, so the run records what it would have. The
    pipe holds the child back: it reads at most ``window`` pages ahead of the writes.
    Closing the generator (a failed write, a lost lock) kills the child."""

    kind = "process"

    def __init__(self, fetcher: PageFetcher, known: tuple[int, int]) -> None:
        self.fetcher = fetcher
        self.known = known
        self.reported_total = known[0]
        self.read_count = 0

    def pages(self, window: int, workers: int) -> Generator[Page, None, None]:
        fetcher = self.fetcher
        config = fetcher.client.spawn_config()
        if config is None:
            raise ValueError("this client cannot be rebuilt in a child process")
        request = ReadRequest(
            client=config,
            query=fetcher.query,
            page_size=fetcher.page_size,
            target=fetcher.target.name,
            ignored_usernames=fetcher.ignored_usernames,
            known=self.known,
            window=window,
            workers=workers,
            log_level=logging.getLogger("devtrust").getEffectiveLevel(),
        )
        with tempfile.TemporaryFile() as errors:
            child = subprocess.Popen(
                [sys.executable, "-m", "jamf.reader"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                env=_child_env(),
            )
            assert child.stdin is not None and child.stdout is not None
            log.debug("reading %d %s in process %d", self.known[0], fetcher.target.name, child.pid)
            try:
                with child.stdin:
                    pickle.dump(request, child.stdin, pickle.HIGHEST_PROTOCOL)
                yield from self._receive(child, child.stdout, errors)
            finally:
                if child.poll() is None:
                    child.kill()
                child.wait()
                child.stdout.close()

    def _receive(
        self, child: subprocess.Popen[bytes], stream: IO[bytes], errors: IO[bytes]
    ) -> Generator[Page, None, None]:
        while True:
            try:
                message = pickle.load(stream)  # noqa: S301 - our own child's pipe
            except (EOFError, pickle.UnpicklingError):  # gone, maybe in the middle of a page
                raise _died(child, errors) from None
            kind = message[0]
            if kind == "page":
                yield message[1]
            elif kind == "log":
                _, level, name, text = message
                logging.getLogger(name).log(level, "%s", text)
            elif kind == "done":
                _, self.read_count, self.reported_total = message
                return
            elif kind == "error":
                raise _rebuilt(*message[1:])
            else:  # pragma: no cover - the child is this module's own
                raise ReaderCrashed(f"the Jamf reader sent an unknown message {kind!r}")


#: The reader's parent, whose death ends the reader (``jamf.reader.die_with_parent``).
PARENT_ENV = "DEVTRUST_READER_PARENT"


def _child_env() -> dict[str, str]:
    """The parent's environment, with this checkout first on the path (the child must
    import this very code, installed or not)."""
    env = dict(os.environ)
    env[PARENT_ENV] = str(os.getpid())  # the reader ends with this process (jamf.reader)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = here + (os.pathsep + path if path else "")
    return env


def _died(child: subprocess.Popen[bytes], errors: IO[bytes]) -> ReadFailed:
    """The child's end without a last word: killed (the OOM killer, an operator) or dead
    of something it could not even report; the run fails, and the next one reads again."""
    code = child.wait()
    errors.seek(0)
    lines = [line for line in errors.read().decode(errors="replace").splitlines() if line]
    last = f": {lines[-1].strip()[:300]}" if lines else ""
    how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
    return ReadFailed(f"the Jamf reader process {how} mid-read{last}")


def _rebuilt(data: bytes | None, name: str, text: str, devtrust: bool) -> BaseException:
    if data is not None:
        return pickle.loads(data)  # type: ignore[no-any-return]  # noqa: S301 - our child's
    if devtrust:
        return ReadFailed(text)
    return ReaderCrashed(f"{name}: {text}")


def _error_payload(exc: BaseException) -> tuple[str, bytes | None, str, str, bool]:
    """``exc`` as the parent can raise it again: pickled when it round-trips with the
    same message, else its type's name and its message."""
    text = str(exc)
    data: bytes | None
    try:
        data = pickle.dumps(exc, pickle.HIGHEST_PROTOCOL)
        if str(pickle.loads(data)) != text:  # noqa: S301 - just made
            data = None
    except Exception:
        data = None
    return ("error", data, type(exc).__name__, text, isinstance(exc, DevtrustError))


class _PipeHandler(logging.Handler):
    def __init__(self, send: Callable[[tuple[Any, ...]], None]) -> None:
        super().__init__()
        self.send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.send(("log", record.levelno, record.name, record.getMessage()))
        except Exception:
            self.handleError(record)


def serve(request: ReadRequest, out: IO[bytes]) -> None:
    """The child's side: read the listing, send each page, then the counts or the error."""
    lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        with lock:
            out.write(data)
            out.flush()

    logger = logging.getLogger("devtrust")
    logger.setLevel(request.log_level)
    logger.addHandler(_PipeHandler(send))
    logger.propagate = False
    try:
        with (
            JamfClient(**request.client) as client,
            bulk_gc(),
            ThreadPoolExecutor(request.workers, thread_name_prefix="jamf-fetch") as pool,
        ):
            target = _BY_NAME[request.target]
            fetcher = PageFetcher(
                client, request.query, request.page_size, target, request.ignored_usernames
            )
            reader = PageReader(pool, fetcher, request.known)
            for page in reader.pages(request.window, request.workers):
                send(("page", page))
        # After the client's close, so its token is given back before the parent goes on.
        send(("done", reader.read_count, reader.reported_total))
    except BrokenPipeError:
        raise
    except BaseException as exc:
        send(_error_payload(exc))
