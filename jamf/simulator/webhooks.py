"""The simulator's Jamf Pro webhooks: every change made through ``/_sim/`` is posted, as
Jamf Pro posts it, to ``--webhook-url``.

    POST /_sim/devices                ComputerAdded
    PATCH /_sim/devices/{id}          ComputerInventoryCompleted (a new inventory report)
    POST /_sim/mobile-devices         MobileDeviceEnrolled
    PATCH /_sim/mobile-devices/{id}   MobileDeviceInventoryCompleted
    DELETE /_sim/mobile-devices/{id}  MobileDeviceUnEnrolled

Deleting a computer sends nothing: Jamf Pro has no webhook for it (a full sync finds it
gone). The bodies have Jamf's shape: ``{"webhook": {"id", "name", "webhookEvent",
"eventTimestamp"}, "event": {...}}``, the device in ``event`` (``jssID``,
``serialNumber``, ...) or, for ``ComputerInventoryCompleted``, in ``event.computer``.

They are sent by one background thread, in order, so an admin call never waits for the
receiver; a full queue drops the webhook (counted, as Jamf Pro's own delivery is best
effort). ``/_sim/stats`` counts what was sent, failed and dropped.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Mapping
from typing import Any

import httpx

from .config import SimulatorConfig

log = logging.getLogger("jamf.simulator.webhooks")

QUEUE_SIZE = 10_000
# The webhook ids Jamf Pro would show in its settings, one per event.
WEBHOOK_IDS = {
    "ComputerAdded": 1,
    "ComputerInventoryCompleted": 2,
    "MobileDeviceEnrolled": 3,
    "MobileDeviceInventoryCompleted": 4,
    "MobileDeviceUnEnrolled": 5,
}
_STOP = object()


def _section(record: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = record.get(name)
    return value if isinstance(value, Mapping) else {}


def computer_event(record: Mapping[str, Any]) -> dict[str, Any]:
    """A computer as Jamf Pro's computer webhooks describe it."""
    general, hardware = _section(record, "general"), _section(record, "hardware")
    system, user = _section(record, "operatingSystem"), _section(record, "userAndLocation")
    return {
        "jssID": int(record["id"]),
        "udid": record.get("udid") or general.get("udid") or "",
        "deviceName": general.get("name") or "",
        "model": hardware.get("model") or "",
        "serialNumber": hardware.get("serialNumber") or "",
        "macAddress": hardware.get("macAddress") or "",
        "alternateMacAddress": hardware.get("altMacAddress") or "",
        "osVersion": system.get("version") or "",
        "osBuild": system.get("build") or "",
        "ipAddress": general.get("lastIpAddress") or "",
        "reportedIpAddress": general.get("lastReportedIp") or "",
        "username": user.get("username") or "",
        "realName": user.get("realname") or "",
        "emailAddress": user.get("email") or "",
        "userDirectoryID": "-1",
        "building": "",
        "department": "",
        "phone": "",
        "position": user.get("position") or "",
        "room": "",
        "managementId": general.get("managementId") or "",
    }


def mobile_event(record: Mapping[str, Any]) -> dict[str, Any]:
    """A mobile device as Jamf Pro's mobile device webhooks describe it."""
    general, hardware = _section(record, "general"), _section(record, "hardware")
    user = _section(record, "userAndLocation")
    return {
        "jssID": int(record["mobileDeviceId"]),
        "udid": general.get("udid") or "",
        "deviceName": general.get("displayName") or "",
        "model": hardware.get("model") or "",
        "modelDisplay": hardware.get("model") or "",
        "product": hardware.get("modelIdentifier") or "",
        "serialNumber": hardware.get("serialNumber") or "",
        "osVersion": general.get("osVersion") or "",
        "osBuild": general.get("osBuild") or "",
        "version": general.get("osVersion") or "",
        "userDirectoryID": "-1",
        "username": user.get("username") or "",
        "wifiMacAddress": hardware.get("wifiMacAddress") or "",
        "bluetoothMacAddress": hardware.get("bluetoothMacAddress") or "",
        "imei": hardware.get("imei") or "",
        "icciID": hardware.get("iccid") or "",
    }


# (fleet kind, admin action) -> the event Jamf Pro sends, and whether the device is nested.
EVENTS: dict[tuple[str, str], tuple[str, bool]] = {
    ("computers", "add"): ("ComputerAdded", False),
    ("computers", "change"): ("ComputerInventoryCompleted", True),
    ("mobile-devices", "add"): ("MobileDeviceEnrolled", False),
    ("mobile-devices", "change"): ("MobileDeviceInventoryCompleted", False),
    ("mobile-devices", "delete"): ("MobileDeviceUnEnrolled", False),
}


class WebhookSender:
    """Posts webhooks to one URL from a background thread, in the order they were sent."""

    def __init__(self, config: SimulatorConfig) -> None:
        assert config.webhook_url is not None
        self.url = config.webhook_url
        self.clock = config.clock
        headers = {"Content-Type": "application/json"}
        if config.webhook_header:
            name, _, value = config.webhook_header.partition(":")
            headers[name.strip()] = value.strip()
        auth = None
        if config.webhook_username is not None and config.webhook_password is not None:
            auth = httpx.BasicAuth(config.webhook_username, config.webhook_password)
        self.http = httpx.Client(headers=headers, auth=auth, timeout=10.0)
        self.queue: queue.Queue[object] = queue.Queue(QUEUE_SIZE)
        self.counts = {"sent": 0, "failed": 0, "dropped": 0}
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="jamf-webhooks", daemon=True)
        self.thread.start()

    def changed(self, kind: str, action: str, record: Mapping[str, Any]) -> None:
        """A device of ``kind`` was added, changed or deleted: post its webhook, if Jamf
        Pro has one for that. Never blocks."""
        found = EVENTS.get((kind, action))
        if found is None:
            return
        name, nested = found
        device = computer_event(record) if kind == "computers" else mobile_event(record)
        body = {
            "webhook": {
                "id": WEBHOOK_IDS[name],
                "name": f"devtrust simulator {name}",
                "webhookEvent": name,
                "eventTimestamp": int(self.clock().timestamp() * 1000),
            },
            "event": {"computer": device} if nested else device,
        }
        try:
            self.queue.put_nowait(body)
        except queue.Full:
            self._count("dropped")

    def _count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    def _run(self) -> None:
        while (body := self.queue.get()) is not _STOP:
            try:
                response = self.http.post(self.url, json=body)
                if response.status_code >= 300:
                    log.warning(
                        "webhook answered %d: %s", response.status_code, response.text[:200]
                    )
                    self._count("failed")
                else:
                    self._count("sent")
            except httpx.HTTPError as exc:
                log.warning("webhook to %s failed: %s", self.url, exc)
                self._count("failed")

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {**self.counts, "queued": self.queue.qsize()}

    def close(self) -> None:
        self.queue.put(_STOP)
        self.thread.join(timeout=5)
        self.http.close()
