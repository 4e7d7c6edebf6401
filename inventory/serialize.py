"""Plain-dict views of the domain records, for JSON and YAML output and HTTP bodies."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from inventory.domain import AuditEvent, CollectedData, Device, SyncRun, User


def _time(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def device_to_dict(device: Device) -> dict[str, Any]:
    credential = device.credential
    profile = device.profile
    return {
        "id": device.id,
        "os_type": device.os_type.value,
        "asset_tag": device.asset_tag,
        "enroll_status": device.enroll_status.value,
        "owner": device.owner,
        "assigned_user": device.assigned_user,
        "credential": None
        if credential is None
        else {
            "id": credential.id,
            "public_key": base64.b64encode(credential.public_key).decode()
            if credential.public_key
            else None,
            "ek_cert_serial": credential.ek_cert_serial,
            "attestation_type": credential.attestation_type.value,
        },
        "source": None
        if device.source is None
        else {"name": device.source.name, "origin": device.source.origin.value},
        "profile": None
        if profile is None
        else {
            "model_identifier": profile.model_identifier,
            "os_version": profile.os_version,
            "os_build": profile.os_build,
            "os_build_supplemental": profile.os_build_supplemental,
            "os_usernames": list(profile.os_usernames),
            "jamf_binary_version": profile.jamf_binary_version,
            "external_id": profile.external_id,
            "update_time": _time(profile.update_time),
        },
        "create_time": _time(device.create_time),
        "update_time": _time(device.update_time),
    }


def collected_to_dict(data: CollectedData) -> dict[str, Any]:
    return {
        "serial_number": data.serial_number,
        "os_type": data.os_type.value,
        "model_identifier": data.model_identifier,
        "os_version": data.os_version,
        "os_build": data.os_build,
        "os_id": data.os_id,
        "os_login_user": data.os_login_user,
        "jamf_binary_version": data.jamf_binary_version,
        "reported_asset_tag": data.reported_asset_tag,
        "system_serial_number": data.system_serial_number,
        "base_board_serial_number": data.base_board_serial_number,
        "collect_time": _time(data.collect_time),
        "record_time": _time(data.record_time),
    }


def event_to_dict(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "time": _time(event.time),
        "type": event.type,
        "success": event.success,
        "actor": event.actor,
        "message": event.message,
        "device_id": event.device_id,
        "asset_tag": event.asset_tag,
        "os_type": event.os_type,
        "details": event.details,
    }


def user_to_dict(user: User) -> dict[str, Any]:
    return {
        "name": user.name,
        "roles": [r.value for r in user.roles],
        "logins": list(user.logins),
        "create_time": _time(user.create_time),
        "update_time": _time(user.update_time),
    }


def run_to_dict(run: SyncRun) -> dict[str, Any]:
    took = (run.end_time - run.start_time).total_seconds() if run.end_time else None
    return {
        "id": run.id,
        "source": run.source,
        "inventory": run.inventory,
        "kind": run.kind,
        "status": run.status,
        "start_time": _time(run.start_time),
        "end_time": _time(run.end_time),
        "seconds": round(took, 3) if took is not None else None,
        "fetched": run.fetched,
        "created": run.created,
        "updated": run.updated,
        "unchanged": run.unchanged,
        "deleted": run.deleted,
        "skipped": run.skipped,
        "error": run.error,
        "watermark": _time(run.watermark),
        "details": run.details,
    }
