"""Alembic environment: always run on a connection handed over by inventory.db."""

from alembic import context
from sqlalchemy import text

from inventory.models import Base

# Any 64-bit number works; it only has to be the same for every devtrust process.
_MIGRATION_LOCK_ID = 0x64657674727573


def run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through `devtrust db upgrade`, not the alembic CLI")
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Two programs starting at once must not both create the tables.
            connection.execute(text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_ID})"))
        context.run_migrations()


run()
