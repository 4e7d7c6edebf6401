"""The cluster device-trust preference as a resource users edit, validated as a whole.

Pure: parsing and validation only. ``services/preference.py`` stores it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from inventory.domain import TrustLevel
from inventory.errors import AccessDenied, InvalidPreference, quoted

KIND = "cluster_auth_preference"
VERSION = "v2"
NAME = "cluster-auth-preference"


class DeviceTrustMode(StrEnum):
    OFF = "off"
    OPTIONAL = "optional"
    REQUIRED = "required"
    REQUIRED_FOR_HUMANS = "required-for-humans"


@dataclass(frozen=True)
class DeviceTrust:
    mode: DeviceTrustMode = DeviceTrustMode.OPTIONAL
    auto_enroll: bool = False
    ekcert_allowed_cas: tuple[str, ...] = ()
    # The weakest trust level a device may enroll or authenticate with; None: any.
    min_attestation: TrustLevel | None = None


#: How ``min_attestation`` is written when it is not set.
ANY = "any"


@dataclass(frozen=True)
class Preference:
    device_trust: DeviceTrust
    revision: int = 0
    update_time: datetime | None = None


# The fields of ``DeviceTrust``, as a resource and ``config set`` name them.
FIELDS = ("mode", "auto_enroll", "ekcert_allowed_cas", "min_attestation")


def to_resource(pref: Preference) -> dict[str, Any]:
    return {
        "kind": KIND,
        "version": VERSION,
        "metadata": {"name": NAME, "revision": pref.revision},
        "spec": {"device_trust": device_trust_fields(pref.device_trust)},
    }


def device_trust_fields(dt: DeviceTrust) -> dict[str, Any]:
    """The resource's ``spec.device_trust``, as ``parse_device_trust`` reads it back."""
    return {
        "mode": dt.mode.value,
        "auto_enroll": dt.auto_enroll,
        "ekcert_allowed_cas": list(dt.ekcert_allowed_cas),
        "min_attestation": min_attestation_text(dt.min_attestation),
    }


def from_resource(doc: object) -> DeviceTrust:
    """Read an edited resource back; every refusal names the field at fault."""
    if not isinstance(doc, Mapping):
        raise InvalidPreference("the resource must be a YAML mapping with kind, version and spec")
    if doc.get("kind", KIND) != KIND:
        raise InvalidPreference(f"invalid kind: expected {KIND!r}, got {quoted(doc.get('kind'))}")
    if doc.get("version", VERSION) != VERSION:
        raise InvalidPreference(
            f"invalid version: expected {VERSION!r}, got {quoted(doc.get('version'))}"
        )
    spec = doc.get("spec")
    if not isinstance(spec, Mapping):
        raise InvalidPreference("invalid spec: expected a mapping holding device_trust")
    unknown = set(spec) - {"device_trust"}
    if unknown:
        raise InvalidPreference(f"unknown field spec.{sorted(unknown)[0]}")
    device_trust = spec.get("device_trust") or {}
    if not isinstance(device_trust, Mapping):
        raise InvalidPreference("invalid spec.device_trust: expected a mapping")
    return parse_device_trust(device_trust, DeviceTrust(), prefix="spec.device_trust")


def parse_device_trust(
    values: Mapping[str, Any], base: DeviceTrust, *, prefix: str = "device_trust"
) -> DeviceTrust:
    unknown = set(values) - set(FIELDS)
    if unknown:
        field = sorted(unknown)[0]
        raise InvalidPreference(
            f"unknown field {prefix}.{field}: expected one of {', '.join(FIELDS)}"
        )
    result = base
    if "mode" in values:
        result = replace(result, mode=_mode(values["mode"], f"{prefix}.mode"))
    if "auto_enroll" in values:
        value = values["auto_enroll"]
        if not isinstance(value, bool):
            raise InvalidPreference(
                f"invalid {prefix}.auto_enroll: expected true or false, got {quoted(value)}"
            )
        result = replace(result, auto_enroll=value)
    if "ekcert_allowed_cas" in values:
        result = replace(
            result,
            ekcert_allowed_cas=_cas(values["ekcert_allowed_cas"], f"{prefix}.ekcert_allowed_cas"),
        )
    if "min_attestation" in values:
        result = replace(
            result,
            min_attestation=_min_attestation(
                values["min_attestation"], f"{prefix}.min_attestation"
            ),
        )
    return result


def min_attestation_text(level: TrustLevel | None) -> str:
    return ANY if level is None else level.value


def parse_min_attestation(value: object) -> TrustLevel | None:
    """A stored ``min_attestation``: None or "any" is any."""
    return None if value is None or value == ANY else TrustLevel(str(value))


def _min_attestation(value: object, field: str) -> TrustLevel | None:
    try:
        return parse_min_attestation(value)
    except ValueError:
        choices = ", ".join([ANY, *(level.value for level in TrustLevel)])
        raise InvalidPreference(
            f"invalid {field}: {quoted(value)} is not one of {choices}"
        ) from None


def check_attestation(level: TrustLevel, minimum: TrustLevel | None, *, what: str) -> None:
    """Refuse when ``level`` is below ``minimum``: "<what> at trust level X, but ..."
    naming both and how to reach the minimum."""
    if minimum is None or level.at_least(minimum):
        return
    raise AccessDenied(
        f"{what} at trust level {level.value}, but device_trust.min_attestation needs "
        f"{minimum.value}: {_REACHING[minimum]}, or ask an admin to lower the minimum"
    )


_REACHING = {
    TrustLevel.SOFTWARE_KEY: "enroll the device",
    TrustLevel.TPM_EKPUB: "enroll from a device with a TPM",
    TrustLevel.TPM_EKCERT: "enroll from a TPM that has an EK certificate",
    TrustLevel.TPM_EKCERT_TRUSTED: (
        "enroll from a TPM whose EK certificate chains to a CA in device_trust.ekcert_allowed_cas"
    ),
}


def with_value(current: DeviceTrust, path: str, raw: str) -> DeviceTrust:
    """``config set device_trust.auto_enroll true``; a CA list may be given as ``@file.pem``."""
    parts = path.strip().split(".")
    if parts[:1] == ["spec"]:
        parts = parts[1:]
    if len(parts) != 2 or parts[0] != "device_trust":
        raise InvalidPreference(
            f"unknown setting {quoted(path)}: use device_trust.mode, device_trust.auto_enroll, "
            "device_trust.ekcert_allowed_cas or device_trust.min_attestation"
        )
    field = parts[1]
    value: Any
    if field == "ekcert_allowed_cas" and raw.startswith("@"):
        value = _read_pem_file(raw[1:])
    elif field == "ekcert_allowed_cas" and raw.strip() in ("", "[]"):
        value = []
    else:
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise InvalidPreference(
                f"invalid device_trust.{field}: cannot parse {quoted(raw)}"
            ) from None
    return parse_device_trust({field: value}, current)


#: What ``@file`` reads at most: a CA bundle is kilobytes, and ``@/dev/zero`` must not
#: read forever.
MAX_PEM_FILE = 1024 * 1024


def _read_pem_file(path: str) -> list[str]:
    field = "device_trust.ekcert_allowed_cas"
    try:
        with Path(path).open("rb") as file:
            raw = file.read(MAX_PEM_FILE + 1)
    except OSError as exc:
        raise InvalidPreference(
            f"invalid {field}: cannot read {quoted(path)}: {exc.strerror}"
        ) from None
    if len(raw) > MAX_PEM_FILE:
        raise InvalidPreference(
            f"invalid {field}: {quoted(path)} is larger than {MAX_PEM_FILE // 1024} KiB, "
            "the most a CA bundle file may hold"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidPreference(
            f"invalid {field}: {quoted(path)} is not UTF-8 text (PEM certificates are)"
        ) from None
    end = "-----END CERTIFICATE-----"
    blocks = [b.strip() + "\n" + end for b in text.split(end) if b.strip()]
    return blocks or [text]


def _mode(value: object, field: str) -> DeviceTrustMode:
    try:
        return DeviceTrustMode(str(value))
    except ValueError:
        choices = ", ".join(m.value for m in DeviceTrustMode)
        raise InvalidPreference(
            f"invalid {field}: {quoted(value)} is not one of {choices}"
        ) from None


def _cas(value: object, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise InvalidPreference(f"invalid {field}: expected a list of PEM certificates")
    return tuple(validate_ca_pem(pem, f"{field}[{i}]") for i, pem in enumerate(value))


def validate_ca_pem(pem: object, field: str) -> str:
    """One PEM certificate that parses and is a CA, normalised; else InvalidPreference."""
    from cryptography import x509  # only needed when CAs are given; keeps the CLI quick
    from cryptography.hazmat.primitives.serialization import Encoding

    if not isinstance(pem, str) or "-----BEGIN CERTIFICATE-----" not in pem:
        raise InvalidPreference(f"invalid {field}: not a PEM certificate")
    try:
        certs = x509.load_pem_x509_certificates(pem.encode())
    except ValueError as exc:
        raise InvalidPreference(
            f"invalid {field}: PEM certificate does not parse ({exc})"
        ) from None
    if len(certs) != 1:
        raise InvalidPreference(
            f"invalid {field}: holds {len(certs)} certificates, give one per entry"
        )
    cert = certs[0]
    subject = cert.subject.rfc4514_string() or "(empty subject)"
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise InvalidPreference(f"invalid {field}: certificate {subject} is not a CA")
    return cert.public_bytes(Encoding.PEM).decode()
