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
from pathlib import Path

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


def _dead(pid: int) -> bool:
    """Gone, or a zombie no one has reaped yet (an orphan waits for init)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_a_reader_ends_with_the_sync_process_that_started_it(tmp_path: Path) -> None:
    """A sync's process killed outright (SIGKILL of a Celery pool process) takes its
    reader with it, even while the reader waits on Jamf and writes nothing that would
    fail: here, on a Jamf that accepts the connection and never answers."""
    import pickle
    import socket
    import subprocess
    import sys
    import time

    from jamf.client import JamfClient
    from jamf.reading import ReadRequest, _child_env

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        config = JamfClient(url, client_id="devtrust", client_secret="s").spawn_config()
        assert config is not None
        request = ReadRequest(client=config, query="", page_size=100, target="computers",
                              ignored_usernames=frozenset(), known=(100, 100), window=2,
                              workers=1, log_level=logging.INFO)  # fmt: skip
        (tmp_path / "request").write_bytes(pickle.dumps(request))
        # A stand-in for the sync's process: it starts the reader as ProcessReader does
        # (the same command and environment), sends the request, says the reader's pid.
        stand_in = (
            "import subprocess, sys; from jamf.reading import _child_env\n"
            "child = subprocess.Popen([sys.executable, '-m', 'jamf.reader'],"
            " stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_child_env())\n"
            "child.stdin.write(open(sys.argv[1], 'rb').read()); child.stdin.close()\n"
            "print(child.pid, flush=True); child.wait()"
        )
        parent = subprocess.Popen([sys.executable, "-c", stand_in, str(tmp_path / "request")],
                                  stdout=subprocess.PIPE, text=True, env=_child_env())  # fmt: skip
        assert parent.stdout is not None
        reader = int(parent.stdout.readline())
        silent.accept()  # the reader asks Jamf for a token, and waits for an answer
        assert not _dead(reader)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10  # the reader's own timeout would be 30 s
        while not _dead(reader) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _dead(reader), "the reader outlived the process that started it"

    # And a reader whose named parent is not its own (it died before the reader could
    # ask to die with it) stops at once.
    orphan = subprocess.run([sys.executable, "-m", "jamf.reader"], input=b"",
                            env={**_child_env(), "DEVTRUST_READER_PARENT": "1"},
                            capture_output=True, timeout=60)  # fmt: skip
    assert orphan.returncode == 2
    assert b"the sync that started this reader is gone" in orphan.stderr
