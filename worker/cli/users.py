"""``devtrust users``: who may enroll devices, and the credential their agent sends."""

from __future__ import annotations

from typing import Annotated

import typer

from inventory.domain import Role
from inventory.serialize import user_to_dict
from inventory.services import users as user_service

from ._common import TextOrJson, actor, database, echo_json, format_rows, info

app = typer.Typer(help="Manage users, their roles and credentials.", no_args_is_help=True)


def _print_credential(name: str, token: str, roles: str, *, as_json: bool, verb: str) -> None:
    if as_json:
        echo_json({"name": name, "roles": roles.split(", "), "token": token})
        return
    typer.echo(f'User "{name}" {verb} (roles: {roles}).')
    typer.echo(
        "Credential, shown only this once; the device agent reads it from DEVTRUST_USER_TOKEN:"
    )
    typer.echo(token)


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="the user's name", metavar="NAME")],
    roles: Annotated[
        list[str],
        typer.Option(help="comma-separated: access, editor, device-admin, bot"),
    ],
    logins: Annotated[
        list[str] | None,
        typer.Option(help="comma-separated logins the user has on their devices (MDM usernames)"),
    ] = None,
    format: Annotated[TextOrJson, typer.Option("--format", help="text or json")] = TextOrJson.TEXT,
) -> None:
    """Create a user and print their credential once."""
    parsed = Role.parse_many(roles)
    declared = user_service.parse_logins(logins or [])
    user, token = user_service.add_user(
        database().uow(), name, parsed, actor=actor(), logins=declared
    )
    _print_credential(
        user.name,
        token,
        ", ".join(r.value for r in user.roles),
        as_json=format is TextOrJson.JSON,
        verb="created",
    )


@app.command("edit")
def edit(
    name: Annotated[str, typer.Argument(help="the user to change", metavar="NAME")],
    roles: Annotated[
        list[str] | None,
        typer.Option(help="replace the roles: access, editor, device-admin, bot"),
    ] = None,
    logins: Annotated[
        list[str] | None,
        typer.Option(help='replace the logins (comma-separated; "" clears them)'),
    ] = None,
) -> None:
    """Change a user's roles or logins; their credential stays."""
    parsed = Role.parse_many(roles) if roles is not None else None
    declared = user_service.parse_logins(logins) if logins is not None else None
    user = user_service.edit_user(
        database().uow(), name, actor=actor(), roles=parsed, logins=declared
    )
    typer.echo(
        f'User "{user.name}" updated (roles: {", ".join(r.value for r in user.roles)}; '
        f"logins: {', '.join(user.logins) or '-'})."
    )


@app.command("ls")
def ls(
    format: Annotated[TextOrJson, typer.Option("--format", help="text or json")] = TextOrJson.TEXT,
) -> None:
    """List users and their roles."""
    users = user_service.list_users(database().uow())
    if format is TextOrJson.JSON:
        echo_json([user_to_dict(u) for u in users])
        return
    rows = [
        (
            u.name,
            ", ".join(r.value for r in u.roles),
            ", ".join(u.logins) or "-",
            f"{u.create_time:%Y-%m-%d %H:%M:%S}",
        )
        for u in users
    ]
    typer.echo("\n".join(format_rows(("User", "Roles", "Logins", "Created (UTC)"), rows)))
    if not users:
        info("No users; add one with `devtrust users add NAME --roles access`.")


@app.command("rm")
def rm(name: Annotated[str, typer.Argument(help="the user to remove", metavar="NAME")]) -> None:
    """Remove a user; their credential stops working at once."""
    user = user_service.remove_user(database().uow(), name, actor=actor())
    typer.echo(f'User "{user.name}" removed')


@app.command("reset-token")
def reset_token(
    name: Annotated[
        str, typer.Argument(help="the user whose credential to replace", metavar="NAME")
    ],
    format: Annotated[TextOrJson, typer.Option("--format", help="text or json")] = TextOrJson.TEXT,
) -> None:
    """Replace a user's credential and print the new one once."""
    user, token = user_service.reset_token(database().uow(), name, actor=actor())
    _print_credential(
        user.name,
        token,
        ", ".join(r.value for r in user.roles),
        as_json=format is TextOrJson.JSON,
        verb="has a new credential",
    )
