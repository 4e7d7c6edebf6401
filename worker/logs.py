"""Logging for the devtrust programs: JSON lines for machines, a short line for people.

``configure_logging()`` gives the root logger one handler. Off a terminal (a container,
a service manager, a pipe) every record is one JSON object on one line::

    {"time": "2026-11-26T12:00:00.123Z", "level": "INFO", "logger": "jamf.sync",
     "message": "full sync done", "task_id": "7c1e...", "inventory": "prod", "devices": 1000}

On a terminal it is one compact line: ``12:00:00.123 INFO    jamf.sync: full sync done
task_id=7c1e... inventory=prod devices=1000`` (times are UTC, like the rest of devtrust).

What a record carries besides its message comes from two places: ``extra={...}`` at the
call site, and the *log context*, a ``contextvars`` variable that ``log_context()`` and
``bind_celery_task()`` set. The context belongs to the current thread (or asyncio task):
a ``threading.Thread`` starts with an empty context, so its lines carry no task id unless
the code starting it copies the context on purpose, e.g.
``threading.Thread(target=contextvars.copy_context().run, args=(work,))``.
Tasks started with ``asyncio`` copy the context by themselves.

Values under secret-looking keys (password, secret, token, authorization...) in the extra
fields and the context are replaced by ``***`` before any handler formats them. The
message text itself is not searched: never put a secret in it.

Celery, wired where the app is built (connecting any ``setup_logging`` receiver stops
Celery from installing its own handlers; signals hold receivers weakly, hence module-level
functions rather than lambdas)::

    @signals.setup_logging.connect
    def _setup_logging(loglevel: int | None = None, **_: object) -> None:
        configure_logging(loglevel or "INFO")

    @signals.task_prerun.connect
    def _bind(task_id: str, kwargs: dict[str, Any] | None = None, **_: object) -> None:
        bind_celery_task(task_id, (kwargs or {}).get("inventory"))

    @signals.task_postrun.connect
    def _unbind(**_: object) -> None:
        clear_context()
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import IO

__all__ = [
    "ContextFilter",
    "JsonFormatter",
    "RedactSecretsFilter",
    "TerminalFormatter",
    "bind_celery_task",
    "clear_context",
    "configure_logging",
    "current_context",
    "log_context",
]

MASK = "***"

# Shown first and only when known; every other field follows in the order it was given.
_KNOWN_FIELDS = ("task_id", "inventory")

# Every attribute a bare LogRecord has (``taskName`` from 3.12 on, too), plus the two the
# formatters add: anything else on a record is an extra field or a context field.
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", logging.INFO, "", 0, "", None, None).__dict__
) | {"message", "asctime"}

_SECRET_KEY = re.compile(
    r"passw(?:or)?d|passphrase|pwd|secret|token|authori[sz]ation|api[-_]?key|credential"
    r"|private[-_]?key|cookie",
    re.IGNORECASE,
)
_MAX_DEPTH = 8  # nested extras are masked this deep; deeper is replaced whole

_EMPTY: Mapping[str, object] = MappingProxyType({})
_CONTEXT: ContextVar[Mapping[str, object]] = ContextVar("devtrust_log_context", default=_EMPTY)

# Marks the handler configure_logging() installed, so calling it again replaces that
# handler instead of printing every line twice, and leaves other handlers alone.
_OWN_HANDLER = "_devtrust_handler"


# -- the context ---------------------------------------------------------------------------


def current_context() -> Mapping[str, object]:
    """The fields every record logged from here will carry (read-only)."""
    return _CONTEXT.get()


@contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Add ``fields`` (``task_id=...``, ``inventory=...``, ...) to every record in the block.

    Blocks nest: an inner block adds to (or overrides) the outer fields, and leaving it
    brings the outer fields back, even when the block raises. ``inventory=None`` inside a
    block hides an outer inventory for that block.
    """
    clashes = sorted(set(fields) & _RECORD_ATTRIBUTES)
    if clashes:
        raise ValueError(f"log context field names clash with LogRecord attributes: {clashes}")
    token = _CONTEXT.set(MappingProxyType({**_CONTEXT.get(), **fields}))
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def bind_celery_task(task_id: str, inventory: str | None) -> None:
    """Start a task's context (Celery ``task_prerun``): its id and inventory, nothing else.

    It replaces rather than adds to the current context: a worker process runs task after
    task in the same thread, and one task's fields must not follow into the next.
    """
    _CONTEXT.set(MappingProxyType({"task_id": task_id, "inventory": inventory}))


def clear_context() -> None:
    """End a task's context (Celery ``task_postrun``), so worker lines between tasks carry
    no stale task id."""
    _CONTEXT.set(_EMPTY)


# -- filters -------------------------------------------------------------------------------


class ContextFilter(logging.Filter):
    """Copy the current log context onto each record; ``task_id`` and ``inventory`` are
    always set (``None`` when unknown) so ``%(task_id)s`` format strings work too.

    A field passed with ``extra=`` at the call site is more specific and wins. Install it
    on a handler: a filter on a logger only sees records logged on that very logger.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        attributes = record.__dict__
        for key in _KNOWN_FIELDS:
            attributes.setdefault(key, None)
        for key, value in _CONTEXT.get().items():
            if attributes.get(key) is None:
                attributes[key] = value
        return True


class RedactSecretsFilter(logging.Filter):
    """Replace the values of secret-looking keys in extra and context fields by ``***``,
    looking into nested mappings and sequences too."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in list(record.__dict__.items()):
            if key not in _RECORD_ATTRIBUTES:
                record.__dict__[key] = _redact(key, value, 0)
        return True


def _redact(key: str, value: object, depth: int) -> object:
    if value is None:
        return None
    if _SECRET_KEY.search(key) or depth > _MAX_DEPTH:
        return MASK
    if isinstance(value, Mapping):
        return {str(k): _redact(str(k), v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(key, item, depth + 1) for item in value]
    return value


class TaskPayloadFilter(logging.Filter):
    """Keep the arguments and results of the named tasks out of Celery's "received" and
    "succeeded" lines: an auto-enrollment verdict carries a fresh enrollment token, and
    its arguments a person's device data. Celery logs them as repr strings, which the
    key-based redaction cannot see into."""

    def __init__(self, tasks: frozenset[str]) -> None:
        super().__init__()
        self.tasks = tasks

    def filter(self, record: logging.LogRecord) -> bool:
        for context in (record.args, record.__dict__.get("data")):
            if isinstance(context, dict) and context.get("name") in self.tasks:
                for key in ("return_value", "args", "kwargs"):
                    if key in context:
                        context[key] = MASK
        return True


# -- formatters ----------------------------------------------------------------------------


def _fields(record: logging.LogRecord) -> dict[str, object]:
    """task_id and inventory when known, then the other context and extra fields."""
    fields: dict[str, object] = {}
    for key in _KNOWN_FIELDS:
        value = record.__dict__.get(key)
        if value is not None:
            fields[key] = value
    for key, value in record.__dict__.items():
        if key not in _RECORD_ATTRIBUTES and key not in _KNOWN_FIELDS:
            fields[key] = value
    return fields


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    return record.exc_text or None


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (ISO 8601, UTC, milliseconds), level, logger,
    message, the known context fields, the other fields, and exc_info / stack_info."""

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, object] = {
            "time": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _fields(record).items():
            line.setdefault(key, value)  # a field named "level" must not hide the level
        exception = _exception_text(self, record)
        if exception:
            line["exc_info"] = exception
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TerminalFormatter(logging.Formatter):
    """``HH:MM:SS.mmm LEVEL   logger: message  key=value ...``, then any traceback."""

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, UTC)
        line = f"{created:%H:%M:%S}.{created.microsecond // 1000:03d} {record.levelname:<7} "
        line += f"{record.name}: {record.getMessage()}"
        fields = _fields(record)
        if fields:
            line += "  " + " ".join(f"{key}={_plain(value)}" for key, value in fields.items())
        exception = _exception_text(self, record)
        if exception:
            line += "\n" + exception
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def _plain(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if not text or any(c.isspace() or c in "\"'=" for c in text):
        return json.dumps(text, ensure_ascii=False)  # quoted, so the line still splits on spaces
    return text


# -- set-up --------------------------------------------------------------------------------


def _is_terminal(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except ValueError:  # a closed stream
        return False


def configure_logging(
    level: str | int = "INFO",
    *,
    json_output: bool | None = None,
    stream: IO[str] | None = None,
    quiet_tasks: frozenset[str] = frozenset(),
) -> None:
    """Send the root logger's records to ``stream`` (default: stderr) at ``level``.

    ``json_output=None`` picks JSON lines unless the stream is a terminal. Calling it
    again replaces the handler it installed before; handlers installed by others stay.
    ``quiet_tasks`` names tasks whose arguments and results are never logged.
    """
    if isinstance(level, str):
        levels = logging.getLevelNamesMapping()
        if level.upper() not in levels:
            raise ValueError(f"unknown log level {level!r}: use one of {', '.join(levels)}")
        level = levels[level.upper()]
    target = sys.stderr if stream is None else stream
    as_json = not _is_terminal(target) if json_output is None else json_output

    handler = logging.StreamHandler(target)
    handler.setFormatter(JsonFormatter() if as_json else TerminalFormatter())
    # Context first, so context fields are redacted too.
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactSecretsFilter())
    if quiet_tasks:
        handler.addFilter(TaskPayloadFilter(quiet_tasks))
    setattr(handler, _OWN_HANDLER, True)

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OWN_HANDLER, False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
