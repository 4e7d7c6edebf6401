"""``devtrust audit``: read the audit log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from inventory.durations import parse_duration
from inventory.errors import InvalidArgument, quoted

from ._common import TextOrJson, database, echo_json, format_rows, info, remote

if TYPE_CHECKING:
    from ._remote import AdminClient

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
    from inventory.serialize import event_to_dict
    from inventory.services import audit as audit_service

    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidArgument(
            f"--limit must be at least 1 and at most {MAX_LIMIT:,}, got {quoted(limit)}"
        )
    back = parse_duration(since, what="--since") if since is not None else None
    audit_service.check_event_type(type)
    api = remote()
    if api is not None:
        start = datetime.now(UTC) - back if back is not None else None
        events = _remote_events(api, type=type, failed=failed, since=start, limit=limit)
    else:
        db = database()
        start = db.clock() - back if back is not None else None
        events = [
            event_to_dict(e)
            for e in audit_service.list_events(
                db.uow(), type=type, failed_only=failed, since=start, limit=limit
            )
        ]
    if format is TextOrJson.JSON:
        echo_json(events)
        return
    rows = [
        (
            f"{datetime.fromisoformat(e['time']):%Y-%m-%d %H:%M:%S}",
            e["type"],
            "ok" if e["success"] else "FAILED",
            e["actor"],
            e["asset_tag"] or "",
            e["message"],
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


def _remote_events(
    api: AdminClient, *, type: str | None, failed: bool, since: datetime | None, limit: int
) -> list[dict[str, Any]]:
    """The newest ``limit`` matching events, oldest first, read newest first a page at a
    time from the admin API."""
    from inventory.services import audit as audit_service

    newest: list[dict[str, Any]] = []
    after: str | None = None
    while len(newest) < limit:
        page = api.call(
            "GET",
            "/v1/admin/audit",
            type=type,
            failed=failed,
            since=since.isoformat().replace("+00:00", "Z") if since is not None else None,
            after=after,
            limit=min(audit_service.MAX_PAGE, limit - len(newest)),
        )
        newest.extend(page["events"])
        after = page.get("next")
        if not after:
            break
    return newest[::-1]

