"""Engines, schema migrations and the unit of work.

One operation is one transaction: a service opens ``with uow:``, does its reads and
writes (including the audit event), and calls ``uow.commit()``. Leaving the block
without committing rolls everything back.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace, TracebackType
from typing import Any, Self, TypeVar, cast

from sqlalchemy import Insert, Label, Table, bindparam, create_engine, event, insert, inspect, text
from sqlalchemy.engine import URL, Connection, CursorResult, Engine, make_url
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql.base import Executable

__all__ = ["Database", "Engine", "UnitOfWork"]
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from inventory import direct
from inventory.errors import (
    ConfigurationError,
    DatabaseUnavailable,
    InvalidArgument,
    one_line,
    quoted,
)

# The newest migration. tests/integration/test_migrations.py checks that it is
# Alembic's head, so a program start compares one string instead of loading Alembic.
HEAD_REVISION = "0008_access_epoch"

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

Clock = Callable[[], datetime]
T = TypeVar("T")


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_database_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigurationError(
            "invalid DEVTRUST_DATABASE_URL: expected sqlite:///PATH or "
            "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername not in ("sqlite", "sqlite+pysqlite", "postgresql+psycopg"):
        raise ConfigurationError(
            f"unsupported database {quoted(parsed.drivername)}: use sqlite or postgresql+psycopg"
        )
    if parsed.get_backend_name() == "sqlite" and parsed.query:
        # The driver would warn (a multi-line SAWarning) and ignore them: `?mode=ro` opened
        # the file read-write. Refused instead of half honoured.
        options = "&".join(f"{k}={v}" for k, v in parsed.query.items())
        raise ConfigurationError(
            f"invalid DEVTRUST_DATABASE_URL: a SQLite URL takes no options, got "
            f"{quoted('?' + options)}; devtrust opens its SQLite file read-write (mode=ro is "
            "not supported): remove them"
        )
    return parsed


def redacted(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def create_db_engine(url: str, *, create_dir: bool = False, **engine_options: Any) -> Engine:
    """An engine for ``url``; ``engine_options`` go to SQLAlchemy (pool_size, echo...).

    A SQLite file whose directory does not exist is refused unless ``create_dir``
    (``devtrust db upgrade``): a mistyped path must not quietly start a new, empty
    inventory. The default file under the data directory is the settings' to make
    (``Settings.database_url_value`` creates that directory).

    Server databases ping a pooled connection before handing it out unless
    ``pool_pre_ping=False`` is given: a caller that retries on a stale connection itself
    saves the round trip."""
    parsed = parse_database_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine_options.pop("pool_pre_ping", None)
        return _sqlite_engine(parsed, create_dir=create_dir, **engine_options)
    engine_options.setdefault("pool_pre_ping", True)
    return create_engine(parsed, **engine_options)


def _sqlite_engine(url: URL, *, create_dir: bool, **engine_options: Any) -> Engine:
    if url.database and url.database != ":memory:":
        directory = Path(url.database).parent
        if create_dir:
            make_directory(directory, "the SQLite database")
        elif not directory.is_dir():
            raise ConfigurationError(
                f"the SQLite database {url.database} is in a directory that does not exist: "
                "fix DEVTRUST_DATABASE_URL, or run `devtrust db upgrade` to create a new, "
                "empty inventory there"
            )
    engine = create_engine(url, connect_args={"timeout": 30}, **engine_options)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        # Before WAL, so that it takes on a new file (an existing one keeps its own): a
        # synced Mac's row holds its Jamf record (2-3 KB), one row a 4 KiB page, and a
        # first sync then writes a quarter more than with 16 KiB pages, which hold six.
        cursor.execute("PRAGMA page_size=16384")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the lock up front: a deferred transaction that reads and then
        # writes fails at once with SQLITE_BUSY when another writer got there first.
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def make_directory(directory: Path, purpose: str) -> None:
    """``mkdir -p directory``, or a ConfigurationError naming it and what it is for."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create {directory} for {purpose}: {exc.strerror}"
        ) from None


class Database:
    """An engine, its session factory and the clock every service reads time from."""

    def __init__(self, engine: Engine, *, clock: Clock = utcnow) -> None:
        self.engine = engine
        self.clock = clock
        self._sessions = sessionmaker(engine, expire_on_commit=False, autoflush=False)
        self._autocommit_engine: Engine | None = None

    @classmethod
    def connect(
        cls, url: str, *, migrate: bool = True, clock: Clock = utcnow, **engine_options: Any
    ) -> Database:
        """Open the database, check it answers, and bring its schema up to date."""
        db = cls(create_db_engine(url, **engine_options), clock=clock)
        try:
            if migrate:
                ensure_schema(db.engine)
            else:
                with db.engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
        except DBAPIError as exc:
            db.close()
            raise DatabaseUnavailable(
                f"cannot use the database at {redacted(db.engine.url)}: {_first_line(exc.orig)}"
            ) from None
        return db

    def uow(self, *, autocommit: bool = False) -> UnitOfWork:
        """A unit of work. With ``autocommit``, for the hot paths, each statement commits
        as it runs, with no round trips for BEGIN and COMMIT, and is run on the driver's
        own connection (``uow.run``, ``inventory.direct``): no Session, no ``uow.session``.
        Statements that must commit together go in ``uow.transaction()``. Those
        connections are not pinged before use: wrap such operations in
        ``once_more_if_dropped``."""
        if not autocommit:
            return UnitOfWork(self._sessions, self.clock)
        if self.engine.dialect.name != "postgresql":
            # sqlite3 connections here already commit each statement outside a BEGIN.
            return UnitOfWork(self._sessions, self.clock, direct=self.engine)
        if self._autocommit_engine is None:
            # A pool of its own, in autocommit for good: no switching modes or rolling
            # back as connections go in and out (about 0.1 ms a checkout).
            self._autocommit_engine = create_engine(
                self.engine.url, isolation_level="AUTOCOMMIT", pool_reset_on_return=None
            )
        return UnitOfWork(self._sessions, self.clock, direct=self._autocommit_engine)

    def close(self) -> None:
        self.engine.dispose()
        if self._autocommit_engine is not None:
            self._autocommit_engine.dispose()


def once_more_if_dropped(operation: Callable[[], T]) -> T:
    """Run ``operation``; if it failed on a pooled connection the database had dropped
    (it restarted), the pool is invalidated by then: run it once more on a fresh one.

    For engines without ``pool_pre_ping``: a connection's first statement is where a
    dropped one fails, so an operation whose first statement only reads is safe to rerun.
    """
    try:
        return operation()
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    return operation()


def inserting(table: Table) -> Insert:
    """An INSERT of every column but a generated key, each value the parameter named like
    its column: the columns are fixed when it is built, so it compiles once and runs
    through ``uow.run`` as well as through a Session."""
    generated = table.autoincrement_column
    return insert(table).values(
        {c.name: bindparam(c.name, type_=c.type) for c in table.c if c is not generated}
    )


def labelled(table: Table, prefix: str) -> list[Label[Any]]:
    """``table``'s columns labelled ``<prefix><name>``: several tables in one row."""
    return [column.label(f"{prefix}{column.name}") for column in table.c]


def unlabelled(row: Any, prefix: str) -> SimpleNamespace | None:
    """The columns of ``row`` (a Row or a named tuple) labelled with ``prefix`` (see
    ``labelled``), by their own names; None when there is no row or the outer join found
    nothing (its key is NULL)."""
    if row is None:
        return None
    indices, names = _prefixed(tuple(row._fields), prefix)
    values = [row[i] for i in indices]
    if all(v is None for v in values):
        return None
    return SimpleNamespace(**dict(zip(names, values, strict=True)))


@functools.lru_cache(maxsize=256)
def _prefixed(fields: tuple[str, ...], prefix: str) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Where the columns labelled ``prefix`` are among ``fields``, and their own names."""
    picked = [
        (i, field[len(prefix) :]) for i, field in enumerate(fields) if field.startswith(prefix)
    ]
    return tuple(i for i, _ in picked), tuple(name for _, name in picked)


def _first_line(error: BaseException | None) -> str:
    return (str(error).strip().splitlines() or ["unknown error"])[0]


class UnitOfWork:
    """A transaction; ``with uow:`` writes, ``with uow.read():`` only reads.

    Direct (``Database.uow(autocommit=True)``): each statement commits as it runs, on the
    driver's connection; ``uow.run`` only, ``uow.transaction()`` to group statements."""

    session: Session

    def __init__(
        self, sessions: sessionmaker[Session], clock: Clock, *, direct: Engine | None = None
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._read_only = False
        self._direct = direct
        self._pooled: PoolProxiedConnection | None = None
        self._driver: Any = None  # the pooled connection's driver connection, looked up once
        self._in_transaction = False

    @property
    def autocommit(self) -> bool:
        """Whether each statement is its own transaction (outside ``transaction()``)."""
        return self._direct is not None

    def read(self) -> Self:
        self._read_only = True
        return self

    def __enter__(self) -> Self:
        if self._direct is not None:
            self._pooled = self._direct.raw_connection()
            self._driver = self._pooled.driver_connection
            return self
        self.session = self._sessions()
        if self._read_only:
            self.session.connection(execution_options={"sqlite_begin": "DEFERRED"})
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._pooled is not None:
            pooled, self._pooled = self._pooled, None
            if self._in_transaction and pooled.is_valid:
                pooled.driver_connection.execute("ROLLBACK")  # type: ignore[union-attr]
            self._in_transaction = False
            pooled.close()
            return
        self.session.rollback()
        self.session.close()
        self._read_only = False

    def run(self, statement: Executable, params: Mapping[str, Any] | None = None) -> list[Any]:
        """Run ``statement``; its rows (attributes by column name), none without RETURNING."""
        if self._pooled is None:
            result = cast(CursorResult[Any], self.session.execute(statement, params))
            return list(result) if result.returns_rows else []
        assert self._direct is not None
        return direct.run(
            self._driver,
            self._direct.dialect,
            statement,
            params or {},
            on_error=self._dropped,
        )

    def first(self, statement: Executable, params: Mapping[str, Any] | None = None) -> Any:
        """``statement``'s first row, or None."""
        rows = self.run(statement, params)
        return rows[0] if rows else None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Direct: the statements inside commit together, or not at all. Otherwise the
        unit of work already is a transaction: nothing to do."""
        if self._pooled is None:
            yield
            return
        driver = self._driver
        assert driver is not None and not self._in_transaction
        # SQLite: the write lock up front (see _sqlite_engine's BEGIN IMMEDIATE).
        driver.execute("BEGIN IMMEDIATE" if self.dialect == "sqlite" else "BEGIN")
        self._in_transaction = True
        yield  # an exception propagates: __exit__ rolls back
        driver.execute("COMMIT")
        self._in_transaction = False

    def _dropped(self, error: BaseException) -> bool:
        """Whether ``error`` means the database dropped the connection; if so, it is
        invalidated (discarded by the pool), as an engine would."""
        assert self._pooled is not None and self._direct is not None
        dropped = self._direct.dialect.is_disconnect(
            error,  # type: ignore[arg-type]
            self._pooled.dbapi_connection,
            None,
        )
        if dropped:
            self._pooled.invalidate(error)
            self._in_transaction = False
        return dropped

    def commit(self) -> None:
        if self._direct is None:  # direct: each statement committed as it ran
            self.session.commit()

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``: for the few statements written per database."""
        if self._direct is not None:
            return self._direct.dialect.name
        return self.session.get_bind().dialect.name

    def now(self) -> datetime:
        return self._clock()


# -- migrations -------------------------------------------------------------------


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def ensure_schema(engine: Engine) -> None:
    """Upgrade to the newest schema unless the database already has it (one query)."""
    if current_revision(engine) != HEAD_REVISION:
        upgrade(engine)


def _alembic_config(connection: Connection) -> Any:
    from alembic.config import Config  # imported here: most program starts never need it

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    with engine.connect() as conn, _revision_refused("upgrade", revision):
        command.upgrade(_alembic_config(conn), revision)
        conn.commit()


def downgrade(engine: Engine, revision: str) -> None:
    from alembic import command

    with engine.connect() as conn, _revision_refused("downgrade", revision):
        command.downgrade(_alembic_config(conn), revision)
        conn.commit()


@contextlib.contextmanager
def _revision_refused(verb: str, revision: str) -> Iterator[None]:
    """Alembic's refusal of a revision (unknown, a range, the wrong direction) as one line
    for the user; nothing was changed (its transaction is not committed)."""
    from alembic.util import CommandError

    try:
        yield
    except CommandError as exc:
        raise InvalidArgument(
            f"cannot {verb} to revision {quoted(revision)}: {one_line(exc, 120)} "
            f"(`devtrust db current` shows the revision; the newest is {HEAD_REVISION}, "
            "'base' is empty)"
        ) from None


def script_head() -> str | None:
    from alembic.script import ScriptDirectory

    config = _alembic_config(None)  # type: ignore[arg-type]
    return ScriptDirectory.from_config(config).get_current_head()
