"""Migrations: up and down on both backends, and in step with the models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from inventory import db as dbmod
from inventory.models import Base
from tests.services import scratch_postgres_database

TABLES = {
    "devices",
    "collected_data",
    "enrollment_tokens",
    "audit_events",
    "cluster_preferences",
    "users",
    "sync_runs",
    "ceremony_challenges",
    "auto_enroll_checks",
    "access_epoch",
}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
    else:
        with scratch_postgres_database("devtrust_migrate") as url:
            yield url


def tables(engine: dbmod.Engine) -> set[str]:
    with engine.connect() as conn:
        return set(inspect(conn).get_table_names()) - {"alembic_version"}


def test_head_revision_constant_is_alembics_head() -> None:
    assert dbmod.script_head() == dbmod.HEAD_REVISION


def test_upgrade_down_to_base_and_up_again(empty_url: str) -> None:
    engine = dbmod.create_db_engine(empty_url)
    try:
        assert dbmod.current_revision(engine) is None
        dbmod.upgrade(engine)
        assert dbmod.current_revision(engine) == dbmod.HEAD_REVISION
        assert tables(engine) == TABLES
        dbmod.downgrade(engine, "base")
        assert tables(engine) == set()
        dbmod.upgrade(engine)
        assert tables(engine) == TABLES
    finally:
        engine.dispose()


def test_migrations_create_exactly_the_models(empty_url: str) -> None:
    engine = dbmod.create_db_engine(empty_url)
    try:
        dbmod.upgrade(engine)
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_programs_upgrade_the_schema_on_start(empty_url: str) -> None:
    database = dbmod.Database.connect(empty_url)
    try:
        assert dbmod.current_revision(database.engine) == dbmod.HEAD_REVISION
    finally:
        database.close()


def test_an_unreachable_database_is_one_clear_error() -> None:
    from inventory.errors import DatabaseUnavailable

    url = "postgresql+psycopg://devtrust:secret@127.0.0.1:1/devtrust"
    with pytest.raises(
        DatabaseUnavailable, match=r"cannot use the database at .*\*\*\*@127.0.0.1:1"
    ) as err:
        dbmod.Database.connect(url)
    assert "secret" not in str(err.value)


def test_downgrade_one_step_keeps_the_inventory(empty_url: str) -> None:
    """0002 -> 0001 drops only the sync bookkeeping; devices registered before stay."""
    from inventory.services import devices

    database = dbmod.Database.connect(empty_url)
    try:
        devices.register_device(database.uow(), os_type="macos", asset_tag="KEEP", actor="t")
        dbmod.downgrade(database.engine, "0001_initial")
        assert "sync_runs" not in tables(database.engine)
        database.engine.dispose()
        dbmod.upgrade(database.engine)
        assert devices.get_device(database.uow(), "KEEP").asset_tag == "KEEP"
    finally:
        database.close()
