"""Plain-dict views of the domain records, for JSON and YAML output and HTTP bodies."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from inventory.domain import AuditEvent, CollectedData, Device, Posture, SyncRun, User

#: The most a device's raw MDM record takes in the inventory, in bytes of compact JSON.
RAW_RECORD_LIMIT = 64 * 1024
#: The key a cut-down raw record carries: what was left out and why.
TRUNCATED = "devtrust_truncated"
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=repr)
# Kept in a cut-down record whatever its size: they say which record it is.
_IDENTITY = ("id", "udid", "mobileDeviceId")


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
            # What it proved, weakest first: software_key < tpm_ekpub < tpm_ekcert <
            # tpm_ekcert_trusted (``none`` is a software_key).
            "trust_level": credential.attestation_type.level.value,
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
        # The MDM's view of the device's security (part of its profile), null: none.
        "posture": posture_to_dict(profile.posture if profile is not None else None),
        "create_time": _time(device.create_time),
        "update_time": _time(device.update_time),
    }


def capped_raw(text: str, limit: int = RAW_RECORD_LIMIT) -> str:
    """``raw_record_text`` of a record already encoded as JSON: as it is when it fits."""
    if len(text) * 4 <= limit or len(text.encode()) <= limit:  # UTF-8: at most 4 bytes each
        return text
    return raw_record_text(json.loads(text), limit)  # the rare record over the limit


def raw_record_text(record: Any, limit: int = RAW_RECORD_LIMIT) -> str:
    """The MDM's record as compact JSON of at most ``limit`` bytes (UTF-8).

    A larger record loses its largest sections, whole, until it fits, and says so under
    ``devtrust_truncated`` (its size, the limit, the sections left out): always valid
    JSON, and what is kept is exactly as the MDM sent it.
    """
    text = _COMPACT.encode(record)
    size = len(text.encode())
    if size <= limit:
        return text
    kept = dict(record) if isinstance(record, dict) else {}
    kept.pop(TRUNCATED, None)
    dropped = [] if isinstance(record, dict) else ["(the record: not a JSON object)"]
    sizes = {key: len(_COMPACT.encode(value).encode()) for key, value in kept.items()}
    # Largest first; the keys that say which record it is go last.
    order = sorted(kept, key=lambda k: (k in _IDENTITY, -sizes[k], k))
    for key in [*order, None]:
        marker = {TRUNCATED: {"bytes": size, "limit": limit, "sections_left_out": dropped}}
        candidate = _COMPACT.encode(marker | kept)
        if len(candidate.encode()) <= limit or key is None:
            break
        dropped = [*dropped, key]
        kept.pop(key)
    if len(candidate.encode()) > limit:  # a limit smaller than the marker itself
        candidate = _COMPACT.encode({TRUNCATED: {"bytes": size, "limit": limit}})
    return candidate


def no_mdm_record(device: Device) -> str:
    """Why ``devices get --raw`` has nothing to show."""
    return (
        f"device {device.label} has no MDM record: none is kept until an MDM sync "
        "writes the device (`devtrust jamf sync`)"
    )


def pretty_raw(text: str) -> str:
    """A stored raw record as indented JSON, to paste into a ticket."""
    return json.dumps(json.loads(text), indent=2, ensure_ascii=False)


def posture_to_dict(posture: Posture | None) -> dict[str, Any] | None:
    if posture is None:
        return None
    return {
        "filevault": posture.filevault,
        "filevault_state": posture.filevault_state,
        "sip": posture.sip,
        "gatekeeper": posture.gatekeeper,
        "firewall": posture.firewall,
        "secure_boot_level": posture.secure_boot_level,
        "activation_lock": posture.activation_lock,
        "lockdown_mode": posture.lockdown_mode,
        "last_contact_time": _time(posture.last_contact_time),
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
