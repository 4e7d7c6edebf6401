"""What the ceremony service reads of a request before any route sees it, bounded.

- The request line and headers: at most ``MAX_HEADER_BYTES`` in all, enforced by h11
  while it reads them, so a huge header is refused before it is buffered whole; and at
  most ``MAX_HEADERS`` of them, of at most ``MAX_HEADER_BYTES`` together, checked again
  by ``RequestLimits`` (h11 only bounds what it buffers while waiting for more: headers
  that arrive in one read are parsed whole). Both are answered 431.
- The body: at most ``MAX_BODY_BYTES`` (``RequestLimits``), by its Content-Length before
  reading, else while reading; answered 413.
- Inside the body, each base64 field: at most its own marshalled size (``x-max-bytes`` in
  ``/openapi.json``), checked as it is decoded (``ceremony.protocol.Blob``; the TPM
  structures' limit is ``ceremony.attestation.framing.MAX_STRUCTURE``); answered 400.

``devtrust serve`` runs uvicorn with h11 (``SERVER_OPTIONS``) rather than its default
httptools: httptools has no bound on header size or count, and one 200 MiB header was
read whole into memory. h11 stops at ``max_incomplete_event_size``; uvicorn then answers
400 in plain text, which ``BoundedH11Protocol`` turns into the 431 h11 meant.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from ceremony.protocol import MAX_BODY_BYTES

MAX_HEADER_BYTES = 16 * 1024  # the request line and all headers; h11's own default
MAX_HEADERS = 100  # Apache's LimitRequestFields; the device agent sends about six

_HEADERS_TOO_LARGE = f"the request's headers are larger than {MAX_HEADER_BYTES} bytes"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


async def _answer(send: Send, status: int, message: str) -> None:
    body = error_body(message)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestLimits:
    """Refuse requests with more than ``max_headers`` headers or ``max_header_bytes`` of
    them (431), and bodies over ``max_body`` bytes (413).

    The body is read here in full (it is small) and handed on in one piece: an error
    raised from inside the app's own read would reach FastAPI, which turns any of them
    into a 400 of its own shape.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_body: int = MAX_BODY_BYTES,
        max_headers: int = MAX_HEADERS,
        max_header_bytes: int = MAX_HEADER_BYTES,
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.max_headers = max_headers
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        if len(headers) > self.max_headers:
            await _answer(send, 431, f"the request has more than {self.max_headers} headers")
            return
        if sum(len(name) + len(value) for name, value in headers) > self.max_header_bytes:
            await _answer(send, 431, _HEADERS_TOO_LARGE)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            await self._too_large(send)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            if len(body) > self.max_body:
                await self._too_large(send)
                return
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        await _answer(send, 413, f"request body is larger than {self.max_body} bytes")


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, answering 431 with the error shape when the request line
    and headers outgrow ``h11_max_incomplete_event_size``; other malformed requests keep
    uvicorn's 400."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._status_hint = 400
        next_event = self.conn.next_event

        def noting_the_status() -> Any:
            try:
                return next_event()
            except h11.RemoteProtocolError as exc:
                self._status_hint = exc.error_status_hint
                raise

        self.conn.next_event = noting_the_status  # type: ignore[method-assign]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """On a TLS connection whose client presented a certificate (``--tls-client-ca``
        asks for one, and the handshake verified it and the client's key), every request
        carries it as the ASGI TLS extension's ``client_cert_chain`` (uvicorn passes none):
        ``scope["extensions"]["tls"]``, read by the access check."""
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            return
        tls = {"client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)],
               "tls_version": ssl_object.version()}  # fmt: skip
        app = self.app

        async def with_peer(scope: Scope, receive: Receive, send: Send) -> None:
            scope["extensions"] = {**scope.get("extensions", {}), "tls": tls}
            await app(scope, receive, send)

        self.app = with_peer

    def send_400_response(self, msg: str) -> None:
        if self._status_hint != 431:
            super().send_400_response(msg)
            return
        body = error_body(_HEADERS_TOO_LARGE)
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        response = h11.Response(
            status_code=431, headers=headers, reason=b"Request Header Fields Too Large"
        )
        self.transport.write(self.conn.send(response))
        self.transport.write(self.conn.send(h11.Data(data=body)))
        self.transport.write(self.conn.send(h11.EndOfMessage()))
        self.transport.close()


# What uvicorn.run / uvicorn.Config take for the service (``devtrust serve``, the tests).
SERVER_OPTIONS: dict[str, Any] = {
    "http": BoundedH11Protocol,
    "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
}
