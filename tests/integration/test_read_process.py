"""A large listing read by a child process (``jamf.reading.ProcessReader``), against the
simulator over a socket: what the child's failures become in the parent's run.

That it reads every computer under churn is in ``test_sync_churn`` (the 20,000-computer
run, in both readers); here, a Jamf failure inside the child fails the run with the same
message it would have had in threads, a child killed mid-read fails it too, and a run
that stops early leaves no child behind. None of them deletes anything.
"""

from __future__ import annotations

import logging
import os
import signal

import pytest

from inventory.db import Database
from inventory.services import source_sync as store
from jamf.config import InventorySpec, OnMissing
from jamf.simulator import Fault
from jamf.sync import Kind, Progress, SyncStopped, run_sync
from tests.integration.test_sync_churn import SOURCE, jamf, synced

# The read is the same whatever the database.
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
ENTRY = InventorySpec(page_size=200, on_missing=OnMissing.DELETE, max_delete_share=1.0)
FLEET = 3000  # read in a child at process_min=1000


def _reader_pid(caplog: pytest.LogCaptureFixture) -> int:
    started = [r for r in caplog.records if r.getMessage().startswith("reading ")]
    assert started, "no reader process was started"
    pid = started[-1].args[-1]  # type: ignore[index]
    assert isinstance(pid, int)
    return pid


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@SQLITE_ONLY
def test_a_jamf_failure_in_the_reader_fails_the_run_with_its_words(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "devtrust.jamf")
    with jamf(FLEET, counting=False, latency_ms=1) as j:
        first = run_sync(db, j.client, SOURCE, ENTRY, kind=Kind.FULL, process_min=1000)
        assert first.status == store.SUCCEEDED, first.error
        assert first.details["listings"]["computers"]["reader"] == "process"
        before = synced(db)
        assert len(before) == first.created > 0

        def outage(p: Progress) -> None:
            if p.phase == "fetch" and p.pages_done == 2:
                j.sim.faults.configure(rate=1.0, kinds=[Fault.SERVER_ERROR])

        run = run_sync(
            db, j.client, SOURCE, ENTRY, kind=Kind.FULL, progress=outage, process_min=1000
        )
        assert run.status == store.FAILED
        assert run.error is not None
        assert run.error.startswith("Jamf Pro is unavailable: GET /api/v4/computers-inventory")
        assert "12 attempts" in run.error  # the parent's retry policy, in the child
        # The child's retry warnings reach the parent's log, under the sync's logger.
        retries = [r for r in caplog.records if "retrying in" in r.getMessage()]
        assert retries and all(r.name == "devtrust.jamf" for r in retries)
        assert synced(db) == before  # an incomplete listing deletes nothing
        assert _gone(_reader_pid(caplog))


@SQLITE_ONLY
def test_a_reader_killed_mid_read_fails_the_run_and_deletes_nothing(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "devtrust.jamf.sync")
    with jamf(FLEET, counting=False, latency_ms=1) as j:
        first = run_sync(db, j.client, SOURCE, ENTRY, kind=Kind.FULL, process_min=None)
        assert first.details["listings"]["computers"]["reader"] == "threads"
        before = synced(db)

        def kill(p: Progress) -> None:
            if p.phase == "fetch" and p.pages_done == 1:
                os.kill(_reader_pid(caplog), signal.SIGKILL)

        run = run_sync(db, j.client, SOURCE, ENTRY, kind=Kind.FULL, progress=kill, process_min=1)
        assert run.status == store.FAILED
        assert run.error == "the Jamf reader process was killed by signal 9 mid-read"
        assert synced(db) == before


@SQLITE_ONLY
def test_a_run_that_stops_early_leaves_no_reader_behind(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "devtrust.jamf.sync")
    with jamf(FLEET, counting=False, latency_ms=5) as j:
        pages = 0

        def held() -> None:
            nonlocal pages
            pages += 1
            if pages == 3:
                raise SyncStopped("the sync lock was lost")

        run = run_sync(
            db, j.client, SOURCE, ENTRY, kind=Kind.FULL, still_held=held, process_min=1000
        )
        assert run.status == store.FAILED
        assert run.error is not None and "the sync lock was lost" in run.error
        assert _gone(_reader_pid(caplog))  # killed and reaped, not left reading
        assert 0 < len(synced(db)) < FLEET


def test_a_small_or_partial_listing_stays_in_threads(db: Database) -> None:
    with jamf(600, counting=False) as j:
        run = run_sync(db, j.client, SOURCE, ENTRY, kind=Kind.FULL)  # below PROCESS_READ_MIN
        assert run.details["listings"]["computers"]["reader"] == "threads"
        again = run_sync(db, j.client, SOURCE, ENTRY, kind=Kind.PARTIAL, process_min=1)
        assert again.status == store.SUCCEEDED, again.error
        assert again.details["listings"]["computers"]["reader"] == "threads"
