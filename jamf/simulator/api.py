"""The Jamf Pro API routes: tokens, computers inventory, mobile device detail.

As on Jamf Pro 11.30 and later: ``computers-inventory`` v1 to v4 (v4 is current), with
``computers-inventory/{id}`` and ``computers-inventory-detail/{id}`` for each version;
OAuth client credentials at ``/api/oauth/token`` and ``/api/v1/oauth/token``.

Sections: a list page and ``computers-inventory/{id}`` send the sections asked for, and
GENERAL alone when none is asked for, as Jamf does. ``computers-inventory-detail/{id}``
sends every section when none is asked for (Jamf's "return all sections") and only the
ones asked for otherwise, so a test can tell what a client asked for; Jamf itself
ignores the parameter there, which gives a client more, never less, than it asked for.
``mobile-devices/{id}/detail`` answers in Jamf's own detail shape, which has no sections.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import parse_qs

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from .auth import IssuedToken, bearer
from .draws import iso_ms
from .fleet import Fleet
from .mobile import detail as mobile_detail
from .query import QueryError, parse_paging, parse_sections
from .responses import dumps, jamf_error, json_array, json_response
from .rsql import RsqlError
from .state import Simulator

INVENTORY_VERSIONS = frozenset({"v1", "v2", "v3", "v4"})
JAMF_PRO_VERSION = "11.33.0-t1764633600"


def _sim(request: Request) -> Simulator:
    simulator: Simulator = request.app.state.simulator
    return simulator


# -- tokens ----------------------------------------------------------------------------


def _basic(header: str | None) -> tuple[str, str] | None:
    scheme, _, value = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(value.strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def _user_token(issued: IssuedToken) -> Response:
    return json_response({"token": issued.token, "expires": iso_ms(int(issued.expires_at * 1000))})


def _unauthorized(description: str = "Unauthorized") -> Response:
    return jamf_error(401, "INVALID_TOKEN", description)


async def oauth_token(request: Request) -> Response:
    """OAuth client credentials: form fields, or the client pair as HTTP Basic."""
    sim = _sim(request)
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    grant = form.get("grant_type", [""])[0]
    if grant != "client_credentials":
        return json_response(
            {"error": "unsupported_grant_type", "error_description": f"grant_type {grant!r}"}, 400
        )
    pair = (form.get("client_id", [""])[0], form.get("client_secret", [""])[0])
    if not pair[0]:
        pair = _basic(request.headers.get("authorization")) or pair
    principal = sim.principal(*pair, user=False)
    if principal is None:
        return json_response(
            {"error": "invalid_client", "error_description": "client authentication failed"}, 401
        )
    issued = sim.tokens.issue(principal)
    return json_response(
        {
            "access_token": issued.token,
            "scope": "api-role:1" if principal.can_read_inventory else "api-role:2",
            "token_type": "Bearer",
            "expires_in": max(1, round(sim.tokens.ttl)),
        }
    )


async def auth_token(request: Request) -> Response:
    """User credentials over HTTP Basic -> ``{"token", "expires"}``."""
    sim = _sim(request)
    pair = _basic(request.headers.get("authorization"))
    principal = sim.principal(*pair, user=True) if pair else None
    if principal is None:
        return jamf_error(401, "INVALID_CREDENTIALS", "Unauthorized")
    return _user_token(sim.tokens.issue(principal))


async def keep_alive(request: Request) -> Response:
    """A fresh token for a valid one; the old one stops working, as in Jamf Pro."""
    sim = _sim(request)
    token = bearer(request.headers.get("authorization"))
    principal = sim.tokens.lookup(token) if token else None
    if token is None or principal is None:
        return _unauthorized()
    sim.tokens.revoke(token)
    return _user_token(sim.tokens.issue(principal))


async def invalidate_token(request: Request) -> Response:
    sim = _sim(request)
    token = bearer(request.headers.get("authorization"))
    if token is None or sim.tokens.lookup(token) is None:
        return _unauthorized()
    sim.tokens.revoke(token)
    return Response(status_code=204)


def _authorize(request: Request) -> Response | None:
    """None when the bearer may read inventory, else the 401 or 403 to answer with."""
    sim = _sim(request)
    token = bearer(request.headers.get("authorization"))
    principal = sim.tokens.lookup(token) if token else None
    if principal is None:
        return _unauthorized()
    if not principal.can_read_inventory:
        return jamf_error(403, "INVALID_PRIVILEGE", "Forbidden")
    return None


async def jamf_pro_version(request: Request) -> Response:
    """What a client may read to choose API versions; any valid token will do."""
    token = bearer(request.headers.get("authorization"))
    if token is None or _sim(request).tokens.lookup(token) is None:
        return _unauthorized()
    return json_response({"version": JAMF_PRO_VERSION})


# -- inventory -------------------------------------------------------------------------


async def _page(request: Request, fleet: Fleet) -> Response:
    denied = _authorize(request)
    if denied is not None:
        return denied
    params, generator = request.query_params, fleet.generator
    try:
        page, size = parse_paging(params.get("page"), params.get("page-size"))
        sections = parse_sections(
            params.getlist("section"), generator.sections, generator.default_sections
        )
        sort = ",".join(params.getlist("sort"))
        ids = await anyio.to_thread.run_sync(fleet.query, params.get("filter", ""), sort)
    except RsqlError as exc:
        return jamf_error(400, "INVALID_RSQL_FILTER", str(exc), "filter")
    except QueryError as exc:
        return jamf_error(400, exc.code, str(exc), exc.field)
    chunk = ids[page * size : (page + 1) * size]
    sim = _sim(request)
    sim.stats.records(len(chunk))
    prefix = b'{"totalCount":%d,"results":[' % len(ids)
    body = json_array(_encoded(fleet, chunk, sections), prefix, b"]}")
    return StreamingResponse(body, media_type="application/json")


def _encoded(fleet: Fleet, ids: Sequence[int], sections: frozenset[str]) -> Iterator[str]:
    project = fleet.generator.project
    for ident in ids:
        record = fleet.get(ident)
        if record is not None:  # deleted since the id list was computed
            yield dumps(project(record, sections))


def _record(fleet: Fleet, raw_ident: str, what: str) -> dict[str, Any] | Response:
    """The live record with this id, or the 404 Jamf answers for it."""
    ident = int(raw_ident) if raw_ident.isdigit() else 0
    record = fleet.get(ident)
    if record is None:
        return jamf_error(404, "INVALID_ID", f"{what} with id {raw_ident} not found", "id")
    return record


def _unknown_version(request: Request) -> Response | None:
    if request.path_params["version"] in INVENTORY_VERSIONS:
        return None
    return jamf_error(404, "NOT_FOUND", f"no such resource: {request.url.path}")


async def computers_inventory(request: Request) -> Response:
    unknown = _unknown_version(request)
    if unknown is not None:
        return unknown
    return await _page(request, _sim(request).computers)


async def _computer(request: Request, default: frozenset[str] | None) -> Response:
    """One computer with the sections asked for; ``default`` (None: all) when none are."""
    unknown = _unknown_version(request) or _authorize(request)
    if unknown is not None:
        return unknown
    fleet = _sim(request).computers
    generator = fleet.generator
    try:
        sections = parse_sections(
            request.query_params.getlist("section"),
            generator.sections,
            generator.sections if default is None else default,
        )
    except QueryError as exc:
        return jamf_error(400, exc.code, str(exc), exc.field)
    found = _record(fleet, request.path_params["ident"], "Computer")
    if isinstance(found, Response):
        return found
    return json_response(generator.project(found, sections))


async def computer_by_id(request: Request) -> Response:
    """``computers-inventory/{id}``: GENERAL unless other sections are asked for."""
    return await _computer(request, _sim(request).computers.generator.default_sections)


async def computer_detail(request: Request) -> Response:
    """``computers-inventory-detail/{id}``: every section unless some are asked for."""
    return await _computer(request, None)


async def mobile_devices_detail(request: Request) -> Response:
    return await _page(request, _sim(request).mobile_devices)


async def mobile_device_detail(request: Request) -> Response:
    """Jamf's MobileDeviceDetailsV2 shape (``id``, ``serialNumber``, ``location``, ``ios``)."""
    denied = _authorize(request)
    if denied is not None:
        return denied
    found = _record(_sim(request).mobile_devices, request.path_params["ident"], "Mobile device")
    if isinstance(found, Response):
        return found
    return json_response(mobile_detail(found))


routes = [
    Route("/api/oauth/token", oauth_token, methods=["POST"]),
    Route("/api/v1/oauth/token", oauth_token, methods=["POST"]),
    Route("/api/v1/auth/token", auth_token, methods=["POST"]),
    Route("/api/v1/auth/keep-alive", keep_alive, methods=["POST"]),
    Route("/api/v1/auth/invalidate-token", invalidate_token, methods=["POST"]),
    Route("/api/v1/jamf-pro-version", jamf_pro_version, methods=["GET"]),
    Route("/api/{version}/computers-inventory", computers_inventory, methods=["GET"]),
    Route("/api/{version}/computers-inventory/{ident}", computer_by_id, methods=["GET"]),
    Route("/api/{version}/computers-inventory-detail/{ident}", computer_detail, methods=["GET"]),
    Route("/api/v2/mobile-devices/detail", mobile_devices_detail, methods=["GET"]),
    Route("/api/v2/mobile-devices/{ident}/detail", mobile_device_detail, methods=["GET"]),
]
