"""Test controls under ``/_sim/``: change the fleet, the faults and read the counters.

No authentication: these exist for tests, demos and benchmarks on loopback.

    POST   /_sim/devices              add a computer (body: optional record overrides)
    GET    /_sim/devices/{id}         the full record
    PATCH  /_sim/devices/{id}         a new inventory report (body: optional overrides)
    DELETE /_sim/devices/{id}         remove it
    (the same under /_sim/mobile-devices for the iOS fleet)
    GET    /_sim/fleet?kind=computers|mobile-devices   every current device, streamed
    GET    /_sim/faults, PUT /_sim/faults   fault_rate, latency_ms, fault_seed,
                                            fault_kinds, token_ttl
    DELETE /_sim/tokens               expire every token now
    GET    /_sim/stats                requests by endpoint and status, faults, tokens,
                                      webhooks sent
With ``--webhook-url``, every add, change and delete made here is posted as the Jamf Pro
webhook it stands for, in the background (``jamf.simulator.webhooks``).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from .faults import parse_faults
from .fleet import Fleet
from .responses import BadRequest, dumps, jamf_error, json_array, json_response
from .state import Simulator
from .webhooks import WebhookSender

_KINDS = {"devices": "computers", "computers": "computers", "mobile-devices": "mobile-devices"}


def _sim(request: Request) -> Simulator:
    simulator: Simulator = request.app.state.simulator
    return simulator


def _fleet(request: Request, kind: str | None) -> Fleet:
    fleet = _sim(request).fleet(_KINDS.get(kind or "", ""))
    if fleet is None:
        raise BadRequest(f"unknown kind {kind!r}: use computers or mobile-devices")
    return fleet


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadRequest("the body must be a JSON object")
    return value


def _webhooks(request: Request) -> WebhookSender | None:
    """The app's webhook sender, started on the first change (None: no --webhook-url)."""
    state = request.app.state
    sender: WebhookSender | None = getattr(state, "webhooks", None)
    if sender is None and _sim(request).config.webhook_url:
        sender = state.webhooks = WebhookSender(_sim(request).config)
    return sender


def _changed(request: Request, action: str, record: dict[str, Any] | None) -> None:
    sender = _webhooks(request)
    if sender is not None and record is not None:
        sender.changed(_KINDS[request.path_params["kind"]], action, record)


def _ident(request: Request) -> int:
    raw = request.path_params["ident"]
    return int(raw) if raw.isdigit() else 0


async def add_device(request: Request) -> Response:
    fleet = _fleet(request, request.path_params["kind"])
    record = fleet.add(await _body(request))
    _changed(request, "add", record)
    return json_response(record, 201)


async def device(request: Request) -> Response:
    fleet, ident = _fleet(request, request.path_params["kind"]), _ident(request)
    if request.method == "DELETE":
        before = fleet.get(ident)
        found = fleet.delete(ident)
        if found:
            _changed(request, "delete", before)
        return Response(status_code=204) if found else _missing(ident)
    if request.method == "PATCH":
        record = fleet.change(ident, await _body(request))
        _changed(request, "change", record)
    else:
        record = fleet.get(ident)
    return _missing(ident) if record is None else json_response(record)


def _missing(ident: int) -> Response:
    return jamf_error(404, "INVALID_ID", f"no device with id {ident}", "id")


async def fleet_listing(request: Request) -> Response:
    fleet = _fleet(request, request.query_params.get("kind", "computers"))
    items = (dumps(summary) for summary in fleet.summaries())
    return StreamingResponse(json_array(items), media_type="application/json")


def _fault_settings(sim: Simulator) -> dict[str, Any]:
    return {
        "fault_rate": sim.faults.rate,
        "latency_ms": sim.latency_ms,
        "fault_seed": sim.faults.seed,
        "fault_kinds": [kind.value for kind in sim.faults.kinds],
        "token_ttl": sim.tokens.ttl,
    }


async def faults(request: Request) -> Response:
    sim = _sim(request)
    if request.method == "PUT":
        _configure(sim, await _body(request))
    return json_response(_fault_settings(sim))


def _configure(sim: Simulator, body: dict[str, Any]) -> None:
    unknown = set(body) - {"fault_rate", "latency_ms", "fault_seed", "fault_kinds", "token_ttl"}
    if unknown:
        raise BadRequest(f"unknown setting {sorted(unknown)[0]!r}")
    try:
        rate = float(body["fault_rate"]) if "fault_rate" in body else None
        latency = float(body["latency_ms"]) if "latency_ms" in body else None
        ttl = float(body["token_ttl"]) if "token_ttl" in body else None
        seed = int(body["fault_seed"]) if body.get("fault_seed") is not None else None
        kinds = parse_faults(body["fault_kinds"]) if "fault_kinds" in body else None
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"invalid setting: {exc}") from None
    if rate is not None and not 0.0 <= rate <= 1.0:
        raise BadRequest(f"fault_rate must be between 0 and 1, not {rate}")
    if latency is not None and latency < 0:
        raise BadRequest(f"latency_ms must be 0 or more, not {latency}")
    if ttl is not None and ttl < 1:
        raise BadRequest(f"token_ttl must be at least 1 second, not {ttl}")
    sim.faults.configure(rate=rate, seed=seed, kinds=kinds)
    if latency is not None:
        sim.latency_ms = latency
    if ttl is not None:
        sim.tokens.ttl = ttl


async def expire_tokens(request: Request) -> Response:
    return json_response({"expired": _sim(request).tokens.expire_all()})


async def stats(request: Request) -> Response:
    sim = _sim(request)
    snapshot = sim.stats.snapshot()
    snapshot["tokens"] = {"issued": sim.tokens.issued, "active": sim.tokens.active()}
    snapshot["fleet"] = {
        "computers": len(sim.computers),
        "mobile_devices": len(sim.mobile_devices),
        "computers_version": sim.computers.version,
        "mobile_devices_version": sim.mobile_devices.version,
    }
    sender: WebhookSender | None = getattr(request.app.state, "webhooks", None)
    snapshot["webhooks"] = sender.stats() if sender else None
    return json_response(snapshot)


routes = [
    Route("/_sim/fleet", fleet_listing, methods=["GET"]),
    Route("/_sim/faults", faults, methods=["GET", "PUT"]),
    Route("/_sim/tokens", expire_tokens, methods=["DELETE"]),
    Route("/_sim/stats", stats, methods=["GET"]),
    Route("/_sim/{kind}", add_device, methods=["POST"]),
    Route("/_sim/{kind}/{ident}", device, methods=["GET", "PATCH", "DELETE"]),
]
