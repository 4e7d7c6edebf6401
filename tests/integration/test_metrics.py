"""``GET /metrics`` on a served app over a real socket, on both databases: the sync figures
come from the run records, requests are counted under their route's template (never a
client's path), verdicts by outcome, and the queue's depth from a real Redis broker."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from ceremony.autoenroll import AutoEnrollment
from ceremony.limits import MAX_HEADERS
from ceremony.metrics import Metrics, QueueCollector, SyncCollector, celery_queue_depth
from ceremony.ratelimit import LocalRateLimiter
from ceremony.service import create_app
from inventory.db import Database
from inventory.domain import Role
from inventory.preference import DeviceTrust
from inventory.services import preference, users
from inventory.services import source_sync as store
from inventory.settings import Settings, load_settings
from jamf.config import InventorySpec
from tests.ceremony import PendingQueue, serving
from tests.processes import RedisServer
from worker.celery import QUEUE
from worker.celery import create_app as create_celery

ROOT = Path(__file__).resolve().parents[2]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: httpx.Client) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[str]:
    """A private Redis for the queue's depth: the machine's is shared with other tests."""
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory)
    server.start()
    try:
        yield f"{server.url}/0"
    finally:
        server.stop()


def _record(db: Database, kind: str, status: str, **counts: int) -> None:
    run = store.start_run(db.uow(), source="jamf", inventory="default", kind=kind)
    if counts:
        store.add_counts(db.uow(), run, **counts)
    store.finish_run(db.uow(), run, status=status, actor="sync", error=None)


def test_metrics_say_what_the_runs_requests_verdicts_and_queue_are(
    db: Database, broker: str, tmp_path: Path
) -> None:
    _record(db, "full", store.SUCCEEDED, fetched=500, created=480, skipped=20)
    _record(db, "partial", store.FAILED)
    _record(db, "partial", store.FAILED)
    preference.update_preference(db.uow(), DeviceTrust(auto_enroll=True), actor="admin")
    _, credential = users.add_user(db.uow(), "alice", (Role.ACCESS,), actor="admin")

    celery = create_celery(load_settings(data_dir=tmp_path, broker_url=broker))
    for n in range(3):  # no worker: they wait on the broker
        celery.send_task("devtrust.noop", kwargs={"echo": n}, queue=QUEUE)
    metrics = Metrics()
    inventory = InventorySpec(sync_period_full=timedelta(hours=24))
    metrics.registry.register(SyncCollector(db, "jamf", (inventory,)))
    metrics.registry.register(QueueCollector(lambda: celery_queue_depth(celery, QUEUE)))
    limiter = LocalRateLimiter(10, timedelta(hours=1), "auto-enrollment attempts")
    auto = AutoEnrollment(db, PendingQueue(), limiter, 0)
    app = create_app(Settings(), {}, auto_enrollment=auto, metrics=metrics)
    auth = {"Authorization": f"Bearer {credential}"}
    collected = {"serial_number": "C02XL0GJJGH5", "os_type": "macos"}
    with serving(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/no/such/path-4f1c9a").status_code == 404
        assert client.post("/healthz").status_code == 405  # the route's, not its method
        crowded = {f"x-h{n}": "1" for n in range(MAX_HEADERS + 1)}
        assert client.get("/healthz", headers=crowded).status_code == 431  # before the router
        assert client.post("/v1/auto-enroll", json={"collected": collected}).status_code == 401
        pending = client.post("/v1/auto-enroll", json={"collected": collected}, headers=auth)
        assert pending.status_code == 202
        bad = client.post("/v1/auto-enroll", json={"collected": {"os_type": "plan9"}}, headers=auth)
        assert bad.status_code == 400
        samples = scrape(client)
    try:
        where = {"source": "jamf", "inventory": "default"}
        full, partial = {**where, "kind": "full"}, {**where, "kind": "partial"}
        assert value(samples, "devtrust_sync_last_run_succeeded", **full) == 1
        assert value(samples, "devtrust_sync_last_run_succeeded", **partial) == 0
        assert value(samples, "devtrust_sync_consecutive_failures", **full) == 0
        assert value(samples, "devtrust_sync_consecutive_failures", **partial) == 2
        assert value(samples, "devtrust_sync_alert", **where) == 1
        assert value(samples, "devtrust_sync_period_seconds", **full) == 24 * 3600
        assert value(samples, "devtrust_sync_last_run_records", **full, count="created") == 480
        assert value(samples, "devtrust_sync_last_run_records", **full, count="skipped") == 20
        [last_full] = store.recent_runs(db.uow(), "default", kinds=("full",))
        assert last_full.end_time is not None
        success = value(samples, "devtrust_sync_last_success_timestamp_seconds", **full)
        assert success == pytest.approx(last_full.end_time.timestamp())
        # A kind that never succeeded has no last success at all (an alert's "absent").
        assert ("devtrust_sync_last_success_timestamp_seconds",
                tuple(sorted(partial.items()))) not in samples  # fmt: skip
        # Requests under their templates; an unknown path under "other", never its own.
        assert value(samples, "devtrust_http_requests_total", route="/healthz", status="200") == 1
        assert value(samples, "devtrust_http_requests_total", route="other", status="404") == 1
        assert value(samples, "devtrust_http_requests_total", route="/healthz", status="405") == 1
        assert value(samples, "devtrust_http_requests_total", route="/healthz", status="431") == 1
        enroll = {"route": "/v1/auto-enroll"}
        assert value(samples, "devtrust_http_requests_total", **enroll, status="401") == 1
        assert value(samples, "devtrust_http_requests_total", **enroll, status="202") == 1
        assert value(samples, "devtrust_http_requests_total", **enroll, status="400") == 1
        assert not any("path-4f1c9a" in str(labels) for _, labels in samples)
        assert value(samples, "devtrust_http_request_duration_seconds_count", **enroll) == 3
        # Verdicts: the pending check; no credential is no verdict on a device.
        assert value(samples, "devtrust_auto_enroll_verdicts_total", outcome="pending") == 1
        assert ("devtrust_auto_enroll_verdicts_total", (("outcome", "refused"),)) not in samples
        assert value(samples, "devtrust_queue_messages") == 3
    finally:
        celery.close()


def test_the_alert_rules_use_only_metrics_the_service_exports() -> None:
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus-alerts.yml").read_text())
    exported = {
        "devtrust_sync_last_run_succeeded", "devtrust_sync_consecutive_failures",
        "devtrust_sync_last_success_timestamp_seconds", "devtrust_sync_period_seconds",
        "devtrust_sync_alert", "devtrust_http_requests_total", "devtrust_queue_messages",
        "devtrust_sync_running", "devtrust_sync_last_run_duration_seconds",
    }  # fmt: skip
    alerts = {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}
    assert set(alerts) == {"DevtrustSyncFailedTwice", "DevtrustNoRecentFullSync",
                           "DevtrustServer5xx"}  # fmt: skip
    for name, rule in alerts.items():
        used = {word for word in _words(rule["expr"]) if word.startswith("devtrust_")}
        assert used and used <= exported, (name, used - exported)
        assert rule["labels"]["severity"] and rule["annotations"]["summary"], name


def _words(expr: str) -> list[str]:
    import re

    return re.findall(r"[a-z_][a-z0-9_]*", expr)
