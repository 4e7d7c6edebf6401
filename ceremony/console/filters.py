"""The console's query strings read into the services' filters; pure.

Every refusal is an ``InvalidArgument`` naming the parameter and what it takes, so a
hand-edited URL gets a 400 page saying what is wrong, never a 500.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime

from ceremony.protocol import DEVICE_CURSOR_PATTERN, EVENT_CURSOR_PATTERN
from inventory.domain import (
    MAX_ASSET_TAG_LENGTH,
    MAX_USER_NAME_LENGTH,
    EnrollStatus,
    OSType,
    TrustLevel,
)
from inventory.errors import InvalidArgument, quoted
from inventory.services import audit
from inventory.services.audit import EventFilter
from inventory.services.devices import NO_SOURCE, DeviceFilter

DEVICE_PARAMS = ("q", "os", "status", "trust", "source", "owner", "after")
AUDIT_PARAMS = ("type", "result", "actor", "asset_tag", "since", "until", "after")
RESULTS = ("any", "success", "failed")
_MAX_SOURCE = 64
_MAX_ACTOR = audit.MAX_ACTOR_LENGTH
_PRINTABLE = re.compile(r"[\x20-\x7e]*")


def _text(params: Mapping[str, str], name: str, limit: int) -> str | None:
    value = params.get(name, "").strip()
    if not value:
        return None
    if len(value) > limit:
        raise InvalidArgument(f"{name}: at most {limit} characters, got {len(value)}")
    if not _PRINTABLE.fullmatch(value):
        raise InvalidArgument(f"{name}: {quoted(value)} may only hold printable ASCII")
    return value


def _choice(params: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str | None:
    value = params.get(name, "").strip()
    if not value:
        return None
    if value not in choices:
        raise InvalidArgument(f"{name}: {quoted(value)} is not one of {', '.join(choices)}")
    return value


def _cursor(params: Mapping[str, str], pattern: str) -> str | None:
    value = params.get("after", "").strip()
    if not value:
        return None
    if len(value) > 1024 or not re.fullmatch(pattern, value):
        raise InvalidArgument("after: not a page cursor of this listing (follow the Next link)")
    return value


def unknown(params: Mapping[str, str], known: tuple[str, ...]) -> None:
    extra = sorted(set(params) - set(known))
    if extra:
        raise InvalidArgument(
            f"unknown parameter {quoted(extra[0])}: this page takes {', '.join(known)}"
        )


def device_filter(
    params: Mapping[str, str], *, user: str | None
) -> tuple[DeviceFilter, str | None]:
    """The devices page's filter (``user``: only that user's devices) and page cursor."""
    unknown(params, DEVICE_PARAMS)
    os_type = _choice(params, "os", tuple(o.value for o in OSType))
    status = _choice(params, "status", tuple(s.value for s in EnrollStatus))
    trust = _choice(params, "trust", tuple(t.value for t in TrustLevel))
    owner = _text(params, "owner", MAX_USER_NAME_LENGTH)
    where = DeviceFilter(
        os_type=OSType(os_type) if os_type else None,
        enroll_status=EnrollStatus(status) if status else None,
        trust_level=TrustLevel(trust) if trust else None,
        source=_text(params, "source", _MAX_SOURCE),
        owner=owner,
        tag_prefix=_text(params, "q", MAX_ASSET_TAG_LENGTH),
        user=user,
    )
    return where, _cursor(params, DEVICE_CURSOR_PATTERN)


def parse_time(params: Mapping[str, str], name: str) -> datetime | None:
    """A time as a ``datetime-local`` field sends it (``2026-01-31T09:30``), or ISO 8601
    with a zone; one without a zone is UTC."""
    value = params.get(name, "").strip()
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgument(
            f"{name}: {quoted(value)} is not a time (use YYYY-MM-DDTHH:MM, UTC)"
        ) from None
    if not 1970 <= moment.year <= 9999 or len(value) > 40:
        raise InvalidArgument(f"{name}: {quoted(value)} is out of range")
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def audit_filter(params: Mapping[str, str]) -> tuple[EventFilter, int | None]:
    """The audit page's filter and the id of the event its page starts below."""
    unknown(params, AUDIT_PARAMS)
    kind = _choice(params, "type", audit.EVENT_TYPES)
    result = _choice(params, "result", RESULTS)
    since, until = parse_time(params, "since"), parse_time(params, "until")
    if since is not None and until is not None and until <= since:
        raise InvalidArgument("until: must be later than since")
    after = _cursor(params, EVENT_CURSOR_PATTERN)
    before = int(after) if after is not None else None
    if before is not None and not 0 < before < 2**63:
        raise InvalidArgument("after: not a page cursor of this listing (follow the Next link)")
    where = EventFilter(
        type=kind,
        success=None if result in (None, "any") else result == "success",
        actor=_text(params, "actor", _MAX_ACTOR),
        asset_tag=_text(params, "asset_tag", MAX_ASSET_TAG_LENGTH),
        since=since,
        until=until,
    )
    return where, before


__all__ = ["NO_SOURCE", "audit_filter", "device_filter", "parse_time", "unknown"]
