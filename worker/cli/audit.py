"""``devtrust audit``: read the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from inventory.durations import parse_duration
from inventory.errors import InvalidArgument, quoted
from inventory.serialize import event_to_dict
from inventory.services import audit as audit_service

from ._common import TextOrJson, database, echo_json, format_rows, info

# The newest MAX_LIMIT events are more than a terminal shows; a larger number is a typo,
# and one beyond 64 bits overflowed in the database driver.
MAX_LIMIT = 100_000

app = typer.Typer(help="Read the audit log.", no_args_is_help=True)


@app.command("ls")
def ls(
    type: Annotated[
        str | None, typer.Option("--type", help="only this event type, e.g. device.enroll")
    ] = None,
    failed: Annotated[bool, typer.Option(help="only failed attempts")] = False,
    since: Annotated[str | None, typer.Option(help="only events this recent, e.g. 24h")] = None,
    limit: Annotated[
        int, typer.Option(help=f"at most this many (the newest), up to {MAX_LIMIT:,}")
    ] = 100,
    format: Annotated[TextOrJson, typer.Option("--format", help="text or json")] = TextOrJson.TEXT,
) -> None:
    """List audit events, oldest first."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidArgument(
            f"--limit must be at least 1 and at most {MAX_LIMIT:,}, got {quoted(limit)}"
        )
    db = database()
    start: datetime | None = None
    if since is not None:
        start = db.clock() - parse_duration(since, what="--since")
    events = audit_service.list_events(
        db.uow(), type=type, failed_only=failed, since=start, limit=limit
    )
    if format is TextOrJson.JSON:
        echo_json([event_to_dict(e) for e in events])
        return
    rows = [
        (
            f"{e.time:%Y-%m-%d %H:%M:%S}",
            e.type,
            "ok" if e.success else "FAILED",
            e.actor,
            e.asset_tag or "",
            e.message,
        )
        for e in events
    ]
    typer.echo(
        "\n".join(
            format_rows(("Time (UTC)", "Type", "Result", "Actor", "Asset Tag", "Message"), rows)
        )
    )
    if not events:
        info("No matching events.")
