"""``devtrust devices``: the device inventory, as ``tctl devices`` manages it."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer

from inventory.durations import format_duration, parse_duration
from inventory.errors import InvalidArgument

from ._common import (
    Format,
    TextOrJson,
    actor,
    database,
    echo_json,
    echo_yaml,
    format_rows,
    info,
    remote,
    settings,
    table_lines,
)

if TYPE_CHECKING:
    from inventory.domain import OSType

# The inventory's modules (SQLAlchemy, pydantic) are imported by the commands that use
# them, not here: `devtrust --help` and completion import this module and need none.

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
    from inventory.domain import OSType
    from inventory.services import devices as device_service

    return (
        device_service.one_ref(ref, device_id=device_id, asset_tag=asset_tag),
        OSType.parse(os) if os is not None else None,
    )


def _token_ttl(ttl: str | None) -> timedelta:
    """--ttl, or the enrollment_token_ttl setting, each named as the user set it."""
    from inventory.services.tokens import MAX_TTL, MIN_TTL

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
    from inventory.domain import OSType, normalize_asset_tag
    from inventory.serialize import device_to_dict
    from inventory.services import devices as device_service

    # Everything is checked before anything is written: a refused --ttl adds no device.
    os_type = OSType.parse(os)
    tag = normalize_asset_tag(asset_tag)
    token_ttl = _token_ttl(ttl) if enroll or ttl is not None else None
    api = remote()
    if api is not None:
        body = {"os_type": os_type.value, "asset_tag": tag, "assigned_user": user}
        added = api.call("POST", "/v1/admin/devices", body)["device"]
    else:
        added = device_to_dict(
            device_service.register_device(
                database().uow(), os_type=os_type, asset_tag=tag, actor=actor(),
                assigned_user=user,
            )
        )  # fmt: skip
    typer.echo(f"Device {_label(added)} added to the inventory")
    if token_ttl is not None and enroll:
        _print_token(added["id"], None, token_ttl if ttl is not None or api is None else None)


@app.command("ls")
def ls(
    format: Annotated[TextOrJson, typer.Option("--format", help="text or json")] = TextOrJson.TEXT,
    page_size: Annotated[int, typer.Option(help="rows read per query")] = 500,
) -> None:
    """List devices, streaming page by page so large fleets print at once."""
    pages = _pages(page_size)
    if format is TextOrJson.JSON:
        _stream_json(pages)
        return
    widths: list[int] | None = None
    for page in pages:
        rows = [_row(d) for d in page]
        if widths is None:
            widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(HEADERS)]
            sys.stdout.write("\n".join(table_lines(HEADERS, [], widths, header=True)) + "\n")
            if not rows:
                sys.stdout.flush()
                info("No devices in the inventory; add one with `devtrust devices add`.")
        if rows:
            sys.stdout.write("\n".join(table_lines(HEADERS, rows, widths, header=False)) + "\n")
        sys.stdout.flush()


def _pages(page_size: int) -> Iterator[list[dict[str, Any]]]:
    """The inventory a page at a time (as ``--format json`` prints each device), from the
    admin API or the database; either way one page is held at a time."""
    from inventory.serialize import device_to_dict
    from inventory.services import devices as device_service

    if not 1 <= page_size <= device_service.MAX_PAGE_SIZE:
        raise InvalidArgument(
            f"--page-size must be between 1 and {device_service.MAX_PAGE_SIZE}, got {page_size}"
        )
    api = remote()
    if api is not None:
        yield from api.pages("/v1/admin/devices", "devices", limit=page_size)
        return
    for page in device_service.iter_pages(database().uow(), page_size=page_size):
        yield [device_to_dict(d) for d in page.items]


def _label(device: dict[str, Any]) -> str:
    from inventory.domain import OSType, device_label

    return device_label(device["asset_tag"], OSType(device["os_type"]))


def _row(device: dict[str, Any]) -> tuple[str, str, str, str, str]:
    from inventory.domain import EnrollStatus, OSType

    credential = device["credential"]
    return (
        device["asset_tag"],
        OSType(device["os_type"]).display,
        EnrollStatus(device["enroll_status"]).display,
        credential["trust_level"] if credential is not None else "-",
        device["id"],
    )


def _stream_json(pages: Iterator[list[dict[str, Any]]]) -> None:
    first = True
    sys.stdout.write("[")
    for page in pages:
        for device in page:
            sys.stdout.write(("\n  " if first else ",\n  ") + json.dumps(device))
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
    from inventory.serialize import device_to_dict
    from inventory.services import devices as device_service

    name, os_type = _address(ref, asset_tag, device_id, os)
    if raw:
        if format not in (None, Format.JSON):
            raise InvalidArgument(f"--raw prints JSON: leave out --format {format.value}")
        _print_raw(name, os_type)
        return
    format = format or Format.YAML
    api = remote()
    if api is not None:
        data = api.device("GET", name, os_type)["device"]
    else:
        data = device_to_dict(device_service.get_device(database().uow(), name, os_type=os_type))
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
    from inventory.serialize import no_mdm_record, pretty_raw
    from inventory.services import devices as device_service

    api = remote()
    if api is not None:
        answer = api.device("GET", name, os_type, "/raw")
        source = (answer["device"]["source"] or {}).get("name") or "the MDM"
        typer.echo(json.dumps(answer["record"], indent=2, ensure_ascii=False))
    else:
        device, text = device_service.raw_record(database().uow(), name, os_type=os_type)
        if text is None:
            raise InvalidArgument(no_mdm_record(device))
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
    from inventory.services import devices as device_service

    name, os_type = _address(ref, asset_tag, device_id, os)
    api = remote()
    if api is not None:
        api.device("DELETE", name, os_type)
    else:
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
    # Remotely, no --ttl is the service's own default (its enrollment_token_ttl).
    token_ttl = _token_ttl(ttl) if ttl is not None or remote() is None else None
    _print_token(name, os_type, token_ttl, as_json=format is TextOrJson.JSON)


def _print_token(
    ref: str, os_type: OSType | None, ttl: timedelta | None, *, as_json: bool = False
) -> None:
    """Mint a token (``ttl`` None: the service's default lifetime) and show it once."""
    from inventory.domain import TokenKind
    from inventory.services import tokens as token_service

    api = remote()
    if api is not None:
        wanted = {"ttl_seconds": int(ttl.total_seconds())} if ttl is not None else {}
        answer = api.device("POST", ref, os_type, "/enroll-token", body=wanted)
        token, device_id, tag = answer["token"], answer["device_id"], answer["asset_tag"]
        expire_time = datetime.fromisoformat(answer["expire_time"])
        ttl = timedelta(seconds=answer["ttl_seconds"])
    else:
        assert ttl is not None
        issued = token_service.create_token(
            database().uow(), ref, actor=actor(), kind=TokenKind.ADMIN, ttl=ttl, os_type=os_type
        )
        token, device_id, tag = issued.token, issued.device.id, issued.device.asset_tag
        expire_time = issued.expire_time
    if as_json:
        echo_json({"token": token, "device_id": device_id, "asset_tag": tag,
                   "expire_time": expire_time.isoformat()})  # fmt: skip
        return
    typer.echo(f'Run the command below on device "{tag}" to enroll it:')
    typer.echo(f"devtrust device enroll --token={token}")
    expires = f"{expire_time:%Y-%m-%d %H:%M:%S} UTC"
    info(f"(the token expires in {format_duration(ttl)}, at {expires})")


@app.command("unenroll")
def unenroll(
    ref: DeviceRef = None,
    asset_tag: AssetTag = None,
    device_id: DeviceId = None,
    os: OS = None,
) -> None:
    """Make an enrolled device not enrolled again (owner and credential cleared)."""
    from inventory.services import devices as device_service

    name, os_type = _address(ref, asset_tag, device_id, os)
    api = remote()
    if api is not None:
        answer = api.device("POST", name, os_type, "/unenroll")
        label, changed = _label(answer["device"]), bool(answer["changed"])
    else:
        device, changed = device_service.unenroll_device(
            database().uow(), name, actor=actor(), os_type=os_type
        )
        label = device.label
    if changed:
        typer.echo(f"Device {label} unenrolled")
    else:
        typer.echo(f"Device {label} is not enrolled; nothing to do")


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
    from inventory.services import devices as device_service

    name, os_type = _address(ref, asset_tag, device_id, os)
    api = remote()
    if api is not None:
        report = api.device("GET", name, os_type, "/diff")
    else:
        from inventory.drift import diff_report, no_collected_data

        db = database()
        device = device_service.get_device(db.uow(), name, os_type=os_type)
        history = device_service.collected_history(db.uow(), device.id, limit=1)
        if not history:
            raise InvalidArgument(no_collected_data(device))
        report = diff_report(device, history[0])
    failed = [f for f in report["fields"] if f["checked"] and not f["ok"]]
    if format is TextOrJson.JSON:
        echo_json(report)
    else:
        _print_diff(report, failed)
    if failed:
        raise typer.Exit(1)


def _print_diff(report: dict[str, Any], failed: list[dict[str, Any]]) -> None:
    device = report["device"]
    profile = device["profile"]
    if profile is None:
        mdm = "no MDM profile"
    else:
        mdm = f"MDM profile from {_stamp(profile['update_time']) or 'an unknown time'}"
    reported = report["collect_time"] or "at an unknown time"
    typer.echo(f"Device {_label(device)}: collected {reported}, {mdm}")
    fields = report["fields"]
    rows = [(f["field"], f["collected"] or "-", f["profile"] or "-", f["check"]) for f in fields]
    for line in format_rows(("Field", "Collected", "MDM Profile", "Check"), rows):
        typer.echo(line)
    if profile is None:
        typer.echo("The device has no MDM profile: auto-enrollment refuses it; enroll it by hand.")
    unchecked = [f["field"] for f in fields if not f["checked"]]
    if not failed:
        if profile is None:
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
        typer.echo(f"- {field['field']}: {field['advice']}")


def _stamp(iso: str | None) -> str | None:
    """A time as the JSON carries it, as the text output shows it."""
    return f"{datetime.fromisoformat(iso):%Y-%m-%d %H:%M:%S} UTC" if iso else None
