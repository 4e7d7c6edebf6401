"""Every error a user of the inventory can meet, each carrying the message they see.

The CLI and the HTTP service print ``str(error)`` as one line and map the class to an
exit status or a 4xx; nothing here ever needs a traceback to be understood.
"""

from __future__ import annotations


class DevtrustError(Exception):
    """Base class: the message is written for the person at the keyboard."""

    #: HTTP status the ceremony service answers with.
    http_status = 400


class InvalidArgument(DevtrustError):
    """A value given by the user is malformed (unknown OS, empty asset tag, bad duration)."""


class NotFound(DevtrustError):
    http_status = 404


class AlreadyExists(DevtrustError):
    http_status = 409


class TokenInvalid(DevtrustError):
    """An enrollment token that is unknown, expired, already used or of the wrong kind."""

    http_status = 403


class AccessDenied(DevtrustError):
    http_status = 403


class Unauthenticated(DevtrustError):
    http_status = 401


class InvalidPreference(InvalidArgument):
    """A cluster preference value was refused; the message names the field."""


class ConfigurationError(DevtrustError):
    """The settings themselves are wrong (a bad URL, an unreadable ``_FILE``)."""


class DatabaseUnavailable(DevtrustError):
    http_status = 503


#: How much of a value a message quotes: enough to recognise it, never a whole 10 kB
#: argument echoed back to the terminal or stored in the audit log.
QUOTE_LIMIT = 64


def quoted(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``value`` as a message quotes user input: ``repr`` of at most ``limit`` characters,
    cut with an ellipsis and the full length when longer. Every error that echoes input
    goes through here."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[: limit - 1] + chr(0x2026)!r} ({len(text):,} characters)"


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + chr(0x2026)


def one_line(exc: BaseException, limit: int = 200) -> str:
    """A library's exception as one line for a user: its message with line breaks and runs
    of spaces folded, cut at ``limit`` characters; its class name when it has no message."""
    text = " ".join(str(exc).split())
    if not text:
        return type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
