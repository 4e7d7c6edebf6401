"""The ceremony's text and date-time fields: what each accepts, said in its JSON Schema too.

The OpenAPI document promises what the service accepts, and schemathesis holds it to that
(``tests/integration/test_schemathesis.py``): each type here validates exactly what its
schema declares. Lengths are counted as sent, before surrounding whitespace is stripped.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    StringConstraints,
    WithJsonSchema,
)

from inventory.domain import MAX_ASSET_TAG_LENGTH

# What no text field may hold: control characters (C0, DEL and C1; PostgreSQL text cannot
# hold NUL at all, and the rest would break the one-line messages and audit events that
# echo a field), the line and paragraph separators, and lone surrogates (no encoding can
# store them). Declared in the schema too, so what it calls valid is what is accepted.
_UNSTORABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
TEXT_PATTERN = "^[^\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029]*$"


def _plain_text(value: str) -> str:
    if found := _UNSTORABLE.search(value):
        if found.group() == "\x00":
            raise ValueError("contains a NUL character")
        raise ValueError(f"contains the control character U+{ord(found.group()):04X}")
    return value.strip()


def _text_schema(max_length: int, min_length: int = 0) -> WithJsonSchema:
    schema: dict[str, Any] = {"type": "string", "maxLength": max_length, "pattern": TEXT_PATTERN}
    if min_length:
        schema["minLength"] = min_length
    return WithJsonSchema(schema)


# An RFC 3339 date-time (what JSON Schema's "date-time" format is), in the years 1000 to
# 2999 so that any offset converts to UTC: lax parsing would also take a number (Unix
# time), a date alone, or a time without seconds.
_DATE_TIME = re.compile(
    r"[12][0-9]{3}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    r"[Tt](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
    r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)


def _date_time(value: object) -> object:
    if isinstance(value, datetime):  # built in Python (the service's own data), not sent
        return value
    if not isinstance(value, str) or not _DATE_TIME.fullmatch(value):
        raise ValueError("must be an RFC 3339 date-time string, e.g. 2026-11-26T12:00:00Z")
    return value


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None


# Bounded as the inventory's columns are, so what is accepted here can be stored.
# Their length is counted as sent, then they are stripped of surrounding whitespace.
Text64 = Annotated[
    str, StringConstraints(max_length=64), AfterValidator(_plain_text), _text_schema(64)
]
Text128 = Annotated[
    str, StringConstraints(max_length=128), AfterValidator(_plain_text), _text_schema(128)
]
Token = Annotated[
    str,
    StringConstraints(min_length=1, max_length=256),
    AfterValidator(_plain_text),
    _text_schema(256, min_length=1),
]
ChallengeId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64),
    AfterValidator(_plain_text),
    _text_schema(64, min_length=1),
]
UTCTime = Annotated[
    AwareDatetime,
    BeforeValidator(_date_time),
    AfterValidator(_utc),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": f"^{_DATE_TIME.pattern}$"}),
]


def _serial(value: str) -> str:
    tag = value.strip(" ")
    if not _SERIAL.fullmatch(tag):
        raise ValueError("must be printable ASCII without tabs or control characters")
    return tag


_SERIAL = re.compile(r"[!-~](?:[ -~]*[!-~])?")
# The asset tag the device reports: printable ASCII, spaces inside kept (virtual machines
# report such serials) and spaces around it forgiven.
SerialNumber = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ASSET_TAG_LENGTH),
    AfterValidator(_serial),
    WithJsonSchema(
        {"type": "string", "minLength": 1, "maxLength": MAX_ASSET_TAG_LENGTH,
         "pattern": "^ *[!-~](?:[ -~]*[!-~])? *$"}
    ),
]  # fmt: skip
