"""The ceremony HTTP service (``devtrust serve``). For now: its health check.

The enrollment and authentication routes come with the ceremony itself; the service,
its settings and ``/healthz`` are here first so deployments (docker-compose) can run and
watch it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import text

from inventory.db import create_db_engine
from inventory.settings import Settings

Check = Callable[[], None]


def database_check(settings: Settings) -> Check:
    engine = create_db_engine(settings.database_url_value, pool_pre_ping=True)

    def check() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    return check


def broker_check(broker_url: str, transport_options: dict[str, Any]) -> Check:
    """The queue the service hands work to (its URL and options come from the worker)."""

    def check() -> None:
        from kombu.connection import Connection

        options = {"transport_options": transport_options, "connect_timeout": 2}
        with Connection(broker_url, **options) as c:  # type: ignore[no-untyped-call]
            c.ensure_connection(max_retries=1, timeout=2)

    return check


def create_app(settings: Settings, checks: dict[str, Check]) -> FastAPI:
    """The service; ``checks`` are what ``/healthz`` tries (name -> raises if unwell)."""
    app = FastAPI(title="devtrust ceremony service", version="0.1")

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        """Whether the database and the broker answer: 200 when both do, else 503."""
        report: dict[str, Any] = {}
        for name, check in checks.items():
            try:
                check()
                report[name] = "ok"
            except Exception as exc:  # what is wrong goes in the answer, not a 500
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                report[name] = f"unreachable: {first[:200]}"
        healthy = all(value == "ok" for value in report.values())
        return JSONResponse({"status": "ok" if healthy else "unhealthy", **report},
                            status_code=200 if healthy else 503)  # fmt: skip

    return app
