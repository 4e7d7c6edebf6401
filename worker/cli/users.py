"""``devtrust users``: who may enroll devices, and the credential their agent sends."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

import typer

from inventory.errors import InvalidArgument

from ._common import TextOrJson, actor, database, echo_json, format_rows, info, remote

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


def _print_remote_credential(made: dict[str, Any], *, as_json: bool, verb: str) -> None:
    _print_credential(
        made["name"], made["token"], ", ".join(made["roles"]), as_json=as_json, verb=verb
    )


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
    from inventory.domain import Role
    from inventory.services import users as user_service

    parsed = Role.parse_many(roles)
    declared = user_service.parse_logins(logins or [])
    api = remote()
    if api is not None:
        body = {"name": name, "roles": [r.value for r in parsed], "logins": list(declared)}
        made = api.call("POST", "/v1/admin/users", body)
        _print_remote_credential(made, as_json=format is TextOrJson.JSON, verb="created")
        return
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
    from inventory.domain import Role
    from inventory.serialize import user_to_dict
    from inventory.services import users as user_service

    parsed = Role.parse_many(roles) if roles is not None else None
    declared = user_service.parse_logins(logins) if logins is not None else None
    api = remote()
    if api is not None:
        body: dict[str, list[str]] = {}
        if parsed is not None:
            body["roles"] = [r.value for r in parsed]
        if declared is not None:
            body["logins"] = list(declared)
        if not body:
            raise InvalidArgument("nothing to change: give --roles and/or --logins")
        user = api.call("PATCH", f"/v1/admin/users/{quote(name, safe='')}", body)["user"]
    else:
        user = user_to_dict(
            user_service.edit_user(
                database().uow(), name, actor=actor(), roles=parsed, logins=declared
            )
        )
    typer.echo(
        f'User "{user["name"]}" updated (roles: {", ".join(user["roles"])}; '
        f"logins: {', '.join(user['logins']) or '-'})."
    )


@app.command("ls")
def ls(
    format: Annotated[TextOrJson, typer.Option("--format", help="text or json")] = TextOrJson.TEXT,
) -> None:
    """List users and their roles."""
    from inventory.serialize import user_to_dict
    from inventory.services import users as user_service

    api = remote()
    if api is not None:
        users = api.call("GET", "/v1/admin/users")["users"]
    else:
        users = [user_to_dict(u) for u in user_service.list_users(database().uow())]
    if format is TextOrJson.JSON:
        echo_json(users)
        return
    rows = [
        (
            u["name"],
            ", ".join(u["roles"]),
            ", ".join(u["logins"]) or "-",
            f"{datetime.fromisoformat(u['create_time']):%Y-%m-%d %H:%M:%S}",
        )
        for u in users
    ]
    typer.echo("\n".join(format_rows(("User", "Roles", "Logins", "Created (UTC)"), rows)))
    if not users:
        info("No users; add one with `devtrust users add NAME --roles access`.")


@app.command("rm")
def rm(name: Annotated[str, typer.Argument(help="the user to remove", metavar="NAME")]) -> None:
    """Remove a user; their credential stops working at once."""
    from inventory.services import users as user_service

    api = remote()
    if api is not None:
        removed = api.call("DELETE", f"/v1/admin/users/{quote(name, safe='')}")["user"]["name"]
    else:
        removed = user_service.remove_user(database().uow(), name, actor=actor()).name
    typer.echo(f'User "{removed}" removed')


@app.command("reset-token")
def reset_token(
    name: Annotated[
        str, typer.Argument(help="the user whose credential to replace", metavar="NAME")
    ],
    format: Annotated[TextOrJson, typer.Option("--format", help="text or json")] = TextOrJson.TEXT,
) -> None:
    """Replace a user's credential and print the new one once."""
    from inventory.services import users as user_service

    api = remote()
    if api is not None:
        made = api.call("POST", f"/v1/admin/users/{quote(name, safe='')}/reset-token")
        _print_remote_credential(
            made, as_json=format is TextOrJson.JSON, verb="has a new credential"
        )
        return
    user, token = user_service.reset_token(database().uow(), name, actor=actor())
    _print_credential(
        user.name,
        token,
        ", ".join(r.value for r in user.roles),
        as_json=format is TextOrJson.JSON,
        verb="has a new credential",
    )
