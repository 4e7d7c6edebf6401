"""Response helpers shared by the API and the admin routes: Jamf-shaped errors, fast JSON."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

CHUNK_RECORDS = 100


class BadRequest(Exception):
    """A request the admin routes refuse; the message says why."""


def dumps(value: Any) -> str:
    """Compact JSON (orjson: a tenth of the stdlib's time, which the fleet's pages need)."""
    return orjson.dumps(value).decode()


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(value), status, headers, media_type="application/json")


def jamf_error(status: int, code: str, description: str, field: str | None = None) -> Response:
    """The error body Jamf Pro's API answers with."""
    error = {"code": code, "field": field, "description": description, "id": "0"}
    return json_response({"httpStatus": status, "errors": [error]}, status)


async def not_found(request: Request, exc: Exception) -> Response:
    return jamf_error(404, "NOT_FOUND", f"no such resource: {request.url.path}")


async def bad_request(request: Request, exc: Exception) -> Response:
    return jamf_error(400, "INVALID_REQUEST", str(exc))


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    return jamf_error(405, "METHOD_NOT_ALLOWED", f"{request.method} is not allowed here")


async def json_array(
    items: Iterable[str], prefix: bytes = b"[", suffix: bytes = b"]"
) -> AsyncIterator[bytes]:
    """Stream already-encoded JSON values as one array, a chunk at a time."""
    yield prefix
    first = True
    parts: list[str] = []
    for item in items:
        parts.append(item)
        if len(parts) >= CHUNK_RECORDS:
            yield (("" if first else ",") + ",".join(parts)).encode()
            first, parts = False, []
            await asyncio.sleep(0)  # let concurrent requests progress between chunks
    if parts:
        yield (("" if first else ",") + ",".join(parts)).encode()
    yield suffix
