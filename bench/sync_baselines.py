"""The baseline for ``bench.sync``'s churn-safe read: the offset paging the sync used before.

Until keyset reads, a sync read ``page=0, 1, 2 ...`` sorted by id, up to ``window`` pages
fetched ahead, and stopped at the first short page. That read misses live computers
when Jamf deletes records already read (every later page shifts), so the sync no longer
has it; it is kept here only to be timed against the keyset read on the same fleet, in
the same run: the keyset read must cost at most 1.1x what this one costs.

``offset_reads()`` makes ``jamf.sync.run_sync`` read this way for the duration (in the
bench's own child process, nowhere else).
"""

from __future__ import annotations

import contextvars
import math
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any

from jamf.client import JamfClient
from jamf.sync import COMPUTERS, Page, PageFetcher, Target, _Sync


def offset_fetcher(
    client: JamfClient,
    query: str,
    page_size: int,
    target: Target = COMPUTERS,
    ignored_usernames: frozenset[str] = frozenset(),
) -> Callable[[int], Page]:
    """Fetch and map offset page ``n`` of ``query``, sorted by id (in a pool thread)."""
    mapper = PageFetcher(client, query, page_size, target, ignored_usernames)
    sort = f"{target.id_field}:asc"

    def fetch(number: int) -> Page:
        if target is COMPUTERS:
            answer = client.computers_page(
                page=number, page_size=page_size, filter=query or None, sort=sort
            )
        else:
            answer = client.mobile_devices_page(
                page=number, page_size=page_size, filter=query or None, sort=sort
            )
        return mapper.page(number, answer.total_count, answer.results)

    return fetch


class OffsetPageReader:
    """Pages in order, up to ``window`` of them fetched ahead; stops at the first page
    shorter than the page size (the old ``jamf.sync.PageReader``, unchanged)."""

    def __init__(self, pool: ThreadPoolExecutor, fetch: Callable[[int], Page]) -> None:
        self.pool = pool
        self.fetch = fetch

    def pages(self, page_size: int, window: int) -> Generator[Page, None, None]:
        pending: deque[Future[Page]] = deque()
        next_page, limit = 0, 1
        try:
            while True:
                while len(pending) < window and next_page < limit:
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


def fetch_offset_pages(
    client: JamfClient, query: str, *, page_size: int, concurrency: int = 4
) -> Iterator[Page]:
    """Every offset page of ``query``: the old ``fetch_pages``."""
    with ThreadPoolExecutor(concurrency, thread_name_prefix="jamf-fetch") as pool:
        fetch = offset_fetcher(client, query, page_size)
        yield from OffsetPageReader(pool, fetch).pages(page_size, 2 * concurrency)


def _offset_pages(
    self: _Sync, target: Target, query: str, whole: bool = False
) -> Generator[Page, None, None]:
    fetch = offset_fetcher(self.client, query, self.spec.page_size, target, self.ignored)
    yield from OffsetPageReader(self.pool, fetch).pages(self.spec.page_size, self.window)


@contextmanager
def offset_reads() -> Iterator[None]:
    """``run_sync`` reads with offset pages inside the block."""
    keyset: Any = _Sync._pages
    _Sync._pages = _offset_pages  # type: ignore[method-assign]
    try:
        yield
    finally:
        _Sync._pages = keyset  # type: ignore[method-assign]
