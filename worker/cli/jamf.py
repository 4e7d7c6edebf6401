"""``devtrust jamf``: the Jamf Pro side of devtrust."""

from __future__ import annotations

from typing import Annotated

import typer

# The simulator's well-known defaults, not secrets: it serves generated data.
SIMULATOR_CLIENT_SECRET = "devtrust-secret"  # noqa: S105
SIMULATOR_PASSWORD = "admin-password"  # noqa: S105

app = typer.Typer(
    help="Jamf Pro: the simulator now; sync and status come with the worker.",
    no_args_is_help=True,
)


@app.command("simulator")
def simulator(
    devices: Annotated[int, typer.Option(help="computers in the generated fleet")] = 1000,
    port: Annotated[int, typer.Option(help="TCP port to listen on")] = 9000,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    seed: Annotated[int, typer.Option(help="the same seed makes the same fleet")] = 1,
    latency_ms: Annotated[float, typer.Option(help="delay added to every API request")] = 0.0,
    fault_rate: Annotated[
        float, typer.Option(help="share of inventory requests that fail (0 to 1)")
    ] = 0.0,
    fault_seed: Annotated[
        int | None, typer.Option(help="seed of the fault sequence (default: --seed)")
    ] = None,
    token_ttl: Annotated[float, typer.Option(help="token lifetime in seconds")] = 60.0,
    client_id: Annotated[str, typer.Option(help="OAuth API client id")] = "devtrust",
    client_secret: Annotated[
        str, typer.Option(help="OAuth API client secret")
    ] = SIMULATOR_CLIENT_SECRET,
    username: Annotated[str, typer.Option(help="user for Basic token auth")] = "admin",
    password: Annotated[
        str, typer.Option(help="password for Basic token auth")
    ] = SIMULATOR_PASSWORD,
    mobile_devices: Annotated[
        int | None, typer.Option(help="iOS devices (default: a tenth of --devices)")
    ] = None,
) -> None:
    """Serve a Jamf Pro-compatible API over a generated fleet until interrupted."""
    from jamf.simulator import SimulatorConfig, serve

    config = SimulatorConfig(
        devices=devices,
        mobile_devices=mobile_devices,
        seed=seed,
        host=host,
        port=port,
        latency_ms=latency_ms,
        fault_rate=fault_rate,
        fault_seed=fault_seed,
        token_ttl=token_ttl,
        client_id=client_id,
        client_secret=client_secret,
        username=username,
        password=password,
    )

    def ready(url: str) -> None:
        typer.echo(f"Jamf Pro simulator: {devices} computers at {url} (client id {client_id})")

    try:
        serve(config, on_ready=ready)
    except KeyboardInterrupt:
        typer.echo("Jamf Pro simulator stopped", err=True)
