"""``devtrust devices``: the device inventory, as ``tctl devices`` manages it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from inventory.domain import CollectedData, Device, OSType, Page, TokenKind
from inventory.durations import format_duration, parse_duration
from inventory.errors import InvalidArgument
from inventory.serialize import device_to_dict
from inventory.services import devices as device_service
from inventory.services import tokens as token_service

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

HEADERS = ("Asset Tag", "OS", "Enroll Status", "Device ID")


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
    os_type = OSType.parse(os)
    token_ttl = parse_duration(ttl or settings().enrollment_token_ttl, what="--ttl")
    db = database()
    device = device_service.register_device(
        db.uow(), os_type=os_type, asset_tag=asset_tag, actor=actor(), assigned_user=user
    )
    typer.echo(f"Device {device.asset_tag}/{device.os_type.value} added to the inventory")
    if enroll:
        _print_token(device.asset_tag, device.id, token_ttl)


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


def _row(device: Device) -> tuple[str, str, str, str]:
    return (device.asset_tag, device.os_type.display, device.enroll_status.display, device.id)


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
    ref: Annotated[str, typer.Argument(help="asset tag or device id", metavar="DEVICE")],
    format: Annotated[Format, typer.Option("--format", help="yaml, json or text")] = Format.YAML,
) -> None:
    """Show one device with its profile and credential."""
    device = device_service.get_device(database().uow(), ref)
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
    asset_tag: Annotated[
        str | None, typer.Option(help="remove the device with this serial")
    ] = None,
    device_id: Annotated[str | None, typer.Option(help="remove the device with this id")] = None,
) -> None:
    """Remove a device from the inventory, by asset tag or by device id."""
    device_service.remove_device(
        database().uow(), actor=actor(), device_id=device_id, asset_tag=asset_tag
    )
    typer.echo(f'Device "{device_id.strip() if device_id else (asset_tag or "").strip()}" removed')


@app.command("enroll")
def enroll(
    asset_tag: Annotated[str | None, typer.Option(help="the device's serial number")] = None,
    device_id: Annotated[str | None, typer.Option(help="the device's id")] = None,
    ttl: Annotated[str | None, typer.Option(help="how long the token is valid, e.g. 1h")] = None,
    format: Annotated[TextOrJson, typer.Option("--format", help="text or json")] = TextOrJson.TEXT,
) -> None:
    """Create an enrollment token for a registered device."""
    if (asset_tag is None) == (device_id is None):
        raise InvalidArgument("give exactly one of --asset-tag or --device-id")
    token_ttl = parse_duration(ttl or settings().enrollment_token_ttl, what="--ttl")
    _print_token(asset_tag, device_id, token_ttl, as_json=format is TextOrJson.JSON)


def _print_token(
    asset_tag: str | None, device_id: str | None, ttl: timedelta, *, as_json: bool = False
) -> None:
    issued = token_service.create_token(
        database().uow(),
        (device_id or asset_tag or ""),
        actor=actor(),
        kind=TokenKind.ADMIN,
        ttl=ttl,
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
    ref: Annotated[str, typer.Argument(help="asset tag or device id", metavar="DEVICE")],
) -> None:
    """Make an enrolled device not enrolled again (owner and credential cleared)."""
    device, changed = device_service.unenroll_device(database().uow(), ref, actor=actor())
    if changed:
        typer.echo(f'Device "{device.asset_tag}" unenrolled')
    else:
        typer.echo(f'Device "{device.asset_tag}" is not enrolled; nothing to do')


@app.command("diff")
def diff(
    asset_tag: Annotated[str, typer.Argument(help="the device's asset tag or id")],
    os: Annotated[str | None, typer.Option("--os", help="when the tag names two OSes")] = None,
    format: Annotated[TextOrJson, typer.Option("--format", help="text or json")] = TextOrJson.TEXT,
) -> None:
    """Compare the device's last collected data with its MDM profile, field by field.

    Marks each field auto-enrollment would refuse and says what to do; exits 1 if any.
    """
    from inventory.drift import compare

    db = database()
    device = device_service.get_device(
        db.uow(), asset_tag, os_type=OSType.parse(os) if os else None
    )
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
                "fields": [
                    {"field": f.name, "collected": f.collected, "profile": f.profile,
                     "ok": f.ok, "problem": f.problem, "advice": f.advice}
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
    rows = [
        (f.name, f.collected or "-", f.profile or "-", "ok" if f.ok else f"FAIL: {f.problem}")
        for f in fields
    ]
    for line in format_rows(("Field", "Collected", "MDM Profile", "Check"), rows):
        typer.echo(line)
    if device.profile is None:
        typer.echo("The device has no MDM profile: auto-enrollment refuses it; enroll it by hand.")
    if not failed:
        if device.profile is not None:
            typer.echo("Every field matches: auto-enrollment would accept this data.")
        return
    typer.echo(f"{len(failed)} field(s) would fail auto-enrollment:")
    for field in failed:
        typer.echo(f"- {field.name}: {field.advice}")
