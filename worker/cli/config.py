"""``devtrust config``: the cluster device-trust preference (``cluster_auth_preference``)."""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from inventory.errors import InvalidArgument, InvalidPreference, quoted

from ._common import YamlOrJson, actor, database, echo_json, echo_yaml, info, remote

if TYPE_CHECKING:
    from inventory.preference import DeviceTrust

app = typer.Typer(help="Show and change the cluster device-trust preference.", no_args_is_help=True)


@app.command("show")
def show(
    format: Annotated[YamlOrJson, typer.Option("--format", help="yaml or json")] = YamlOrJson.YAML,
) -> None:
    """Print the preference as a cluster_auth_preference resource."""
    resource = _resource()
    if format is YamlOrJson.JSON:
        echo_json(resource)
    else:
        echo_yaml(resource)


@app.command("set")
def set_(
    key: Annotated[
        str,
        typer.Argument(
            help="device_trust.mode, .auto_enroll, .ekcert_allowed_cas or .min_attestation",
            metavar="KEY",
        ),
    ],
    value: Annotated[
        str, typer.Argument(help="the new value; @FILE reads PEM CAs from a file", metavar="VALUE")
    ],
) -> None:
    """Change one field of the preference."""
    from inventory.preference import from_resource, with_value

    resource = _resource()
    wanted = with_value(from_resource(resource), key, value)
    _store(wanted, resource["metadata"]["revision"])


@app.command("edit")
def edit() -> None:
    """Edit the preference in $EDITOR, as YAML; an invalid edit changes nothing."""
    import yaml

    from inventory.preference import from_resource

    resource = _resource()
    original = yaml.safe_dump(resource, sort_keys=False)
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    with tempfile.TemporaryDirectory(prefix="devtrust-") as tmp:
        path = Path(tmp) / "cluster_auth_preference.yaml"
        path.write_text(original, encoding="utf-8")
        try:
            result = subprocess.run([*shlex.split(editor), str(path)], check=False)
        except FileNotFoundError:
            raise InvalidArgument(
                f"cannot start the editor {quoted(editor)}: set $EDITOR"
            ) from None
        if result.returncode != 0:
            raise InvalidArgument(
                f"the editor {quoted(editor)} exited with status {result.returncode}; "
                "nothing changed"
            )
        edited = path.read_text(encoding="utf-8")
    if edited == original:
        info("No changes.")
        return
    try:
        document = yaml.safe_load(edited)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InvalidPreference(
            f"the edited resource is not valid YAML{where}; nothing changed"
        ) from None
    _store(from_resource(document), resource["metadata"]["revision"])


def _resource() -> dict[str, Any]:
    """The preference as a cluster_auth_preference resource, from the API or the database."""
    from inventory.preference import to_resource
    from inventory.services import preference as preference_service

    api = remote()
    if api is not None:
        return api.call("GET", "/v1/admin/config")
    return to_resource(preference_service.get_preference(database().uow()))


def _store(wanted: DeviceTrust, revision: int) -> None:
    """Store ``wanted`` unless the preference changed since it was read at ``revision``."""
    from inventory.preference import device_trust_fields
    from inventory.services import preference as preference_service

    api = remote()
    if api is not None:
        body = {"device_trust": device_trust_fields(wanted), "revision": revision}
        changed = api.call("PATCH", "/v1/admin/config", body)["changed"]
    else:
        _, changed = preference_service.update_preference(
            database().uow(), wanted, actor=actor(), expected_revision=revision
        )
    if changed:
        typer.echo(
            f"cluster_auth_preference updated: {', '.join('device_trust.' + c for c in changed)}"
        )
    else:
        typer.echo("cluster_auth_preference unchanged")
