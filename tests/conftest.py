"""Fixtures: the inventory on SQLite and on the real PostgreSQL server, and a clock.

Inventory tests take the ``db`` fixture and so run once per backend. PostgreSQL's
database is created and migrated once per session and emptied after each test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete

from inventory.db import Database
from inventory.models import Base
from tests.services import scratch_postgres_database

# The ``cli`` fixture of the CLI tests (tests/integration/test_cli*.py).
pytest_plugins = ["tests.cli"]


class Clock:
    """A clock tests move by hand; services read time only through it."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with scratch_postgres_database() as url:
        Database.connect(url).close()  # migrate once for the whole session
        yield url


def _empty(db: Database) -> None:
    with db.engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(delete(table))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'devtrust.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def db(db_url: str, clock: Clock) -> Iterator[Database]:
    database = Database.connect(db_url, clock=clock, pool_size=25, max_overflow=5)
    try:
        yield database
    finally:
        _empty(database)
        database.close()


REDIS_URL = os.environ.get("DEVTRUST_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The machine's Redis for tests that share it (database 15 unless
    ``DEVTRUST_TEST_REDIS_URL`` says otherwise); keys are each test's own to clean up."""
    from redis import Redis
    from redis.exceptions import RedisError

    from worker.locks import redacted_url

    client = Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except RedisError as exc:
        pytest.fail(
            f"Redis is not reachable at {redacted_url(REDIS_URL)}: {exc}\n"
            "Run `make services` (it starts Redis), or point DEVTRUST_TEST_REDIS_URL at a "
            "server whose database you may write to.",
            pytrace=False,
        )
    finally:
        client.close()
    return REDIS_URL
