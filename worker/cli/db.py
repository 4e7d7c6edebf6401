"""``devtrust db``: schema migrations (programs also upgrade on start)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from inventory.errors import InvalidArgument

from ._common import info, settings

if TYPE_CHECKING:
    from inventory import db as dbmod

app = typer.Typer(help="Manage the database schema.", no_args_is_help=True)


def _engine(*, create: bool = False) -> dbmod.Engine:
    from inventory import db as dbmod

    return dbmod.create_db_engine(settings().database_url_value, create_dir=create)


@app.command("upgrade")
def upgrade(
    revision: Annotated[str, typer.Argument(help="target revision", metavar="REVISION")] = "head",
) -> None:
    """Upgrade the schema (to the newest revision by default); creates a new SQLite
    database, and its directory, where DEVTRUST_DATABASE_URL names one that is missing."""
    from inventory import db as dbmod

    engine = _engine(create=True)
    try:
        dbmod.upgrade(engine, revision)
        typer.echo(f"database at revision {dbmod.current_revision(engine)}")
    finally:
        engine.dispose()


@app.command("downgrade")
def downgrade(
    revision: Annotated[
        str,
        typer.Argument(help="target revision, or 'base' to drop everything", metavar="REVISION"),
    ],
    yes: Annotated[bool, typer.Option("--yes", help="confirm that data may be lost")] = False,
) -> None:
    """Downgrade the schema; tables dropped on the way lose their data."""
    from inventory import db as dbmod

    if not yes:
        raise InvalidArgument("downgrading can drop data: pass --yes to confirm")
    engine = _engine()
    try:
        dbmod.downgrade(engine, revision)
        typer.echo(f"database at revision {dbmod.current_revision(engine) or 'base (empty)'}")
    finally:
        engine.dispose()


@app.command("current")
def current() -> None:
    """Print the schema revision the database is at."""
    from inventory import db as dbmod

    engine = _engine()
    try:
        rev = dbmod.current_revision(engine)
    finally:
        engine.dispose()
    typer.echo(rev or "base (empty)")
    if rev != dbmod.HEAD_REVISION:
        info(f"the newest revision is {dbmod.HEAD_REVISION}: run `devtrust db upgrade`")
