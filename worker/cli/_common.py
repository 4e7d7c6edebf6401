"""What every CLI command shares: the database, the acting admin, and output."""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TextIO

import typer

from inventory.errors import InvalidArgument, quoted

if TYPE_CHECKING:
    from inventory.db import Database
    from inventory.settings import Settings

    from ._remote import AdminClient

# The settings (pydantic) and the database (SQLAlchemy) are imported on first use: a
# command that needs neither (`--help`, `--version`, completion) starts in a fraction of
# the time (bench/cli_start.py).

_state: dict[str, Any] = {}


class Format(StrEnum):
    """``devices get``: the resource as YAML (the default), JSON or text."""

    TEXT = "text"
    JSON = "json"
    YAML = "yaml"


class TextOrJson(StrEnum):
    """Listings and reports: a table or lines of text, or JSON."""

    TEXT = "text"
    JSON = "json"


class YamlOrJson(StrEnum):
    """``config show``: the resource as YAML or JSON."""

    YAML = "yaml"
    JSON = "json"


def settings() -> Settings:
    if "settings" not in _state:
        from inventory.settings import load_settings

        _state["settings"] = load_settings()
    return _state["settings"]  # type: ignore[no-any-return]


def database() -> Database:
    """The inventory database, opened (and its schema upgraded) on first use."""
    if "db" not in _state:
        from inventory.db import Database

        s = settings()
        _state["db"] = Database.connect(s.database_url_value, migrate=s.auto_migrate)
    return _state["db"]  # type: ignore[no-any-return]


def remote() -> AdminClient | None:
    """The admin API's client when the CLI is pointed at one: DEVTRUST_API_URL and
    DEVTRUST_USER_TOKEN both set (in the environment or the config file). None: the
    local mode, on the database directly (the embedded default, and bootstrapping)."""
    if "remote" not in _state:
        s = settings()
        token = s.user_token.get_secret_value().strip() if s.user_token else ""
        if "api_url" in s.model_fields_set and token:
            from ._remote import AdminClient

            _state["remote"] = AdminClient(s)
        else:
            _state["remote"] = None
    return _state["remote"]  # type: ignore[no-any-return]


def close() -> None:
    db = _state.pop("db", None)
    if db is not None:
        db.close()
    client = _state.pop("remote", None)
    if client is not None:
        client.close()
    _state.clear()


def actor() -> str:
    """Who the audit log names for an admin command: the OS user running it.

    It comes from the environment ($LOGNAME, $USER...), so it is checked like any input:
    a name the audit log cannot hold would otherwise fail every admin write (PostgreSQL
    refuses a value longer than the column), and a control character would garble the log.
    """
    from inventory.services.audit import MAX_ACTOR_LENGTH

    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        return "admin"
    if len(name) > MAX_ACTOR_LENGTH or not name.isprintable() or not name.strip():
        raise InvalidArgument(
            f"the acting admin's name from $LOGNAME/$USER, {quoted(name)}, is not a name the "
            f"audit log can hold: use at most {MAX_ACTOR_LENGTH} printable characters"
        )
    return name


def echo_json(value: Any, out: TextIO | None = None) -> None:
    print(json.dumps(value, indent=2, sort_keys=False), file=out or sys.stdout)


def echo_yaml(value: Any) -> None:
    import yaml

    sys.stdout.write(yaml.safe_dump(value, sort_keys=False, allow_unicode=True))


def info(message: str) -> None:
    """A hint for the person at the terminal, kept off stdout so pipes stay clean."""
    typer.echo(message, err=True)


def format_rows(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A plain table in the reference tools' style: header, dashes, aligned columns."""
    rows = list(rows)
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    return table_lines(headers, rows, widths, header=True)


def table_lines(
    headers: Sequence[str], rows: Iterable[Sequence[str]], widths: Sequence[int], *, header: bool
) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return " ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    lines = [line(headers), line(["-" * w for w in widths])] if header else []
    lines.extend(line(r) for r in rows)
    return lines
