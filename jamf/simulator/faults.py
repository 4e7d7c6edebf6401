"""Injected faults: what a Jamf Pro server and its load balancer do on a bad day.

Which request fails, and how, is drawn from one seeded RNG, so a run that sends its
requests in the same order meets the same faults. Inventory requests fail at the
configured rate; token requests at half of it (auth must be resilient too, but a sync
that cannot get a token tests little else).

A dropped connection is sent as response headers promising more bytes than follow; the
ASGI callable then returns, and uvicorn closes the socket (it logs "ASGI callable
returned without completing response.", which the server filters out).
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Awaitable, Callable, Iterable
from enum import StrEnum
from typing import Any

Send = Callable[[dict[str, Any]], Awaitable[None]]


class Fault(StrEnum):
    SERVER_ERROR = "500"
    BAD_GATEWAY = "502"
    UNAVAILABLE = "503"
    RATE_LIMITED = "429"
    HTML_PAGE = "html"
    TRUNCATED = "truncated"
    DROPPED = "dropped"


ALL_FAULTS: tuple[Fault, ...] = tuple(Fault)
TOKEN_RATE_FACTOR = 0.5


def parse_faults(names: Iterable[str]) -> tuple[Fault, ...]:
    kinds = tuple(dict.fromkeys(Fault(str(name).strip().lower()) for name in names))
    if not kinds:
        raise ValueError("at least one fault kind is needed")
    return kinds


class FaultInjector:
    def __init__(self, rate: float, seed: int, kinds: Iterable[Fault] = ALL_FAULTS) -> None:
        self._lock = threading.Lock()
        self.rate = rate
        self.seed = seed
        self.kinds = tuple(kinds)
        self._rng = random.Random(seed)  # noqa: S311 - reproducible, not secret

    def configure(
        self,
        rate: float | None = None,
        seed: int | None = None,
        kinds: Iterable[Fault] | None = None,
    ) -> None:
        with self._lock:
            if rate is not None:
                self.rate = rate
            if kinds is not None:
                self.kinds = tuple(kinds)
            if seed is not None:
                self.seed = seed
                self._rng = random.Random(seed)  # noqa: S311 - reproducible, not secret

    def draw(self, factor: float = 1.0) -> Fault | None:
        """The fault for the next request, or None. No draw at all while the rate is 0."""
        rate = self.rate * factor
        if rate <= 0:
            return None
        with self._lock:
            if self._rng.random() >= rate:
                return None
            return self._rng.choice(self.kinds)


_HTML_TIMEOUT = b"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Jamf Cloud - Request Timeout</title></head>
<body><h1>The request timed out</h1>
<p>Jamf Cloud could not complete your request in time. Try again in a few moments.</p>
</body></html>
"""
_HTML_GATEWAY = b"""<html><head><title>%d %s</title></head>
<body><center><h1>%d %s</h1></center><hr><center>awselb/2.0</center></body></html>
"""
_PARTIAL = (
    b'{"totalCount":1000,"results":[{"id":"1","udid":"2B5E1B6C-0D4E-4F1A-9C67-3E0B8A2D1F44",'
    b'"general":{"name":"Alice\'s MacBook Pro","lastIpAddress":"10.0.12.7","platform":"Mac",'
    b'"reportDate":"2026-11-20T10:00:00.123Z","remoteManagement":{"managed":true,'
)


def _json_error(status: int, code: str, description: str) -> bytes:
    error = {"code": code, "field": None, "description": description, "id": "0"}
    return json.dumps({"httpStatus": status, "errors": [error]}).encode()


async def _respond(
    send: Send, status: int, body: bytes, content_type: bytes, extra: list[tuple[bytes, bytes]]
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body)), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_fault(fault: Fault, send: Send) -> None:
    """Answer the request with ``fault`` instead of the real response."""
    json_type, html_type = b"application/json", b"text/html;charset=UTF-8"
    if fault is Fault.SERVER_ERROR:
        body = _json_error(500, "INTERNAL_ERROR", "Internal Server Error")
        await _respond(send, 500, body, json_type, [])
    elif fault in (Fault.BAD_GATEWAY, Fault.UNAVAILABLE):
        status = int(fault.value)
        reason = b"Bad Gateway" if status == 502 else b"Service Temporarily Unavailable"
        page = _HTML_GATEWAY % (status, reason, status, reason)
        await _respond(send, status, page, html_type, [])
    elif fault is Fault.RATE_LIMITED:
        body = _json_error(429, "TOO_MANY_REQUESTS", "Too Many Requests")
        limits = [
            (b"retry-after", b"1"),
            (b"x-ratelimit-limit", b"100"),
            (b"x-ratelimit-remaining", b"0"),
            (b"x-ratelimit-reset", b"1"),
        ]
        await _respond(send, 429, body, json_type, limits)
    elif fault is Fault.HTML_PAGE:
        await _respond(send, 200, _HTML_TIMEOUT, html_type, [])
    elif fault is Fault.TRUNCATED:
        await _respond(send, 200, _PARTIAL, json_type, [])
    else:
        headers = [(b"content-type", json_type), (b"content-length", b"%d" % (len(_PARTIAL) * 8))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": _PARTIAL, "more_body": True})
        # Returning here, short of the promised length, makes uvicorn close the socket.
