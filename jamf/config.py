"""Sync configuration, as in the reference system: a source and its inventory entries.

Refused at start, with the entry and field named, rather than discovered mid-sync.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from inventory.durations import parse_duration
from inventory.errors import ConfigurationError, DevtrustError
from inventory.settings import Settings
from jamf.client import JamfClient

DEFAULT_FILTER = "general.remoteManagement.managed==true"
DEFAULT_MOBILE_FILTER = "managed==true"
MAX_PAGE_SIZE = 2000


class OnMissing(StrEnum):
    NOOP = "NOOP"
    DELETE = "DELETE"


@dataclass(frozen=True)
class InventorySpec:
    """One inventory entry: which computers to read and how often."""

    name: str = "default"
    filter_rsql: str = DEFAULT_FILTER
    # For iOS devices, read when the source has mobile_devices on.
    mobile_filter_rsql: str = DEFAULT_MOBILE_FILTER
    sync_period_partial: timedelta = timedelta(hours=6)
    sync_period_full: timedelta = timedelta(hours=24)
    on_missing: OnMissing = OnMissing.NOOP
    page_size: int = 500
    # Never delete more than this share of the source's devices in one run unless forced.
    max_delete_share: float = 0.2
    # Partial syncs re-read this far behind the last watermark, for clock skew and
    # inventory reports that land while a sync runs.
    partial_overlap: timedelta = timedelta(minutes=10)


@dataclass(frozen=True)
class SourceSpec:
    name: str = "jamf"
    inventories: tuple[InventorySpec, ...] = (InventorySpec(),)
    # Also sync iOS devices from /api/v2/mobile-devices/detail.
    mobile_devices: bool = False
    # Accounts that are no one's (jamf_ignored_usernames): never a profile's usernames.
    ignored_usernames: frozenset[str] = frozenset()

    def inventory(self, name: str | None) -> InventorySpec:
        if name is None:
            return self.inventories[0]
        for spec in self.inventories:
            if spec.name == name:
                return spec
        known = ", ".join(s.name for s in self.inventories)
        raise ConfigurationError(f"unknown Jamf inventory {name!r}: configured are {known}")


_KEYS = {
    "name",
    "filter_rsql",
    "mobile_filter_rsql",
    "sync_period_partial",
    "sync_period_full",
    "on_missing",
    "page_size",
    "max_delete_share",
    "partial_overlap",
}


def parse_source(
    name: str,
    entries: Sequence[Mapping[str, Any]] | None,
    *,
    mobile_devices: bool = False,
    ignored_usernames: Sequence[str] = (),
) -> SourceSpec:
    """Build and check the source; every refusal names ``jamf_inventory[i].field``."""
    if not name.strip():
        raise ConfigurationError("jamf_source_name is empty")
    specs = tuple(_parse_entry(i, e) for i, e in enumerate(entries or [{}]))
    names = [s.name for s in specs]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise ConfigurationError(f"two Jamf inventory entries are named {duplicate!r}")
    ignored = frozenset(u.strip() for u in ignored_usernames if u.strip())
    return SourceSpec(
        name=name.strip(),
        inventories=specs,
        mobile_devices=mobile_devices,
        ignored_usernames=ignored,
    )


def _parse_entry(index: int, raw: Mapping[str, Any]) -> InventorySpec:
    where = f"jamf_inventory[{index}]"
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"{where} must be a table of settings")
    unknown = set(raw) - _KEYS
    if unknown:
        raise ConfigurationError(f"unknown setting {where}.{sorted(unknown)[0]}")
    base = InventorySpec(name="default" if index == 0 else f"inventory-{index}")
    try:
        spec = InventorySpec(
            name=str(raw.get("name", base.name)).strip(),
            filter_rsql=str(raw.get("filter_rsql", base.filter_rsql)).strip(),
            mobile_filter_rsql=str(raw.get("mobile_filter_rsql", base.mobile_filter_rsql)).strip(),
            sync_period_partial=_duration(
                raw, "sync_period_partial", base.sync_period_partial, where
            ),
            sync_period_full=_duration(raw, "sync_period_full", base.sync_period_full, where),
            on_missing=_on_missing(raw.get("on_missing", base.on_missing), where),
            page_size=int(raw.get("page_size", base.page_size)),
            max_delete_share=float(raw.get("max_delete_share", base.max_delete_share)),
            partial_overlap=_duration(raw, "partial_overlap", base.partial_overlap, where),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"invalid {where}: {exc}") from None
    if not spec.name:
        raise ConfigurationError(f"{where}.name is empty")
    if not 1 <= spec.page_size <= MAX_PAGE_SIZE:
        raise ConfigurationError(
            f"{where}.page_size must be between 1 and {MAX_PAGE_SIZE}, got {spec.page_size}"
        )
    if not 0 <= spec.max_delete_share <= 1:
        raise ConfigurationError(f"{where}.max_delete_share must be between 0 and 1")
    if spec.sync_period_partial >= spec.sync_period_full:
        raise ConfigurationError(
            f"{where}: sync_period_partial ({raw.get('sync_period_partial', '6h')}) must be "
            f"shorter than sync_period_full ({raw.get('sync_period_full', '24h')})"
        )
    return spec


def _duration(raw: Mapping[str, Any], key: str, default: timedelta, where: str) -> timedelta:
    value = raw.get(key)
    if value is None:
        return default
    try:
        return parse_duration(str(value), what=f"{where}.{key}")
    except DevtrustError as exc:
        raise ConfigurationError(str(exc)) from None


def _on_missing(value: object, where: str) -> OnMissing:
    try:
        return OnMissing(str(value).upper())
    except ValueError:
        raise ConfigurationError(
            f"invalid {where}.on_missing {value!r}: use NOOP or DELETE"
        ) from None


def source_from_settings(settings: Settings) -> SourceSpec:
    """The configured source (``jamf_source_name``, ``jamf_inventory``), checked."""
    return parse_source(
        settings.jamf_source_name,
        settings.jamf_inventory,
        mobile_devices=settings.jamf_mobile_devices,
        ignored_usernames=settings.jamf_ignored_usernames,
    )


def client_from_settings(settings: Settings) -> JamfClient:
    """A client for ``DEVTRUST_JAMF_URL`` with exactly one configured credential pair."""
    if not settings.jamf_url:
        raise ConfigurationError("DEVTRUST_JAMF_URL is not set: where is Jamf Pro?")
    secret = settings.jamf_client_secret
    password = settings.jamf_password
    return JamfClient(
        settings.jamf_url,
        client_id=settings.jamf_client_id,
        client_secret=secret.get_secret_value() if secret else None,
        username=settings.jamf_username,
        password=password.get_secret_value() if password else None,
        api_version=settings.jamf_api_version,
        max_connections=settings.jamf_max_connections,
        timeout=settings.jamf_timeout,
    )
