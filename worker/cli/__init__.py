"""The ``devtrust`` command line.

Errors reach the user as one line on stderr and a non-zero exit status; a traceback
only with ``DEVTRUST_DEBUG=1``.
"""

from __future__ import annotations

import os
import re
import sys

import click
import typer

from inventory.errors import QUOTE_LIMIT, DevtrustError, clip, one_line

from . import _common, audit, config, db, device, devices, jamf, processes, users

app = typer.Typer(
    name="devtrust",
    help="devtrust: a trusted-device inventory kept in step with Jamf Pro.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"devtrust {version('devtrust')}")
        raise typer.Exit()


@app.callback()
def _options(
    show_version: bool = typer.Option(
        False,
        "--version",
        callback=_version,
        is_eager=True,
        help="Print devtrust's version and exit.",
    ),
) -> None:
    """devtrust: a trusted-device inventory kept in step with Jamf Pro."""


app.add_typer(devices.app, name="devices")
app.add_typer(users.app, name="users")
app.add_typer(audit.app, name="audit")
app.add_typer(config.app, name="config")
app.add_typer(db.app, name="db")
app.add_typer(jamf.app, name="jamf")
app.add_typer(device.app, name="device")
app.command("worker")(processes.worker)
app.command("beat")(processes.beat)
app.command("serve")(processes.serve)


# Recent typer releases carry their own copy of click, whose exceptions are not
# click's: catch both families.
_TYPER_ERRORS: tuple[type[BaseException], ...] = (
    (typer.TyperException,) if hasattr(typer, "TyperException") else ()
)
_USAGE_ERRORS: tuple[type[BaseException], ...] = (click.exceptions.ClickException, *_TYPER_ERRORS)
_EXITS: tuple[type[BaseException], ...] = (click.exceptions.Exit, typer.Exit)
_ABORTS: tuple[type[BaseException], ...] = (click.exceptions.Abort, typer.Abort)


def _usage_error(exc: BaseException) -> int:
    """A usage mistake: one line naming it and where to read more, exit status 2."""
    code = int(getattr(exc, "exit_code", 2))
    if type(exc).__name__ == "NoArgsIsHelpError":  # `devtrust devices` alone: show the help
        getattr(exc, "show", lambda: None)()
        return code
    format_message = getattr(exc, "format_message", None)
    message = format_message() if callable(format_message) else str(exc)
    # typer validates choices with pydantic, whose messages start "Value error, ".
    message = message.replace("Value error, ", "")
    # click quotes the offending value whole (a 10 kB --format): cut any run that long.
    message = _LONG_WORD.sub(lambda m: clip(m.group(), QUOTE_LIMIT), message)
    ctx = getattr(exc, "ctx", None)
    hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    return _fail(f"{message}{hint}", code)


_LONG_WORD = re.compile(rf"\S{{{QUOTE_LIMIT + 1},}}")

#: The longest error line printed. Messages quote input through ``errors.quoted``; this
#: also bounds what a library (click) echoes back, such as a 10 kB value for a choice.
MAX_ERROR_LENGTH = 500


def _fail(message: str, code: int = 1) -> int:
    line = clip(" ".join(message.splitlines()), MAX_ERROR_LENGTH)
    typer.echo(f"error: {line}", err=True)
    return code


def _database_error(exc: Exception) -> str | None:
    """What the database said, when ``exc`` is SQLAlchemy's; None otherwise. (SQLAlchemy
    is imported only by the commands that open the database: an error of its own means
    it was.)"""
    sqlalchemy = sys.modules.get("sqlalchemy.exc")
    if sqlalchemy is None:
        return None
    if isinstance(exc, sqlalchemy.DBAPIError):
        return (str(exc.orig).strip().splitlines() or ["unknown error"])[0]
    if isinstance(exc, sqlalchemy.SQLAlchemyError):
        return str(exc)
    return None


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit status, never raising."""
    debug = os.environ.get("DEVTRUST_DEBUG") == "1"
    try:
        result = app(args=argv, prog_name="devtrust", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except _USAGE_ERRORS as exc:
        return _usage_error(exc)
    except _EXITS as exc:
        return int(getattr(exc, "exit_code", 0))
    except _ABORTS:
        return _fail("aborted", 130)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except DevtrustError as exc:
        if debug:
            raise
        return _fail(str(exc))
    except BrokenPipeError:
        # `devtrust devices ls | head`: the reader left; that is not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:
        if debug:
            raise
        database = _database_error(exc)
        if database is not None:
            return _fail(f"database error: {database}")
        return _fail(
            f"unexpected {type(exc).__name__}: {one_line(exc)} "
            "(run again with DEVTRUST_DEBUG=1 for details)"
        )
    finally:
        _common.close()


def main() -> None:
    sys.exit(run())
