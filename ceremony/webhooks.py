"""``POST /v1/webhooks/jamf``: Jamf Pro's webhooks, each queueing one device's sync.

Jamf Pro posts ``{"webhook": {"id", "name", "webhookEvent", "eventTimestamp"}, "event":
{...}}``. The device is ``event.jssID`` (``ComputerAdded`` and the mobile device events)
or ``event.computer.jssID`` (``ComputerInventoryCompleted``, ``ComputerCheckIn``,
``ComputerPolicyFinished``); both places are read for every event. The sync itself runs
on the worker (``jamf.device_sync``); a burst for one device queues one sync.

Authentication, as Jamf Pro's webhook settings offer it: Basic auth
(``DEVTRUST_JAMF_WEBHOOK_USERNAME`` / ``DEVTRUST_JAMF_WEBHOOK_PASSWORD``) or a header
(``DEVTRUST_JAMF_WEBHOOK_HEADER``: ``DEVTRUST_JAMF_WEBHOOK_TOKEN``), each compared in
constant time. Neither configured: the route answers 404 naming the settings.

Answers: 202 ``{"status": "queued" | "coalesced" | "ignored", ...}``; 401 for a missing
or wrong credential (checked before the body is read); 400 for a body that is not a
Jamf webhook, with what is wrong; 503 when the queue cannot be reached.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from collections.abc import Callable
from typing import Any, Literal

from fastapi import FastAPI, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPBasic
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from ceremony import answers
from inventory.errors import DevtrustError, InvalidArgument, NotFound, one_line, quoted
from inventory.settings import Settings

log = logging.getLogger("devtrust.serve.webhooks")

PATH = "/v1/webhooks/jamf"
COMPUTER, MOBILE_DEVICE = "computer", "mobile-device"

# The events that say a device's inventory record may have changed, and its kind.
SYNC_EVENTS: dict[str, str] = {
    "ComputerAdded": COMPUTER,
    "ComputerCheckIn": COMPUTER,
    "ComputerInventoryCompleted": COMPUTER,
    "ComputerPolicyFinished": COMPUTER,
    "ComputerPushCapabilityChanged": COMPUTER,
    "MobileDeviceEnrolled": MOBILE_DEVICE,
    "MobileDeviceUnEnrolled": MOBILE_DEVICE,
    "MobileDeviceCheckIn": MOBILE_DEVICE,
    "MobileDeviceInventoryCompleted": MOBILE_DEVICE,
    "MobileDeviceCommandCompleted": MOBILE_DEVICE,
    "MobileDevicePushSent": MOBILE_DEVICE,
}
MAX_JSS_ID = 2**63 - 1

# (kind, Jamf id, event name) -> True when queued, False when one was queued already.
Submit = Callable[[str, str, str], bool]


class QueueUnavailable(DevtrustError):
    http_status = 503


class WebhookAccepted(BaseModel):
    status: Literal["queued", "coalesced", "ignored"]
    event: str
    kind: str | None = None
    jamf_id: str | None = None
    reason: str | None = None


# What the document declares of the body; the route reads it itself, after the credential.
BODY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["webhook", "event"],
    "properties": {
        "webhook": {
            "type": "object",
            "required": ["webhookEvent"],
            "properties": {
                "id": {"type": "integer"},
                "name": {"type": "string"},
                "webhookEvent": {"type": "string", "minLength": 1, "maxLength": 100},
                "eventTimestamp": {"type": "integer"},
            },
        },
        "event": {
            "type": "object",
            "description": "the device is jssID, or computer.jssID",
            "properties": {
                "jssID": {"type": "integer", "minimum": 1},
                "computer": {
                    "type": "object",
                    "properties": {"jssID": {"type": "integer", "minimum": 1}},
                },
            },
        },
    },
}


class JamfWebhooks:
    """Checks a webhook's credential and body, and hands its device to ``submit``."""

    def __init__(self, settings: Settings, submit: Submit | None) -> None:
        self.submit = submit
        self.mobile_devices = settings.jamf_mobile_devices
        self.username = settings.jamf_webhook_username.encode()
        password = settings.jamf_webhook_password
        token = settings.jamf_webhook_token
        self.password = password.get_secret_value().encode() if password else None
        self.token = token.get_secret_value().encode() if token else None
        self.header = settings.jamf_webhook_header.strip() or "X-Devtrust-Webhook-Token"

    @property
    def enabled(self) -> bool:
        return bool(self.password or self.token)

    def authenticated(self, request: Request) -> bool:
        """Basic auth or the header, whichever is configured; constant-time comparisons."""
        ok = False
        if self.password is not None:
            user, password = _basic(request.headers.get("authorization", ""))
            same_user = hmac.compare_digest(user, self.username)
            same_password = hmac.compare_digest(password, self.password)
            ok = same_user and same_password
        if self.token is not None:
            given = request.headers.get(self.header, "").encode("latin-1", "replace")
            ok = hmac.compare_digest(given, self.token) or ok
        return ok

    def missing_credential(self) -> str:
        ways = []
        if self.password is not None:
            ways.append("Basic auth")
        if self.token is not None:
            ways.append(f"the {self.header} header")
        return " or ".join(ways)

    def accept(self, body: bytes) -> WebhookAccepted:
        event_name, kind, jamf_id = parse(body)
        if kind is None or jamf_id is None:
            log.info("Jamf webhook %s ignored: not an event that changes a device", event_name)
            return WebhookAccepted(status="ignored", event=event_name,
                                   reason="not an event that changes a device")  # fmt: skip
        if kind == MOBILE_DEVICE and not self.mobile_devices:
            reason = "mobile devices are not synced (DEVTRUST_JAMF_MOBILE_DEVICES)"
            log.info(
                "Jamf webhook %s for mobile device %s ignored: %s", event_name, jamf_id, reason
            )
            return WebhookAccepted(status="ignored", event=event_name, kind=kind,
                                   jamf_id=jamf_id, reason=reason)  # fmt: skip
        assert self.submit is not None
        try:
            queued = self.submit(kind, jamf_id, event_name)
        except Exception as exc:  # kombu and redis raise many kinds; Jamf needs one line
            log.error("cannot queue the sync of %s %s: %s", kind, jamf_id, one_line(exc))
            raise QueueUnavailable(
                f"cannot queue the device's sync: {one_line(exc, limit=200)}"
            ) from None
        # A coalesced one is routine (every check-in of a busy Mac): not worth a line.
        log.log(logging.INFO if queued else logging.DEBUG, "Jamf webhook %s for %s %s: %s",
                event_name, kind, jamf_id, "queued" if queued else "coalesced")  # fmt: skip
        return WebhookAccepted(status="queued" if queued else "coalesced", event=event_name,
                               kind=kind, jamf_id=jamf_id)  # fmt: skip


def _basic(authorization: str) -> tuple[bytes, bytes]:
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        return b"", b""
    try:
        decoded = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return b"", b""
    user, _, password = decoded.partition(b":")
    return user, password


def parse(body: bytes) -> tuple[str, str | None, str | None]:
    """(event name, device kind, Jamf id); kind and id None for an event we ignore.

    A body that is not a Jamf webhook raises ``InvalidArgument`` saying what is wrong."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidArgument("request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise InvalidArgument(
            'request body must be a Jamf webhook: {"webhook": {...}, "event": {...}}'
        )
    webhook = value.get("webhook")
    if not isinstance(webhook, dict):
        raise InvalidArgument("webhook: missing or not an object")
    for field, expected in (("id", int), ("eventTimestamp", int), ("name", str)):
        if field in webhook and not _is(webhook[field], expected):
            raise InvalidArgument(f"webhook.{field}: must be {_WHAT[expected]}")
    name = webhook.get("webhookEvent")
    if not isinstance(name, str) or not name.strip():
        raise InvalidArgument("webhook.webhookEvent: missing or not a string")
    if not name.isprintable() or len(name) > 100:
        raise InvalidArgument(f"webhook.webhookEvent: {quoted(name)} is not an event name")
    event = value.get("event")
    if not isinstance(event, dict):
        raise InvalidArgument("event: missing or not an object")
    jss_id = _jss_id(event, "event")
    computer = event.get("computer", {})
    if not isinstance(computer, dict):
        raise InvalidArgument("event.computer: must be an object")
    nested = _jss_id(computer, "event.computer")
    kind = SYNC_EVENTS.get(name)
    if kind is None:
        return name, None, None
    if jss_id is None and nested is None:
        raise InvalidArgument(f"event.jssID: missing: a {name} webhook names its device by jssID")
    return name, kind, jss_id or nested


_WHAT = {int: "an integer", str: "a string"}


def _is(value: object, kind: type) -> bool:
    return isinstance(value, kind) and not isinstance(value, bool)


def _jss_id(holder: dict[str, Any], where: str) -> str | None:
    """``holder["jssID"]``: a positive integer, as Jamf Pro sends it; None when absent."""
    if "jssID" not in holder:
        return None
    value = holder["jssID"]
    if not _is(value, int) or not 0 < value <= MAX_JSS_ID:
        raise InvalidArgument(
            f"{where}.jssID: must be a positive integer, not {quoted(json.dumps(value))}"
        )
    return str(value)


def webhook_routes(app: FastAPI, hooks: JamfWebhooks) -> None:
    basic = HTTPBasic(scheme_name="jamfWebhookBasic", auto_error=False,
                      description="DEVTRUST_JAMF_WEBHOOK_USERNAME / _PASSWORD")  # fmt: skip
    header = APIKeyHeader(name=hooks.header, scheme_name="jamfWebhookHeader", auto_error=False,
                          description="DEVTRUST_JAMF_WEBHOOK_TOKEN in this header")  # fmt: skip

    @app.post(
        PATH,
        status_code=202,
        response_model=WebhookAccepted,
        responses=answers.WEBHOOKS,
        dependencies=[Security(basic), Security(header)],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": BODY_SCHEMA}},
            }
        },
    )
    async def jamf_webhook(request: Request) -> Any:
        """A Jamf Pro webhook: queue a sync of the device it names (202). Events that do
        not change a device are accepted and ignored; a burst for one device queues one
        sync."""
        if not hooks.enabled:
            raise NotFound(
                "Jamf webhooks are off: set DEVTRUST_JAMF_WEBHOOK_PASSWORD (Basic auth) or "
                "DEVTRUST_JAMF_WEBHOOK_TOKEN (header auth) to take them"
            )
        if not hooks.authenticated(request):
            given = "authorization" in request.headers or hooks.header in request.headers
            message = (
                "the webhook credential is not valid"
                if given
                else f"no webhook credential: Jamf Pro must send {hooks.missing_credential()}"
            )
            return JSONResponse(
                {"error": message},
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="devtrust webhooks"'},
            )
        body = await request.body()
        result = await run_in_threadpool(hooks.accept, body)
        return JSONResponse(result.model_dump(exclude_none=True), status_code=202)
