"""``devtrust device``: the device side, the ``tsh device`` of this world."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from inventory.errors import DevtrustError, InvalidArgument

from ._common import TextOrJson, echo_json, info, settings

if TYPE_CHECKING:
    from ceremony.agent.enroll import CeremonyClient
    from ceremony.agent.login import Prover
    from inventory.domain import CollectedData

app = typer.Typer(
    help="This device: its asset tag, its collected data, and enrolling it.",
    no_args_is_help=True,
)


class DeviceDataError(DevtrustError):
    http_status = 400


def _collect() -> CollectedData:
    from ceremony.agent.collect import collect
    from ceremony.agent.errors import CollectError

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
    format: Annotated[TextOrJson, typer.Option("--format", help="text or json")] = TextOrJson.TEXT,
) -> None:
    """Print the data this device would send when it enrolls or logs in."""
    from inventory.serialize import collected_to_dict

    data = collected_to_dict(_collect())
    if format is TextOrJson.JSON:
        echo_json(data)
        return
    width = max(len(key) for key in data)
    for key, value in data.items():
        typer.echo(f"{key:>{width}}: {'-' if value is None else value}")


@app.command("enroll")
def enroll(
    token: Annotated[
        str | None,
        typer.Option("--token", help="the enrollment token from `devtrust devices enroll`"),
    ] = None,
    current_device: Annotated[
        bool,
        typer.Option(
            "--current-device",
            help="register this device if needed and enroll it (editor or device-admin role)",
        ),
    ] = False,
) -> None:
    """Enroll this device with its TPM (or macOS key), as the user in DEVTRUST_USER_TOKEN.

    It proves, with keys that cannot leave its hardware, that it is the token's device.

    DEVTRUST_API_URL names the ceremony service.
    """
    from inventory.domain import OSType, device_label

    if (token is None) == (not current_device):
        raise typer.BadParameter("give either --token or --current-device")
    if token is not None and not token.strip():
        raise typer.BadParameter("--token is empty")
    collected = _collect()
    from ceremony.agent.enroll import self_token
    from ceremony.agent.login import enroll as run_ceremony

    with _agent(collected) as (client, prover):
        if token is None:
            token = self_token(client, collected).token
        device = run_ceremony(client, token, collected, prover)
    typer.echo(f"Device {device_label(device['asset_tag'], OSType(device['os_type']))} enrolled")


@app.command("login")
def login(
    user: Annotated[str, typer.Option("--user", help="who is logging in (DEVTRUST_USER_TOKEN's)")],
) -> None:
    """Authenticate this device for USER and save a device-bound certificate.

    A registered device that is not enrolled yet is auto-enrolled first, when allowed.
    """
    from ceremony.agent.login import login as run_login
    from inventory.domain import OSType, device_label, normalize_user_name

    # Checked before anything is collected or sent: the name also names the key file.
    try:
        name = normalize_user_name(user)
    except InvalidArgument as exc:
        raise InvalidArgument(f"--user: {exc}") from None
    collected = _collect()
    with _agent(collected) as (client, prover):
        done = run_login(client, name, collected, prover, progress=info)
    cert = done.certificate
    label = device_label(cert.device["asset_tag"], OSType(cert.device["os_type"]))
    typer.echo(f"Device {label} authenticated as {name}")
    typer.echo(f"  Certificate: {done.certificate_file}")
    typer.echo(f"  Valid until: {cert.expire_time:%Y-%m-%d %H:%M:%S} UTC")
    typer.echo(f"  Extensions:  {', '.join(cert.extensions)}")


@contextmanager
def _agent(collected: CollectedData) -> Iterator[tuple[CeremonyClient, Prover]]:
    """The service client and this device's prover; agent errors become one line."""
    from ceremony.agent.enroll import CeremonyClient
    from ceremony.agent.errors import ServiceError, TPMError
    from ceremony.agent.login import Prover
    from ceremony.agent.softkey import SoftwareEnclaveKey
    from ceremony.agent.tpm import DeviceTPM
    from inventory.domain import OSType

    current = settings()
    if current.user_token is None or not current.user_token.get_secret_value().strip():
        raise DeviceDataError(
            "set DEVTRUST_USER_TOKEN to the credential `devtrust users add` printed for you"
        )
    state_dir = current.agent_dir_value
    try:
        with CeremonyClient(
            current.api_url, current.user_token.get_secret_value(), ca_file=current.api_ca_file
        ) as client:
            if collected.os_type is OSType.MACOS:
                prover = Prover(state_dir, key=SoftwareEnclaveKey.load_or_create(state_dir))
            else:
                prover = Prover(state_dir, open_tpm=lambda: DeviceTPM(current.tpm_tcti))
            yield client, prover
    except (ServiceError, TPMError, OSError, ValueError) as exc:
        raise DeviceDataError(str(exc)) from None
