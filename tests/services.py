"""Reaching the real services the integration tests need.

A missing service fails the test with a message saying how to start it; it never
skips, so a green run always means the real thing was exercised.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError

POSTGRES_ADMIN_URL = os.environ.get(
    "DEVTRUST_TEST_POSTGRES_URL", "postgresql+psycopg://devtrust:devtrust@127.0.0.1:5432/postgres"
)


@contextmanager
def scratch_postgres_database(prefix: str = "devtrust_test") -> Iterator[str]:
    """Create a throwaway database on the real server; yields its URL, drops it after."""
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        reason = (str(exc.orig).strip().splitlines() or ["?"])[0]
        pytest.fail(
            f"PostgreSQL is not reachable at "
            f"{make_url(POSTGRES_ADMIN_URL).render_as_string(hide_password=True)}: {reason}\n"
            "Run `make services` (it starts PostgreSQL and creates the devtrust role), "
            "or point DEVTRUST_TEST_POSTGRES_URL at a server where you may create databases.",
            pytrace=False,
        )
    try:
        yield make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def drop_other_connections(engine: Engine) -> int:
    """Terminate every other connection to ``engine``'s PostgreSQL database, as a restart
    would (pooled ones included); returns how many."""
    with engine.connect() as admin:
        return int(
            admin.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar()
            or 0
        )
