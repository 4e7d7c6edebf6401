"""``devtrust jamf``: the Jamf Pro side of devtrust."""

from __future__ import annotations

from typing import Annotated

import typer

from inventory.domain import SyncRun

from ._common import TextOrJson, actor, database, echo_json, format_rows, info, settings

# The simulator's well-known defaults, not secrets: it serves generated data.
SIMULATOR_CLIENT_SECRET = "devtrust-secret"  # noqa: S105
SIMULATOR_PASSWORD = "admin-password"  # noqa: S105
# `jamf sync --wait` follows a run for at most its time limit's default, and a week at most.
DEFAULT_WAIT_SECONDS = 4 * 3600.0
MAX_WAIT_SECONDS = 7 * 86400.0

app = typer.Typer(
    help="Jamf Pro: sync status, and a Jamf Pro-compatible simulator.",
    no_args_is_help=True,
)


@app.command("sync")
def sync(
    inventory: Annotated[
        str | None, typer.Option(help="the inventory entry (default: the first)")
    ] = None,
    full: Annotated[bool, typer.Option("--full", help="a full sync (default: partial)")] = False,
    force: Annotated[
        bool, typer.Option(help="delete even above max_delete_share (full syncs only)")
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="follow the run and exit non-zero if it fails")
    ] = False,
    timeout: Annotated[
        float | None,
        typer.Option(help="with --wait: give up waiting after this many seconds [default: 4h]"),
    ] = None,
) -> None:
    """Queue a sync of one inventory on the worker and print the task id."""
    from jamf.config import source_from_settings
    from worker.cli._queue import follow, send_sync

    # Everything is checked before anything is queued: a refused option queues nothing.
    if force and not full:
        raise typer.BadParameter("--force only applies to a full sync: add --full")
    if timeout is not None and not wait:
        raise typer.BadParameter("--timeout only applies with --wait: add --wait")
    if timeout is not None and not 0 < timeout <= MAX_WAIT_SECONDS:
        raise typer.BadParameter(
            f"--timeout must be a number of seconds above 0 and at most {MAX_WAIT_SECONDS:g}, "
            f"not {timeout:g}"
        )
    spec = source_from_settings(settings()).inventory(inventory)
    kind = "full" if full else "partial"
    task_id = send_sync(settings(), inventory=spec.name, kind=kind, force=force, actor=actor())
    typer.echo(task_id)
    info(f"queued a {kind} sync of {spec.name} (task {task_id})")
    if wait:
        code = follow(settings(), task_id, timeout=timeout or DEFAULT_WAIT_SECONDS)
        if code:
            raise typer.Exit(code)


@app.command("status")
def status(
    format: Annotated[TextOrJson, typer.Option("--format", help="text or json")] = TextOrJson.TEXT,
) -> None:
    """Each inventory's last partial and full sync, the alert flag, and any sync running.

    Exits 3 when an inventory's alert is raised (its last two syncs failed), in either
    format, so that a cron job or a monitoring check can act on it."""
    from inventory.serialize import run_to_dict
    from jamf.config import source_from_settings
    from worker.jobs import sync_status

    source = source_from_settings(settings())
    report, notes = sync_status(database(), settings(), source)
    for note in notes:
        info(note)
    alert = any(entry["alert"] for entry in report)
    if format is TextOrJson.JSON:
        echo_json(
            [
                {k: run_to_dict(v) if isinstance(v, SyncRun) else v for k, v in entry.items()}
                for entry in report
            ]
        )
        if alert:
            raise typer.Exit(ALERT_EXIT)
        return
    rows = []
    for entry in report:
        for key in ("last_partial", "last_full", "running"):
            run = entry[key]
            if isinstance(run, SyncRun):
                rows.append(_run_row(str(entry["inventory"]), run))
    headers = ("Inventory", "Kind", "Status", "Started (UTC)", "Took", "Fetched", "Created",
               "Updated", "Unchanged", "Deleted", "Skipped", "Error")  # fmt: skip
    if rows:
        typer.echo("\n".join(format_rows(headers, rows)))
    for entry in report:
        if not isinstance(entry["last_partial"], SyncRun) and not isinstance(
            entry["last_full"], SyncRun
        ):
            info(f"{entry['source']}/{entry['inventory']}: no sync has finished yet.")
        held = entry["lock"]
        if isinstance(held, dict):
            where = f"{entry['source']}/{entry['inventory']}"
            if held["holder_dead"]:
                typer.echo(
                    f"{where}: no sync is running, but a dead sync's lock is still held by "
                    f"{held['description']}"
                )
            else:
                typer.echo(f"{where}: syncing now, by {held['description']}")
        if entry["alert"]:
            typer.echo(
                f"ALERT: the last two syncs of {entry['source']}/{entry['inventory']} failed"
            )
    if alert:
        raise typer.Exit(ALERT_EXIT)


ALERT_EXIT = 3  # `jamf status`: an inventory's last two syncs failed




def _run_row(inventory: str, run: SyncRun) -> tuple[str, ...]:
    took = f"{(run.end_time - run.start_time).total_seconds():.1f} s" if run.end_time else "-"
    return (
        inventory,
        run.kind,
        run.status,
        f"{run.start_time:%Y-%m-%d %H:%M:%S}",
        took,
        *(str(n) for n in (run.fetched, run.created, run.updated, run.unchanged)),
        *(str(n) for n in (run.deleted, run.skipped)),
        (run.error or "")[:120],
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
    token_ttl: Annotated[
        float, typer.Option(help="token lifetime in seconds (Jamf's default: 30 minutes)")
    ] = 1800.0,
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
    webhook_url: Annotated[
        str | None,
        typer.Option(help="post a Jamf Pro webhook here for every change made through /_sim/"),
    ] = None,
    webhook_username: Annotated[
        str | None, typer.Option(help="Basic auth user of the webhooks")
    ] = None,
    webhook_password: Annotated[
        str | None, typer.Option(help="Basic auth password of the webhooks")
    ] = None,
    webhook_header: Annotated[
        str | None, typer.Option(help="a header sent with every webhook, 'Name: value'")
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
        webhook_url=webhook_url,
        webhook_username=webhook_username,
        webhook_password=webhook_password,
        webhook_header=webhook_header,
    )

    def ready(url: str) -> None:
        typer.echo(f"Jamf Pro simulator: {devices} computers at {url} (client id {client_id})")

    try:
        serve(config, on_ready=ready)
    except KeyboardInterrupt:
        typer.echo("Jamf Pro simulator stopped", err=True)
