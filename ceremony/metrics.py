"""``GET /metrics``: what an operator alerts on, in Prometheus' text format.

- Syncs, per inventory and kind (``full``, ``partial``), read from the database's run
  records at each scrape, so they are right whichever worker ran the sync and survive
  restarts: the last finished run's status, duration and counts, the time of the last
  success, the failures since it, and the configured period (for "no successful full
  sync in two periods"). ``devtrust_sync_alert`` is 1 when the last two runs failed,
  the rule ``jamf status`` applies.
- Requests to this service, by route and status, with a latency histogram. The route is
  the route's template (``/v1/auto-enroll/{check_id}``), never the path a client sent:
  an unknown path counts as ``other``, so no client can grow the number of series.
- Auto-enrollment verdicts, by outcome (``token``, ``refused``, ``pending``).
- The queue's depth: messages waiting on the broker.

Alerting rules that use them are in ``deploy/prometheus-alerts.yml``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inventory.db import Database
from inventory.domain import SyncRun
from inventory.services import source_sync as store
from jamf.config import InventorySpec

log = logging.getLogger("devtrust.metrics")

KINDS = ("full", "partial")
COUNTS = ("fetched", "created", "updated", "unchanged", "deleted", "skipped")
OTHER_ROUTE = "other"
# Enough runs to find the last success after a long run of failures, not the whole table.
RUNS_LOOKED_AT = 200


class SyncCollector(Collector):
    """The sync figures, read from the run records at each scrape."""

    def __init__(self, db: Database, source: str, inventories: tuple[InventorySpec, ...]) -> None:
        self.db = db
        self.source = source
        self.inventories = inventories

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["source", "inventory", "kind"]
        gauges = {
            "status": GaugeMetricFamily(
                "devtrust_sync_last_run_succeeded",
                "1 when the last finished run of this kind succeeded, 0 when it failed",
                labels=labels,
            ),
            "duration": GaugeMetricFamily(
                "devtrust_sync_last_run_duration_seconds",
                "How long the last finished run of this kind took",
                labels=labels,
            ),
            "end": GaugeMetricFamily(
                "devtrust_sync_last_run_timestamp_seconds",
                "When the last finished run of this kind ended (Unix time)",
                labels=labels,
            ),
            "success": GaugeMetricFamily(
                "devtrust_sync_last_success_timestamp_seconds",
                "When the last successful run of this kind ended (Unix time)",
                labels=labels,
            ),
            "failures": GaugeMetricFamily(
                "devtrust_sync_consecutive_failures",
                "Failed runs of this kind since its last success",
                labels=labels,
            ),
            "period": GaugeMetricFamily(
                "devtrust_sync_period_seconds",
                "How often beat schedules a run of this kind",
                labels=labels,
            ),
            "running": GaugeMetricFamily(
                "devtrust_sync_running",
                "1 while a run of this kind is recorded as running",
                labels=labels,
            ),
        }
        counts = GaugeMetricFamily(
            "devtrust_sync_last_run_records",
            "What the last finished run of this kind read and changed, by count",
            labels=[*labels, "count"],
        )
        alert = GaugeMetricFamily(
            "devtrust_sync_alert",
            "1 when the inventory's last two finished runs failed (as `jamf status`)",
            labels=["source", "inventory"],
        )
        for spec in self.inventories:
            runs = store.recent_runs(self.db.uow(), spec.name, limit=RUNS_LOOKED_AT)
            alert.add_metric([self.source, spec.name], 1.0 if store.alert(runs) else 0.0)
            periods = {"full": spec.sync_period_full, "partial": spec.sync_period_partial}
            for kind in KINDS:
                values = [self.source, spec.name, kind]
                mine = [r for r in runs if r.kind == kind]
                gauges["period"].add_metric(values, periods[kind].total_seconds())
                gauges["running"].add_metric(
                    values, 1.0 if any(r.status == store.RUNNING for r in mine) else 0.0
                )
                finished = [r for r in mine if r.status != store.RUNNING]
                failures = 0
                for run in finished:
                    if run.status == store.SUCCEEDED:
                        gauges["success"].add_metric(values, _ended(run))
                        break
                    failures += 1
                gauges["failures"].add_metric(values, float(failures))
                if not finished:
                    continue
                last = finished[0]
                gauges["status"].add_metric(values, 1.0 if last.status == store.SUCCEEDED else 0.0)
                if last.end_time is not None:
                    took = (last.end_time - last.start_time).total_seconds()
                    gauges["duration"].add_metric(values, took)
                    gauges["end"].add_metric(values, _ended(last))
                for name in COUNTS:
                    counts.add_metric([*values, name], float(getattr(last, name)))
        yield from gauges.values()
        yield counts
        yield alert


def _ended(run: SyncRun) -> float:
    return (run.end_time or run.start_time).timestamp()


class QueueCollector(Collector):
    """Messages waiting on the broker's queue, asked at each scrape."""

    def __init__(self, depth: Callable[[], int]) -> None:
        self.depth = depth

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "devtrust_queue_messages", "Tasks waiting on the broker for a worker"
        )
        try:
            gauge.add_metric([], float(self.depth()))
        except Exception as exc:  # a scrape must not fail because the broker is down
            log.warning("cannot read the queue's depth: %s", exc)
        yield gauge


def celery_queue_depth(celery: Any, queue: str) -> int:
    """Messages waiting on ``queue`` at the broker of ``celery``, whatever its transport
    (Redis, the embedded file queue, RabbitMQ)."""
    with celery.connection_for_read() as connection:
        declared = connection.default_channel.queue_declare(queue, passive=True)
        return int(declared.message_count)


class Metrics:
    """The service's registry and its request and verdict metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "devtrust_http_requests",
            "Requests to devtrust serve, by route template and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "devtrust_http_request_duration_seconds",
            "Time to answer a request, by route template",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.verdicts = Counter(
            "devtrust_auto_enroll_verdicts",
            "Auto-enrollment answers given at login, by outcome",
            ["outcome"],
            registry=self.registry,
        )

    def verdict(self, outcome: str) -> None:
        self.verdicts.labels(outcome).inc()


class RequestMetrics:
    """ASGI middleware: each HTTP request counted and timed under its route's template."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Callable[[], list[Any]]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = self._route(scope)
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - began)

    def _route(self, scope: Scope) -> str:
        # The router leaves the route it chose in the scope: a full match, else one whose
        # path matched but not its method (a 405). A request refused before the router
        # (RequestLimits' 413 and 431) has none, and is matched here the same way.
        route = scope.get("route")
        if route is None:
            route = self._match(scope)
        return str(getattr(route, "path", OTHER_ROUTE)) if route is not None else OTHER_ROUTE

    def _match(self, scope: Scope) -> Any:
        partial = None
        for route in self.routes():
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return route
            if match is Match.PARTIAL and partial is None:
                partial = route
        return partial
