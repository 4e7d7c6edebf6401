"""``devtrust device``: the device side, the ``tsh device`` of this world."""

from __future__ import annotations

from typing import Annotated

import typer

from inventory.domain import CollectedData
from inventory.errors import DevtrustError

from ._common import Format, echo_json, settings

app = typer.Typer(help="This device: its asset tag and collected data.", no_args_is_help=True)


class DeviceDataError(DevtrustError):
    http_status = 400


def _collect() -> CollectedData:
    from ceremony.agent.collect import CollectError, collect

    try:
        return collect(settings().dmi_dir)
    except CollectError as exc:
        raise DeviceDataError(str(exc)) from None


@app.command("asset-tag")
def asset_tag() -> None:
    """Print this device's asset tag: the serial number it enrolls under."""
    typer.echo(_collect().serial_number)


@app.command("collect")
def collect(
    format: Annotated[Format, typer.Option("--format", help="text or json")] = Format.TEXT,
) -> None:
    """Print the data this device would send when it enrolls or logs in."""
    from inventory.serialize import collected_to_dict

    data = collected_to_dict(_collect())
    if format is Format.JSON:
        echo_json(data)
        return
    width = max(len(key) for key in data)
    for key, value in data.items():
        typer.echo(f"{key:>{width}}: {'-' if value is None else value}")
