"""The simulator's ASGI app: the API and admin routes behind latency, faults and counters."""

from __future__ import annotations

import asyncio
import re

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import admin, api
from .config import SimulatorConfig
from .faults import TOKEN_RATE_FACTOR, Fault, send_fault
from .responses import BadRequest, bad_request, method_not_allowed, not_found
from .state import Simulator

_ENDPOINTS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), name)
    for pattern, name in (
        (r"^/api(/v1)?/oauth/token$", "oauth/token"),
        (r"^/api/v1/auth/token$", "auth/token"),
        (r"^/api/v1/auth/keep-alive$", "auth/keep-alive"),
        (r"^/api/v1/auth/invalidate-token$", "auth/invalidate-token"),
        (r"^/api/v\d+/computers-inventory$", "computers-inventory"),
        (r"^/api/v\d+/computers-inventory(-detail)?/[^/]+$", "computers-inventory/{id}"),
        (r"^/api/v2/mobile-devices/detail$", "mobile-devices/detail"),
        (r"^/api/v2/mobile-devices/[^/]+/detail$", "mobile-devices/{id}/detail"),
        (r"^/_sim/", "_sim"),
    )
)
#: Share of the fault rate each endpoint suffers; others never fail on purpose.
_FAULT_FACTORS = {
    "computers-inventory": 1.0,
    "computers-inventory/{id}": 1.0,
    "mobile-devices/detail": 1.0,
    "mobile-devices/{id}/detail": 1.0,
    "oauth/token": TOKEN_RATE_FACTOR,
    "auth/token": TOKEN_RATE_FACTOR,
    "auth/keep-alive": TOKEN_RATE_FACTOR,
    "auth/invalidate-token": TOKEN_RATE_FACTOR,
}


def endpoint_of(path: str) -> str:
    for pattern, name in _ENDPOINTS:
        if pattern.match(path):
            return name
    return "other"


class SimulatorMiddleware:
    """Counts every request, delays API requests and answers some with a fault."""

    def __init__(self, app: ASGIApp, simulator: Simulator) -> None:
        self.app = app
        self.simulator = simulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sim = self.simulator
        endpoint = endpoint_of(scope["path"])
        status = "dropped"  # unless a response starts
        sim.stats.started(endpoint)

        async def tracking_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = str(message["status"])
            await send(message)

        try:
            if endpoint != "_sim" and sim.latency_ms > 0:
                await asyncio.sleep(sim.latency_ms / 1000)
            factor = _FAULT_FACTORS.get(endpoint)
            fault = sim.faults.draw(factor) if factor else None
            if fault is None:
                await self.app(scope, receive, tracking_send)
                return
            sim.stats.fault(fault.value)
            await send_fault(fault, tracking_send)
            if fault is Fault.DROPPED:
                status = "dropped"
        finally:
            sim.stats.request(endpoint, status)


def create_app(config: SimulatorConfig) -> Starlette:
    """A fresh simulator (fleets, tokens, faults) behind an ASGI app.

    The ``Simulator`` is at ``app.state.simulator`` for in-process callers.
    """
    simulator = Simulator(config)
    app = Starlette(
        routes=[*api.routes, *admin.routes],
        middleware=[Middleware(SimulatorMiddleware, simulator=simulator)],
        exception_handlers={
            404: not_found,
            405: method_not_allowed,
            BadRequest: bad_request,
        },
    )
    app.state.simulator = simulator
    return app
