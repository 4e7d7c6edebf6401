"""What the access check caches, and how every writer says it changed.

``devtrust serve`` answers a proxy's access check from memory: the device's enrollment,
credential, trust level, owner and asset tag; the users; the device-trust preference.
Whatever process changes one of those (the CLI, the worker's sync, another service
instance, a hand-written UPDATE) must make every instance forget what it holds, at once
and with no round trip on the hot path. The database says so itself, from triggers, so
no writer can forget to:

- PostgreSQL: ``pg_notify('devtrust_access', <table>)`` at commit; each instance LISTENs
  (``ceremony.gate``).
- SQLite (one machine): the one row of ``access_epoch`` counts the changes (made again
  if someone deleted it); an instance
  looks at ``PRAGMA data_version`` on every check (in-process, no I/O) and reads the row
  only when another connection has committed something.

Revision ID: 0008_access_epoch
Revises: 0007_devices_external_id_index
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_access_epoch"
down_revision: str | None = "0007_devices_external_id_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# What the check reads of a device; a sync's profile writes change none of it.
DEVICE_COLUMNS = ("enroll_status", "credential_id", "credential_attestation_type", "owner",
                  "asset_tag")  # fmt: skip
# (trigger suffix, event, table, the WHEN clause on OLD/NEW or None)
SQLITE_TRIGGERS = (
    ("devices_update", "UPDATE", "devices",
     " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in DEVICE_COLUMNS)),
    ("devices_delete", "DELETE", "devices", None),
    ("users_update", "UPDATE", "users", None),
    ("users_delete", "DELETE", "users", None),
    ("preference_insert", "INSERT", "cluster_preferences", None),
    ("preference_update", "UPDATE", "cluster_preferences", None),
)  # fmt: skip
PG_TRIGGERS = (
    ("devices_update", "UPDATE", "devices",
     " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in DEVICE_COLUMNS)),
    ("devices_delete", "DELETE", "devices", None),
    ("users_change", "UPDATE OR DELETE", "users", None),
    ("preference_change", "INSERT OR UPDATE", "cluster_preferences", None),
)  # fmt: skip


def upgrade() -> None:
    op.create_table(
        "access_epoch",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("epoch", sa.BigInteger, nullable=False),
    )
    op.execute("INSERT INTO access_epoch (id, epoch) VALUES (1, 0)")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION devtrust_access_changed() RETURNS trigger AS $$
            BEGIN
                PERFORM pg_notify('devtrust_access', TG_TABLE_NAME);
                RETURN NULL;
            END
            $$ LANGUAGE plpgsql
            """
        )
        for name, event, table, when in PG_TRIGGERS:
            condition = f" WHEN ({when})" if when else ""
            op.execute(
                f"CREATE TRIGGER access_{name} AFTER {event} ON {table} FOR EACH ROW"
                f"{condition} EXECUTE FUNCTION devtrust_access_changed()"
            )
        return
    for name, event, table, when in SQLITE_TRIGGERS:
        condition = f" WHEN {when}" if when else ""
        op.execute(
            f"CREATE TRIGGER access_{name} AFTER {event} ON {table} FOR EACH ROW{condition} "  # noqa: S608 - constants
            "BEGIN INSERT OR REPLACE INTO access_epoch (id, epoch) VALUES "
            "(1, coalesce((SELECT epoch FROM access_epoch WHERE id = 1), 0) + 1); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name, _, table, _ in PG_TRIGGERS:
            op.execute(f"DROP TRIGGER access_{name} ON {table}")
        op.execute("DROP FUNCTION devtrust_access_changed()")
    else:
        for name, *_ in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER access_{name}")
    op.drop_table("access_epoch")
