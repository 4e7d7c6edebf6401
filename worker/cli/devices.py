"""``devtrust devices``: the device inventory, as ``tctl devices`` manages it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from inventory.domain import CollectedData, Device, OSType, Page, TokenKind, normalize_asset_tag
from inventory.durations import format_duration, parse_duration
from inventory.errors import InvalidArgument
from inventory.serialize import device_to_dict, pretty_raw
from inventory.services import devices as device_service
from inventory.services import tokens as token_service
from inventory.services.tokens import MAX_TTL, MIN_TTL

from ._common import (
    Format,
    TextOrJson,
    actor,
    database,
    echo_json,
    echo_yaml,
    format_rows,
    info,
    settings,
    table_lines,
)

if TYPE_CHECKING:
    from inventory.drift import Field

app = typer.Typer(help="Manage the device inventory.", no_args_is_help=True)

HEADERS = ("Asset Tag", "OS", "Enroll Status", "Trust Level", "Device ID")

# A device is named the same way in every command that takes one: an asset tag or a
# device id as the argument, or --asset-tag or --device-id; --os picks between two
# devices sharing one asset tag.
DeviceRef = Annotated[
    str | None,
    typer.Argument(help="the device's asset tag or id", metavar="[DEVICE]", show_default=False),
]
AssetTag = Annotated[str | None, typer.Option("--asset-tag", help="the device's serial number")]
DeviceId = Annotated[str | None, typer.Option("--device-id", help="the device's id")]
OS = Annotated[
    str | None, typer.Option("--os", help="when the asset tag names devices of two OSes")
]


def _address(
    ref: str | None, asset_tag: str | None, device_id: str | None, os: str | None
) -> tuple[str, OSType | None]:
    """The device reference and OS the command names, checked before any lookup."""
    return (
        device_service.one_ref(ref, device_id=device_id, asset_tag=asset_tag),
        OSType.parse(os) if os is not None else None,
    )


def _token_ttl(ttl: str | None) -> timedelta:
    """--ttl, or the enrollment_token_ttl setting, each named as the user set it."""
    if ttl is not None:
        text, what = ttl, "--ttl"
    else:
        text, what = settings().enrollment_token_ttl, "setting DEVTRUST_ENROLLMENT_TOKEN_TTL"
    return parse_duration(text, what=what, at_least=MIN_TTL, at_most=MAX_TTL)


@app.command("add")
def add(
    os: Annotated[str, typer.Option("--os", help="macos, windows, linux or ios")],
    asset_tag: Annotated[str, typer.Option(help="the device's serial number")],
    enroll: Annotated[bool, typer.Option(help="also create an enrollment token")] = False,
    ttl: Annotated[str | None, typer.Option(help="token lifetime with --enroll, e.g. 1h")] = None,
    user: Annotated[
        str | None, typer.Option(help="the user it auto-enrolls for (no MDM profile needed)")
    ] = None,
) -> None:
    """Register a device in the inventory."""
    # Everything is checked before anything is written: a refused --ttl adds no device.
    os_type = OSType.parse(os)
    tag = normalize_asset_tag(asset_tag)
    token_ttl = _token_ttl(ttl) if enroll or ttl is not None else None
    who = actor()
    device = device_service.register_device(
        database().uow(), os_type=os_type, asset_tag=tag, actor=who, assigned_user=user
    )
    typer.echo(f"Device {device.label} added to the inventory")
    if token_ttl is not None and enroll:
        _print_token(device.id, None, token_ttl)


@app.command("ls")
def ls(
    format: Annotated[TextOrJson, typer.Option("--format", help="text or json")] = TextOrJson.TEXT,
    page_size: Annotated[int, typer.Option(help="rows read per query")] = 500,
) -> None:
    """List devices, streaming page by page so large fleets print at once."""
    pages = device_service.iter_pages(database().uow(), page_size=page_size)
    if format is TextOrJson.JSON:
        _stream_json(pages)
        return
    widths: list[int] | None = None
    for page in pages:
        rows = [_row(d) for d in page.items]
        if widths is None:
            widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(HEADERS)]
            sys.stdout.write("\n".join(table_lines(HEADERS, [], widths, header=True)) + "\n")
            if not rows:
                sys.stdout.flush()
                info("No devices in the inventory; add one with `devtrust devices add`.")
        if rows:
            sys.stdout.write("\n".join(table_lines(HEADERS, rows, widths, header=False)) + "\n")
        sys.stdout.flush()


def _row(device: Device) -> tuple[str, str, str, str, str]:
    credential = device.credential
    level = credential.attestation_type.level.value if credential is not None else "-"
    return (
        device.asset_tag,
        device.os_type.display,
        device.enroll_status.display,
        level,
        device.id,
    )


def _stream_json(pages: Iterator[Page]) -> None:
    import json

    first = True
    sys.stdout.write("[")
    for page in pages:
        for device in page.items:
            sys.stdout.write(("\n  " if first else ",\n  ") + json.dumps(device_to_dict(device)))
            first = False
        sys.stdout.flush()
    sys.stdout.write("\n]\n" if not first else "]\n")


@app.command("get")
def get(
    ref: DeviceRef = None,
    asset_tag: AssetTag = None,
    device_id: DeviceId = None,
    os: OS = None,
    format: Annotated[
        Format | None, typer.Option("--format", help="yaml (the default), json or text")
    ] = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="print the MDM's own record of the device (JSON)")
    ] = False,
) -> None:
    """Show one device with its profile, posture and credential."""
    name, os_type = _address(ref, asset_tag, device_id, os)
    if raw:
        if format not in (None, Format.JSON):
            raise InvalidArgument(f"--raw prints JSON: leave out --format {format.value}")
        _print_raw(name, os_type)
        return
    format = format or Format.YAML
    device = device_service.get_device(database().uow(), name, os_type=os_type)
    data = device_to_dict(device)
    if format is Format.JSON:
        echo_json(data)
    elif format is Format.YAML:
        echo_yaml({"kind": "device", "version": "v1", "spec": data})
    else:
        lines = list(_text_lines(data))
        width = max(len(key) for key, _ in lines)
        for key, value in lines:
            typer.echo(f"{key:>{width}}: {value}")


def _print_raw(name: str, os_type: OSType | None) -> None:
    """The record the MDM sent when a sync last wrote the device, as indented JSON."""
    device, text = device_service.raw_record(database().uow(), name, os_type=os_type)
    if text is None:
        raise InvalidArgument(
            f"device {device.label} has no MDM record: none is kept until an MDM sync "
            "writes the device (`devtrust jamf sync`)"
        )
    typer.echo(pretty_raw(text))
    source = device.source.name if device.source else "the MDM"
    info(
        f"(the record {source} sent when a sync last changed the device: a newer one that "
        "moved only check-in times, IP addresses or sizes is not stored)"
    )


def _text_lines(data: dict[str, object], prefix: str = "") -> Iterator[tuple[str, str]]:
    """``profile.os_version: 14.4``, one line per field; nothing becomes ``-``."""
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from _text_lines(value, f"{name}.")
        elif isinstance(value, list | tuple):
            yield name, ", ".join(str(v) for v in value) or "-"
        else:
            yield name, "-" if value is None or value == {} else str(value)


@app.command("rm")
def rm(
    ref: DeviceRef = None,
    asset_tag: AssetTag = None,
    device_id: DeviceId = None,
    os: OS = None,
) -> None:
    """Remove a device from the inventory, by asset tag or by device id."""
    name, os_type = _address(ref, asset_tag, device_id, os)
    device_service.remove_device(database().uow(), name, actor=actor(), os_type=os_type)
    typer.echo(f'Device "{name}" removed')


@app.command("enroll")
def enroll(
    ref: DeviceRef = None,
    asset_tag: AssetTag = None,
    device_id: DeviceId = None,
    os: OS = None,
    ttl: Annotated[
        str | None, typer.Option(help="how long the token is valid, 1m to 7d, e.g. 1h")
    ] = None,
    format: Annotated[TextOrJson, typer.Option("--format", help="text or json")] = TextOrJson.TEXT,
) -> None:
    """Create an enrollment token for a registered device."""
    name, os_type = _address(ref, asset_tag, device_id, os)
    token_ttl = _token_ttl(ttl)
    _print_token(name, os_type, token_ttl, as_json=format is TextOrJson.JSON)


def _print_token(
    ref: str, os_type: OSType | None, ttl: timedelta, *, as_json: bool = False
) -> None:
    issued = token_service.create_token(
        database().uow(), ref, actor=actor(), kind=TokenKind.ADMIN, ttl=ttl, os_type=os_type
    )
    if as_json:
        echo_json(
            {
                "token": issued.token,
                "device_id": issued.device.id,
                "asset_tag": issued.device.asset_tag,
                "expire_time": issued.expire_time.isoformat(),
            }
        )
        return
    typer.echo(f'Run the command below on device "{issued.device.asset_tag}" to enroll it:')
    typer.echo(f"devtrust device enroll --token={issued.token}")
    expires = f"{issued.expire_time:%Y-%m-%d %H:%M:%S} UTC"
    info(f"(the token expires in {format_duration(ttl)}, at {expires})")


@app.command("unenroll")
def unenroll(
    ref: DeviceRef = None,
    asset_tag: AssetTag = None,
    device_id: DeviceId = None,
    os: OS = None,
) -> None:
    """Make an enrolled device not enrolled again (owner and credential cleared)."""
    name, os_type = _address(ref, asset_tag, device_id, os)
    device, changed = device_service.unenroll_device(
        database().uow(), name, actor=actor(), os_type=os_type
    )
    if changed:
        typer.echo(f"Device {device.label} unenrolled")
    else:
        typer.echo(f"Device {device.label} is not enrolled; nothing to do")


@app.command("diff")
def diff(
    ref: DeviceRef = None,
    asset_tag: AssetTag = None,
    device_id: DeviceId = None,
    os: OS = None,
    format: Annotated[TextOrJson, typer.Option("--format", help="text or json")] = TextOrJson.TEXT,
) -> None:
    """Compare the device's last collected data with its MDM profile, field by field.

    Marks each field auto-enrollment would refuse and says what to do; exits 1 if any.
    """
    from inventory.drift import compare

    name, os_type = _address(ref, asset_tag, device_id, os)
    db = database()
    device = device_service.get_device(db.uow(), name, os_type=os_type)
    history = device_service.collected_history(db.uow(), device.id, limit=1)
    if not history:
        raise InvalidArgument(
            f"device {device.label} has sent no collected data yet: it is recorded when the "
            "device enrolls or logs in (run `devtrust device collect` on the device to see it)"
        )
    fields = compare(device, history[0])
    failed = [f for f in fields if not f.ok]
    if format is TextOrJson.JSON:
        echo_json(
            {
                "device": device_to_dict(device),
                "collect_time": _when(history[0].record_time or history[0].collect_time),
                # A field the profile lacks is "checked": false, "ok": null: it passed nothing.
                "fields": [
                    {"field": f.name, "collected": f.collected, "profile": f.profile,
                     "checked": f.checked, "ok": f.ok if f.checked else None,
                     "check": f.verdict, "problem": f.problem, "advice": f.advice}
                    for f in fields
                ],
            }
        )  # fmt: skip
    else:
        _print_diff(device, history[0], fields, failed)
    if failed:
        raise typer.Exit(1)


def _when(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else None


def _print_diff(
    device: Device, collected: CollectedData, fields: list[Field], failed: list[Field]
) -> None:
    profile_time = device.profile.update_time if device.profile else None
    reported = _when(collected.record_time) or "at an unknown time"
    if device.profile is None:
        mdm = "no MDM profile"
    else:
        mdm = f"MDM profile from {_when(profile_time) or 'an unknown time'}"
    typer.echo(f"Device {device.label}: collected {reported}, {mdm}")
    rows = [(f.name, f.collected or "-", f.profile or "-", f.verdict) for f in fields]
    for line in format_rows(("Field", "Collected", "MDM Profile", "Check"), rows):
        typer.echo(line)
    if device.profile is None:
        typer.echo("The device has no MDM profile: auto-enrollment refuses it; enroll it by hand.")
    unchecked = [f.name for f in fields if not f.checked]
    if not failed:
        if device.profile is None:
            return
        if unchecked:
            typer.echo(
                f"Every field the MDM profile has matches; not checked, as the profile does "
                f"not have them: {', '.join(unchecked)}."
            )
        else:
            typer.echo("Every field matches: auto-enrollment would accept this data.")
        return
    typer.echo(f"{len(failed)} field(s) would fail auto-enrollment:")
    for field in failed:
        typer.echo(f"- {field.name}: {field.advice}")
