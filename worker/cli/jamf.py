"""``devtrust jamf``: the Jamf Pro side of devtrust."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer

from ._common import (
    TextOrJson,
    actor,
    database,
    echo_json,
    format_rows,
    info,
    remote,
    settings,
)

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
    from worker.cli._remote import follow_remote

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
    kind = "full" if full else "partial"
    api = remote()
    if api is not None:
        body = {"inventory": inventory, "kind": kind, "force": force}
        queued = api.call("POST", "/v1/admin/jamf/sync", body)
        task_id, name = queued["task_id"], queued["inventory"]
    else:
        name = source_from_settings(settings()).inventory(inventory).name
        task_id = send_sync(settings(), inventory=name, kind=kind, force=force, actor=actor())
    typer.echo(task_id)
    info(f"queued a {kind} sync of {name} (task {task_id})")
    if wait:
        limit = timeout or DEFAULT_WAIT_SECONDS
        if api is not None:
            code = follow_remote(api, task_id, timeout=limit)
        else:
            code = follow(settings(), task_id, timeout=limit)
        if code:
            raise typer.Exit(code)


@app.command("status")
def status(
    format: Annotated[TextOrJson, typer.Option("--format", help="text or json")] = TextOrJson.TEXT,
) -> None:
    """Each inventory's last partial and full sync, the alert flag, and any sync running.

    Exits 3 when an inventory's alert is raised (its last two syncs failed), in either
    format, so that a cron job or a monitoring check can act on it."""
    api = remote()
    if api is not None:
        answer = api.call("GET", "/v1/admin/jamf/status")
        report, notes = answer["inventories"], answer["notes"]
    else:
        report, notes = _local_status()
    for note in notes:
        info(note)
    alert = any(entry["alert"] for entry in report)
    if format is TextOrJson.JSON:
        echo_json(report)
        if alert:
            raise typer.Exit(ALERT_EXIT)
        return
    rows = []
    for entry in report:
        for key in ("last_partial", "last_full", "running"):
            run = entry[key]
            if _is_run(run):
                rows.append(_run_row(str(entry["inventory"]), run))
    headers = ("Inventory", "Kind", "Status", "Started (UTC)", "Took", "Fetched", "Created",
               "Updated", "Unchanged", "Deleted", "Skipped", "Error")  # fmt: skip
    if rows:
        typer.echo("\n".join(format_rows(headers, rows)))
    for entry in report:
        if not _is_run(entry["last_partial"]) and not _is_run(entry["last_full"]):
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




def _local_status() -> tuple[list[dict[str, Any]], list[str]]:
    from jamf.config import source_from_settings
    from worker.jobs import sync_status_json

    return sync_status_json(database(), settings(), source_from_settings(settings()))


def _is_run(value: object) -> bool:
    """A report entry's run (``run_to_dict``), not its absence or another field."""
    return isinstance(value, dict) and "kind" in value and "status" in value


def _run_row(inventory: str, run: dict[str, Any]) -> tuple[str, ...]:
    took = f"{run['seconds']:.1f} s" if run["end_time"] and run["seconds"] is not None else "-"
    start = datetime.fromisoformat(run["start_time"])
    return (
        inventory,
        run["kind"],
        run["status"],
        f"{start:%Y-%m-%d %H:%M:%S}",
        took,
        *(str(run[k]) for k in ("fetched", "created", "updated", "unchanged")),
        *(str(run[k]) for k in ("deleted", "skipped")),
        (run["error"] or "")[:120],
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
