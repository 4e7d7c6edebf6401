"""Jamf webhooks end to end: the simulator posts them (``--webhook-url``) to a real
``devtrust serve``, which queues each device's sync on Redis for a real worker.

One stack for the module (simulator, serve, the inventory in a SQLite file after a full
sync); the tests that need the worker start it, the others look at the queue it would
read. Redis database 11 carries the queue, the results, the locks and the marks.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import func, select

from inventory.db import Database
from inventory.models import DeviceRow, SyncRunRow
from inventory.services import audit
from inventory.settings import load_settings
from tests.processes import DEVTRUST, Process, free_port, simulator, started, worker
from worker import jobs
from worker.celery import QUEUE

REDIS_URL = os.environ.get("DEVTRUST_TEST_WEBHOOK_REDIS_URL", "redis://127.0.0.1:6379/11")
USER, PASSWORD = "jamf", "webhook-secret"
HEADER, TOKEN = "X-Jamf-Token", "header-secret"
INVENTORY = [{"name": "default", "on_missing": "DELETE", "page_size": 100}]
DEVICES = 120


@dataclass
class Stack:
    jamf: str
    url: str  # the webhook route
    env: dict[str, str]
    db: Database
    queue: redis.Redis
    serve: Process

    def post(
        self,
        body: Any,
        *,
        auth: tuple[str, str] | None = (USER, PASSWORD),
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> httpx.Response:
        content = raw if raw is not None else json.dumps(body).encode()
        return httpx.post(self.url, content=content, auth=auth, headers=headers, timeout=10)

    def queued(self) -> int:
        return int(self.queue.llen(QUEUE))

    def device(self, jamf_id: str, os_type: str = "macos") -> Any:
        with self.db.uow().read() as uow:
            return uow.session.execute(
                select(DeviceRow.id, DeviceRow.asset_tag, DeviceRow.profile_os_version).where(
                    DeviceRow.profile_external_id == jamf_id, DeviceRow.os_type == os_type
                )
            ).one_or_none()

    def runs(self, kind: str) -> int:
        with self.db.uow().read() as uow:
            count = uow.session.scalar(
                select(func.count()).select_from(SyncRunRow).where(SyncRunRow.kind == kind)
            )
            return int(count or 0)

    def devices(self) -> int:
        with self.db.uow().read() as uow:
            return int(uow.session.scalar(select(func.count()).select_from(DeviceRow)) or 0)


def webhook(event: str, jss_id: Any, *, nested: bool = False) -> dict[str, Any]:
    device = {"jssID": jss_id, "serialNumber": "C02TEST"}
    return {
        "webhook": {"id": 7, "name": "devtrust", "webhookEvent": event, "eventTimestamp": 1},
        "event": {"computer": device} if nested else device,
    }


def until(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    """Poll ``check`` until it is truthy; fails naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:.0f} s: {what}", pytrace=False)
        time.sleep(0.05)
    return value


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("webhooks")
    queue = redis.Redis.from_url(REDIS_URL)
    try:
        queue.flushdb()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_URL} ({exc}): run `make services`")
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/webhooks/jamf"
    options = ("--mobile-devices", "20", "--webhook-url", url,
               "--webhook-username", USER, "--webhook-password", PASSWORD)  # fmt: skip
    with simulator(DEVICES, *options) as jamf:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("DEVTRUST_")}
        env = {
            **clean,
            "DEVTRUST_DATA_DIR": str(tmp / "data"),
            "DEVTRUST_DATABASE_URL": f"sqlite:///{tmp / 'devtrust.db'}",
            "DEVTRUST_BROKER_URL": REDIS_URL,
            "DEVTRUST_RESULT_BACKEND": REDIS_URL,
            "DEVTRUST_JAMF_URL": jamf,
            "DEVTRUST_JAMF_CLIENT_ID": "devtrust",
            "DEVTRUST_JAMF_CLIENT_SECRET": "devtrust-secret",
            "DEVTRUST_JAMF_MOBILE_DEVICES": "true",
            "DEVTRUST_JAMF_INVENTORY": json.dumps(INVENTORY),
            "DEVTRUST_JAMF_WEBHOOK_USERNAME": USER,
            "DEVTRUST_JAMF_WEBHOOK_PASSWORD": PASSWORD,
            "DEVTRUST_JAMF_WEBHOOK_HEADER": HEADER,
            "DEVTRUST_JAMF_WEBHOOK_TOKEN": TOKEN,
        }
        settings = load_settings(
            data_dir=tmp / "data", database_url=env["DEVTRUST_DATABASE_URL"],
            broker_url=REDIS_URL, jamf_url=jamf, jamf_client_id="devtrust",
            jamf_client_secret="devtrust-secret", jamf_mobile_devices=True,
            jamf_inventory=INVENTORY,
        )  # fmt: skip
        assert jobs.sync_inventory(settings, kind="full")["status"] == "succeeded"
        db = Database.connect(env["DEVTRUST_DATABASE_URL"])
        with started([DEVTRUST, "serve", "--port", str(port)], env, "serve") as serve:
            serve.wait_for("Uvicorn running", timeout=30)
            try:
                yield Stack(jamf, url, env, db, queue, serve)
            finally:
                db.close()
                queue.flushdb()
                queue.close()


def sim(stack: Stack, method: str, path: str, body: Any = None) -> Any:
    response = httpx.request(method, f"{stack.jamf}/_sim/{path}", json=body, timeout=10)
    response.raise_for_status()
    return response.json() if response.content else None


# -- refused and ignored, with no worker: nothing is queued -----------------------------


@pytest.mark.parametrize(
    ("auth", "headers", "message"),
    [
        (None, None, "no webhook credential: Jamf Pro must send Basic auth or the X-Jamf-Token"),
        ((USER, "wrong"), None, "the webhook credential is not valid"),
        (("someone", PASSWORD), None, "the webhook credential is not valid"),
        (None, {HEADER: "wrong"}, "the webhook credential is not valid"),
        (None, {"Authorization": "Bearer " + PASSWORD}, "the webhook credential is not valid"),
    ],
)
def test_a_missing_or_wrong_credential_is_401_and_queues_nothing(
    stack: Stack, auth: tuple[str, str] | None, headers: dict[str, str] | None, message: str
) -> None:
    before, runs = stack.queued(), stack.runs("device")
    response = stack.post(webhook("ComputerInventoryCompleted", 3, nested=True), auth=auth,
                          headers=headers)  # fmt: skip
    assert response.status_code == 401
    assert response.json()["error"].startswith(message)
    assert response.headers["www-authenticate"].startswith("Basic")
    assert (stack.queued(), stack.runs("device")) == (before, runs)
    assert not stack.queue.keys("devtrust:webhook:pending:*")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "request body is not valid JSON"),
        (b"[]", 'request body must be a Jamf webhook: {"webhook": {...}, "event": {...}}'),
        (b'{"event": {}}', "webhook: missing or not an object"),
        (b'{"webhook": {"id": 1}, "event": {}}', "webhook.webhookEvent: missing or not a string"),
        (b'{"webhook": {"webhookEvent": "ComputerAdded"}}', "event: missing or not an object"),
        (
            b'{"webhook": {"webhookEvent": "ComputerAdded"}, "event": {"serialNumber": "X"}}',
            "event.jssID: missing: a ComputerAdded webhook names its device by jssID",
        ),
        (
            b'{"webhook": {"webhookEvent": "ComputerCheckIn"}, "event": {"computer": '
            b'{"jssID": -4}}}',
            "event.computer.jssID: must be a positive integer, not '-4'",
        ),
        (
            b'{"webhook": {"webhookEvent": "ComputerAdded"}, "event": {"jssID": "12"}}',
            """event.jssID: must be a positive integer, not '"12"'""",
        ),
    ],
)
def test_a_malformed_body_is_400_in_one_line_and_queues_nothing(
    stack: Stack, raw: bytes, message: str
) -> None:
    before = stack.queued()
    response = stack.post(None, raw=raw)
    assert (response.status_code, response.json()) == (400, {"error": message})
    assert stack.queued() == before


def test_an_event_that_changes_no_device_is_accepted_and_ignored(stack: Stack) -> None:
    before = stack.queued()
    body = {"webhook": {"webhookEvent": "RestAPIOperation"}, "event": {"operationSuccessful": 1}}
    response = stack.post(body, auth=None, headers={HEADER: TOKEN})  # header auth works too
    assert response.status_code == 202
    assert response.json()["status"] == "ignored"
    assert stack.queued() == before
    assert "Jamf webhook RestAPIOperation ignored" in stack.serve.output()


def test_a_burst_for_one_device_queues_one_sync(stack: Stack) -> None:
    before = stack.queued()
    answers = [
        stack.post(webhook(event, 5, nested=nested)).json()["status"]
        for event, nested in [("ComputerInventoryCompleted", True), ("ComputerCheckIn", True),
                              ("ComputerInventoryCompleted", True), ("ComputerAdded", False)]
    ]  # fmt: skip
    assert answers == ["queued", "coalesced", "coalesced", "coalesced"]
    assert stack.queued() == before + 1
    assert stack.post(webhook("ComputerAdded", 6)).json()["status"] == "queued"  # another
    assert stack.queued() == before + 2


# -- with the worker ---------------------------------------------------------------------


def test_changes_made_in_jamf_reach_the_inventory_within_seconds_with_no_partial_sync(
    stack: Stack,
) -> None:
    partial, full = stack.runs("partial"), stack.runs("full")
    with worker(stack.env, "webhooks") as w:
        # An OS update: the simulator posts ComputerInventoryCompleted.
        target = next(d for d in sim(stack, "GET", "fleet") if d["managed"])["id"]
        before = stack.device(target)
        updated = sim(stack, "PATCH", f"devices/{target}")
        version = updated["operatingSystem"]["version"]
        assert before.profile_os_version != version
        until(lambda: stack.device(target).profile_os_version == version,
              f"the inventory shows computer {target} on macOS {version}")  # fmt: skip
        assert stack.device(target).id == before.id  # the same device, updated

        # A computer enrolled now: ComputerAdded.
        added = sim(stack, "POST", "devices", {"general": {"remoteManagement": {"managed": True}}})
        row = until(lambda: stack.device(added["id"]), f"computer {added['id']} is synced")
        assert row.asset_tag == added["hardware"]["serialNumber"]

        # An unenrolled iPhone (gone from Jamf): on_missing DELETE removes it.
        phone = next(d for d in sim(stack, "GET", "fleet?kind=mobile-devices") if d["managed"])
        assert stack.device(phone["id"], "ios") is not None
        sim(stack, "DELETE", f"mobile-devices/{phone['id']}")
        until(lambda: stack.device(phone["id"], "ios") is None,
              f"mobile device {phone['id']} is deleted")  # fmt: skip

        # A computer deleted in Jamf (which sends no webhook for it), then named by one.
        gone = [d for d in sim(stack, "GET", "fleet") if d["managed"]][1]["id"]
        assert gone != target
        assert stack.device(gone) is not None
        sim(stack, "DELETE", f"devices/{gone}")
        assert stack.post(webhook("ComputerCheckIn", int(gone), nested=True)).status_code == 202
        until(lambda: stack.device(gone) is None, f"computer {gone} is deleted")
        # The row is gone before its task has recorded its run: stop the worker only once
        # it holds no task (acks are late: a running task's message is still unacked),
        # or the stop's SIGTERM to its pool kills one mid-way.
        until(lambda: stack.queued() == 0 and stack.queue.hlen("unacked") == 0,
              "the worker finished every task it was sent")  # fmt: skip
    output = w.output()
    at = output.find("Traceback")
    assert at < 0, f"the worker printed a traceback:\n{output[max(0, at - 800) : at + 3000]}"
    assert (stack.runs("partial"), stack.runs("full")) == (partial, full)
    assert stack.runs("device") >= 4  # each change is a run of its own, audited
    synced = audit.list_events(stack.db.uow(), type=audit.JAMF_SYNC)
    assert any(e.message.startswith("device sync of jamf/default succeeded") for e in synced)
    stats = httpx.get(f"{stack.jamf}/_sim/stats", timeout=10).json()["webhooks"]
    assert stats["failed"] == stats["dropped"] == 0 and stats["sent"] >= 3
    deleted = audit.list_events(stack.db.uow(), type=audit.DEVICE_DELETE)
    assert len(deleted) == 2


# -- the job alone, with no broker: what a device run does to the scheduled runs ---------


def test_the_device_job_follows_the_source_rules_and_keeps_out_of_watermarks_and_alert(
    tmp_path: Path,
) -> None:
    from inventory.services import source_sync as store
    from jamf.simulator import SimulatorConfig, running_simulator

    inventory = [{"name": "default", "on_missing": "NOOP"}]
    with running_simulator(SimulatorConfig(devices=30)) as jamf:
        settings = load_settings(
            data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'd.db'}",
            jamf_url=jamf, jamf_client_id="devtrust", jamf_client_secret="devtrust-secret",
            jamf_inventory=inventory,
        )  # fmt: skip
        assert jobs.sync_inventory(settings, kind="partial")["status"] == "succeeded"
        db = Database.connect(settings.database_url_value)
        try:
            marks = store.last_watermarks(db.uow(), "default")
            target = next(d for d in httpx.get(f"{jamf}/_sim/fleet").json() if d["managed"])["id"]
            # Nothing changed in Jamf: no run, nothing written.
            done = jobs.sync_device(settings, kind="computer", jamf_id=target)
            assert done["result"] == "unchanged" and done["run_id"] is None
            httpx.patch(f"{jamf}/_sim/devices/{target}").raise_for_status()
            assert jobs.sync_device(settings, kind="computer", jamf_id=target)["result"] == (
                "updated"
            )
            # A new computer outside the entry's filter (unmanaged) is not added.
            add = f"{jamf}/_sim/devices"
            body = {"general": {"remoteManagement": {"managed": False}}}
            unmanaged = httpx.post(add, json=body).raise_for_status().json()["id"]
            ignored = jobs.sync_device(settings, kind="computer", jamf_id=unmanaged)
            assert ignored["result"] == "ignored"
            # A serial on a second live Jamf record is skipped; once the first is gone
            # (a wiped and re-enrolled Mac), the device follows the new id.
            first = httpx.get(f"{jamf}/_sim/devices/{target}").json()
            serial = {"hardware": {"serialNumber": first["hardware"]["serialNumber"]}}
            body = {"general": {"remoteManagement": {"managed": True}}, **serial}
            twin = httpx.post(add, json=body).raise_for_status().json()["id"]
            skipped = jobs.sync_device(settings, kind="computer", jamf_id=twin)
            assert (
                skipped["result"] == "skipped" and f"also on Jamf id {target}" in skipped["reason"]
            )
            httpx.delete(f"{jamf}/_sim/devices/{target}").raise_for_status()
            moved = jobs.sync_device(settings, kind="computer", jamf_id=twin)
            assert moved["result"] == "updated"
            with db.uow().read() as uow:
                held = uow.session.scalars(
                    select(DeviceRow.profile_external_id).where(
                        DeviceRow.asset_tag == first["hardware"]["serialNumber"]
                    )
                ).all()
            assert held == [twin]
            # Gone from Jamf with on_missing NOOP: kept, and no run.
            target = twin
            httpx.delete(f"{jamf}/_sim/devices/{target}").raise_for_status()
            kept = jobs.sync_device(settings, kind="computer", jamf_id=target)
            assert (kept["result"], kept["run_id"]) == ("kept", None)
            # Two device runs that fail (Jamf refuses the client) raise no alert.
            refused = settings.model_copy(update={"jamf_client_id": "nobody"})
            for _ in range(2):
                failed = jobs.sync_device(refused, kind="computer", jamf_id="2")
                assert failed["status"] == "failed" and "nobody" not in failed["reason"]
            every = store.recent_runs(db.uow(), "default", kinds=None)
            assert {r.kind for r in every} == {"device", "partial"}
            assert [r.status for r in every[:2]] == ["failed", "failed"]
            assert not store.alert(store.recent_runs(db.uow(), "default"))
            assert store.last_watermarks(db.uow(), "default") == marks
        finally:
            db.close()


def test_a_sync_that_has_started_lets_exactly_one_more_be_queued(tmp_path: Path) -> None:
    from jamf.device_sync import FileCoalescer, RedisCoalescer

    for marks in (RedisCoalescer(REDIS_URL), FileCoalescer(tmp_path / "pending")):
        try:
            key = "jamf:computer:41"
            assert marks.claim(key)  # the first webhook queues the sync
            assert not marks.claim(key)  # while it is queued, the next ones do not
            marks.release(key)  # the worker starts it
            assert marks.claim(key)  # one arriving now queues exactly one more
            assert not marks.claim(key)
            assert marks.claim("jamf:computer:42")  # another device is its own
        finally:
            marks.release("jamf:computer:41")
            marks.release("jamf:computer:42")
            marks.close()
    stale = FileCoalescer(tmp_path / "stale", ttl=0.0)  # a mark whose sync was lost
    assert stale.claim("jamf:computer:7") and stale.claim("jamf:computer:7")


def test_two_syncs_of_one_device_run_one_after_the_other(tmp_path: Path) -> None:
    """Two webhooks close together queue two syncs of one device, which two worker
    processes may run at once: the second waits for the first's lock, so the one that
    read Jamf last writes last. Its pending mark is cleared before it waits, so a change
    meanwhile still queues a sync."""
    import threading

    from jamf.device_sync import coalescer_for
    from jamf.simulator import SimulatorConfig, running_simulator
    from worker.locks import locks_for

    with running_simulator(SimulatorConfig(devices=10)) as jamf:
        settings = load_settings(
            data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'd.db'}",
            jamf_url=jamf, jamf_client_id="devtrust", jamf_client_secret="devtrust-secret",
        )  # fmt: skip
        assert jobs.sync_inventory(settings, kind="partial")["status"] == "succeeded"
        target = next(d for d in httpx.get(f"{jamf}/_sim/fleet").json() if d["managed"])["id"]
        key = f"jamf:computer:{target}"
        marks = coalescer_for(None, settings.data_dir)
        locks = locks_for(None, settings.data_dir)
        first = locks.acquire(f"jamf-device:{key}", 30, owner="the first sync")
        assert first is not None
        httpx.patch(f"{jamf}/_sim/devices/{target}").raise_for_status()
        assert marks.claim(key)  # the webhook that queued the second sync
        done: dict[str, Any] = {}
        second = threading.Thread(
            target=lambda: done.update(jobs.sync_device(settings, kind="computer",
                                                        jamf_id=str(target))),
        )  # fmt: skip
        second.start()
        try:
            until(lambda: marks.claim(key), "the waiting sync never cleared its mark")
            time.sleep(0.5)
            assert second.is_alive() and not done  # waiting for the first, nothing written
        finally:
            first.release()
        second.join(30)
        assert done["result"] == "updated", done
        marks.release(key)
        marks.close()
        locks.close()
