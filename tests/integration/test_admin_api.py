"""The admin API (``ceremony.admin``) over a real socket, on SQLite and on PostgreSQL.

One server per database for the whole module (uvicorn in a thread, as ``devtrust serve``
runs it), with users of every role; each test names its own devices and users, so the
tests share the inventory without stepping on each other. What is checked: each route's
answer, and that it is what the CLI's ``--format json`` prints; who may call what (401
without a credential, 403 naming the role needed); that a device admin grants no role it
lacks; that the audit log names the user; keyset paging with no duplicates or gaps; and
that bad input is a 400 with one error line, never a 5xx.
"""

from __future__ import annotations

import base64
import json
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, update

from ceremony.admin import AdminApi
from ceremony.service import create_app
from inventory.db import Database
from inventory.domain import CollectedData, OSType, Role
from inventory.errors import NotFound
from inventory.models import Base, DeviceRow
from inventory.preference import to_resource
from inventory.serialize import user_to_dict
from inventory.services import audit, preference, users
from inventory.services import devices as device_service
from inventory.settings import Settings
from tests.ceremony import serving
from tests.cli import Cli, ok
from tests.processes import DEVTRUST, free_port, started

ROLES = {
    "root": (Role.DEVICE_ADMIN, Role.EDITOR, Role.ACCESS),  # grants every human role
    "admin": (Role.DEVICE_ADMIN,),  # grants only device-admin
    "ed": (Role.EDITOR,),
    "acc": (Role.ACCESS,),
    "robot": (Role.BOT,),
}


@dataclass
class QueuedSyncs:
    """The worker's queue, as the admin API sees it: each sync asked for, and its task id."""

    calls: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, *, inventory: str, kind: str, force: bool, actor: str) -> str:
        task_id = str(uuid.uuid4())
        self.calls.append(
            {"task_id": task_id, "inventory": inventory, "kind": kind, "force": force,
             "actor": actor}
        )  # fmt: skip
        return task_id


@dataclass
class Site:
    db: Database
    db_url: str
    settings: Settings
    client: httpx.Client
    credentials: dict[str, str]
    syncs: QueuedSyncs

    def call(
        self, method: str, path: str, who: str | None = "root", **kwargs: Any
    ) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if who is not None:
            headers["Authorization"] = f"Bearer {self.credentials.get(who, who)}"
        return self.client.request(method, path, headers=headers, **kwargs)

    def ok(
        self, method: str, path: str, who: str | None = "root", status: int = 200, **kw: Any
    ) -> Any:
        response = self.call(method, path, who, **kw)
        assert response.status_code == status, (method, path, response.status_code, response.text)
        return response.json()

    def register(self, tag: str, os_type: OSType = OSType.MACOS, **kw: Any) -> str:
        return device_service.register_device(
            self.db.uow(), os_type=os_type, asset_tag=tag, actor="setup", **kw
        ).id


def _empty(db: Database) -> None:
    with db.engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(delete(table))


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("admin-api")
    if request.param == "sqlite":
        db_url = f"sqlite:///{tmp / 'devtrust.db'}"
    else:
        db_url = str(request.getfixturevalue("postgres_url"))
    db = Database.connect(db_url, pool_size=10, max_overflow=5)
    _empty(db)
    settings = Settings(data_dir=tmp / "data", database_url=db_url)
    syncs = QueuedSyncs()
    app = create_app(settings, {}, admin=AdminApi(db, settings, queue_sync=syncs))
    credentials = {
        name: users.add_user(db.uow(), name, roles, actor="setup")[1]
        for name, roles in ROLES.items()
    }
    try:
        with serving(app) as url, httpx.Client(base_url=url, timeout=30) as client:
            yield Site(db, db_url, settings, client, credentials, syncs)
    finally:
        _empty(db)
        db.close()


@pytest.fixture
def cli(site: Site, monkeypatch: pytest.MonkeyPatch, bare_cli: Cli) -> Cli:
    """The local CLI on the served inventory: what the API answers must be what it prints."""
    monkeypatch.setenv("DEVTRUST_DATABASE_URL", site.db_url)
    monkeypatch.setenv("DEVTRUST_DATA_DIR", str(site.settings.data_dir))
    return bare_cli


def cli_json(cli: Cli, *argv: str) -> Any:
    return json.loads(ok(cli(*argv, "--format", "json")).out)


# Every admin route, with a request its schema accepts. The device and user named do not
# exist: what is checked is who gets past the role check, and that nothing is changed.
GHOST = "GHOST-0001"
TASK = "0b5c2a55-1d2e-4f60-9a7b-4b7f1e2d3c4a"  # a task id no one queued
ADMIN_ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/v1/admin/devices", None),
    ("POST", "/v1/admin/devices", {"os_type": "macos", "asset_tag": GHOST}),
    ("GET", f"/v1/admin/devices/{GHOST}", None),
    ("DELETE", f"/v1/admin/devices/{GHOST}", None),
    ("GET", f"/v1/admin/devices/{GHOST}/diff", None),
    ("GET", f"/v1/admin/devices/{GHOST}/raw", None),
    ("POST", f"/v1/admin/devices/{GHOST}/enroll-token", {"ttl_seconds": 600}),
    ("POST", f"/v1/admin/devices/{GHOST}/unenroll", None),
    ("GET", "/v1/admin/users", None),
    ("POST", "/v1/admin/users", {"name": "ghost", "roles": ["access"]}),
    ("PATCH", "/v1/admin/users/acc", {"roles": ["device-admin"]}),
    ("DELETE", "/v1/admin/users/acc", None),
    ("POST", "/v1/admin/users/acc/reset-token", None),
    ("GET", "/v1/admin/audit", None),
    ("GET", "/v1/admin/config", None),
    ("PATCH", "/v1/admin/config", {"device_trust": {"mode": "off"}}),
    ("POST", "/v1/admin/jamf/sync", {"kind": "full"}),
    ("GET", "/v1/admin/jamf/status", None),
    ("GET", f"/v1/admin/jamf/tasks/{TASK}", None),
]


def template(path: str) -> str:
    parts = path.replace(GHOST, "{ref}").replace(TASK, "{task_id}").split("/")
    return "/".join("{name}" if p == "acc" else p for p in parts)


def test_every_admin_route_is_listed_here_and_in_the_openapi_document(site: Site) -> None:
    spec = site.ok("GET", "/openapi.json", who=None)
    documented = {
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        for method in operations
        if path.startswith(("/v1/admin/", "/v1/me/"))
    }
    listed = {(method, template(path)) for method, path, _ in ADMIN_ROUTES}
    assert documented == listed | {("GET", "/v1/me/devices")}
    for path, operations in spec["paths"].items():
        if path.startswith("/v1/admin/"):
            for operation in operations.values():
                assert operation["security"] == [{"userCredential": []}]
                assert {"400", "401", "403", "404", "409", "503"} <= set(operation["responses"])
                for param in operation.get("parameters", []):
                    if param["name"] == "ref":  # a bare "%" would decode to another tag
                        pattern = param["schema"]["pattern"]
                        assert re.search(pattern, "C02 XL0 GJJ") and re.search(pattern, "a/b")
                        assert not re.search(pattern, "C02%EF%BF%BD")


def test_no_credential_or_a_bad_one_is_401_on_every_route(site: Site) -> None:
    for method, path, body in [*ADMIN_ROUTES, ("GET", "/v1/me/devices", None)]:
        for who in (None, "not-a-credential"):
            response = site.call(method, path, who, json=body)
            assert response.status_code == 401, (method, path, who, response.text)
            assert list(response.json()) == ["error"]
            assert response.headers["WWW-Authenticate"] == "Bearer"


def test_access_bot_and_editor_get_403_naming_the_role_and_change_nothing(site: Site) -> None:
    events = len(audit.list_events(site.db.uow(), limit=100_000))
    syncs = len(site.syncs.calls)
    for who, has in (("acc", "access"), ("robot", "bot"), ("ed", "editor")):
        for method, path, body in ADMIN_ROUTES:
            response = site.call(method, path, who, json=body)
            assert response.status_code == 403, (who, method, path, response.text)
            message = response.json()["error"]
            assert message.startswith(f"this needs the device-admin role; user {who} has {has}")
    with pytest.raises(NotFound):
        device_service.get_device(site.db.uow(), GHOST)
    assert users.get_user(site.db.uow(), "acc").roles == (Role.ACCESS,)
    assert len(site.syncs.calls) == syncs
    assert len(audit.list_events(site.db.uow(), limit=100_000)) == events


def test_an_editor_reads_its_own_devices_and_everyone_lists_their_own(site: Site) -> None:
    own = site.register("ED-OWN-1", assigned_user="ed")
    enrolled = site.register("ED-OWN-2", OSType.LINUX)
    with site.db.engine.begin() as conn:  # as an enrollment by ed leaves it
        conn.execute(
            update(DeviceRow).where(DeviceRow.id == enrolled).values(
                owner="ed", enroll_status="enrolled"
            )
        )  # fmt: skip
    site.register("NOT-ED-1", assigned_user="acc")
    got = site.ok("GET", "/v1/admin/devices/ED-OWN-1", who="ed")
    assert got["device"]["id"] == own
    assert site.ok("GET", f"/v1/admin/devices/{enrolled}", who="ed")["device"]["owner"] == "ed"
    assert site.call("GET", "/v1/admin/devices/ED-OWN-1/diff", "ed").status_code == 409
    assert site.call("GET", "/v1/admin/devices/ED-OWN-1/raw", "ed").status_code == 409
    for other in ("NOT-ED-1", "NO-SUCH-DEVICE"):  # another's, or none: no telling which
        refused = site.call("GET", f"/v1/admin/devices/{other}", "ed")
        assert refused.status_code == 403
        assert "an editor reads only its own devices" in refused.json()["error"]
    # The editor may read, not change, its own device.
    assert site.call("DELETE", "/v1/admin/devices/ED-OWN-1", "ed").status_code == 403
    assert site.call("POST", "/v1/admin/devices/ED-OWN-1/unenroll", "ed").status_code == 403

    mine = site.ok("GET", "/v1/me/devices", who="ed")
    assert [d["asset_tag"] for d in mine["devices"]] == ["ED-OWN-1", "ED-OWN-2"]
    assert mine["next"] is None
    assert [d["asset_tag"] for d in site.ok("GET", "/v1/me/devices", who="acc")["devices"]] == [
        "NOT-ED-1"
    ]
    assert site.ok("GET", "/v1/me/devices", who="robot") == {"devices": [], "next": None}


def test_devices_add_get_enroll_unenroll_diff_raw_and_remove(site: Site, cli: Cli) -> None:
    tag = "C02API0DEV01"
    body = {"os_type": "macos", "asset_tag": f" {tag} ", "assigned_user": "acc"}
    added = site.ok("POST", "/v1/admin/devices", status=201, json=body)
    device = added["device"]
    assert (device["asset_tag"], device["os_type"], device["assigned_user"]) == (
        tag,
        "macos",
        "acc",
    )
    assert device["enroll_status"] == "not_enrolled"
    again = site.call("POST", "/v1/admin/devices", json={"os_type": "macos", "asset_tag": tag})
    assert again.status_code == 409
    assert again.json()["error"].startswith(f"device {tag}/macOS is already in the inventory")
    body = {"os_type": "linux", "asset_tag": tag, "assigned_user": "nobody"}
    nobody = site.call("POST", "/v1/admin/devices", json=body)
    assert nobody.status_code == 404

    # Get: by asset tag or by id, exactly what `devices get --format json` prints.
    got = site.ok("GET", f"/v1/admin/devices/{tag}")["device"]
    assert got == site.ok("GET", f"/v1/admin/devices/{device['id']}?os=macos")["device"]
    assert got == cli_json(cli, "devices", "get", tag)
    assert site.call("GET", f"/v1/admin/devices/{tag}?os=linux").status_code == 404

    # Enroll: a token shown once, for as long as asked or the setting's default (1h).
    issued = site.ok("POST", f"/v1/admin/devices/{tag}/enroll-token", status=201,
                     json={"ttl_seconds": 120})  # fmt: skip
    assert set(issued) == {"token", "device_id", "asset_tag", "expire_time", "ttl_seconds"}
    assert (issued["device_id"], issued["asset_tag"], issued["ttl_seconds"]) == (
        device["id"], tag, 120
    )  # fmt: skip
    assert len(issued["token"]) >= 20
    default = site.ok("POST", f"/v1/admin/devices/{tag}/enroll-token", status=201)
    assert default["ttl_seconds"] == 3600 and default["token"] != issued["token"]

    # Unenroll: nothing to do on a device not enrolled; then on an enrolled one.
    assert site.ok("POST", f"/v1/admin/devices/{tag}/unenroll")["changed"] is False
    with site.db.engine.begin() as conn:
        conn.execute(
            update(DeviceRow).where(DeviceRow.id == device["id"]).values(
                enroll_status="enrolled", owner="acc", credential_id="cred-1",
                credential_attestation_type="tpm_ekpub",
            )
        )  # fmt: skip
    refused = site.call("POST", f"/v1/admin/devices/{tag}/enroll-token")
    assert refused.status_code == 409
    assert refused.json()["error"].startswith(f"device {tag}/macOS is already enrolled")
    unenrolled = site.ok("POST", f"/v1/admin/devices/{tag}/unenroll")
    assert unenrolled["changed"] is True
    assert (unenrolled["device"]["enroll_status"], unenrolled["device"]["owner"]) == (
        "not_enrolled", None
    )  # fmt: skip

    # Diff: 409 until the device has reported; then `devices diff --format json`'s answer.
    none_yet = site.call("GET", f"/v1/admin/devices/{tag}/diff")
    assert none_yet.status_code == 409
    assert "has sent no collected data yet" in none_yet.json()["error"]
    uow = site.db.uow()
    with uow:
        data = CollectedData(serial_number=tag, os_type=OSType.MACOS, os_version="14.4")
        device_service.record_collected_data_within(uow, device["id"], data, keep=5)
        uow.commit()
    diff = site.ok("GET", f"/v1/admin/devices/{tag}/diff")
    assert {"field": "serial_number", "collected": tag}.items() <= diff["fields"][1].items()
    assert diff == cli_json(cli, "devices", "diff", tag)

    # Raw: 409 until a sync wrote a record; then that record, as `get --raw` prints it.
    assert site.call("GET", f"/v1/admin/devices/{tag}/raw").status_code == 409
    record = {"id": "7", "general": {"name": "Mäc"}, "hardware": {"serialNumber": tag}}
    with site.db.engine.begin() as conn:
        conn.execute(
            update(DeviceRow)
            .where(DeviceRow.id == device["id"])
            .values(source_record=json.dumps(record))
        )
    assert site.ok("GET", f"/v1/admin/devices/{tag}/raw")["record"] == record
    assert json.loads(ok(cli("devices", "get", tag, "--raw")).out) == record

    # Remove: the answer is what it was; then it is gone.
    removed = site.ok("DELETE", f"/v1/admin/devices/{tag}")["device"]
    assert removed["id"] == device["id"]
    assert site.call("GET", f"/v1/admin/devices/{tag}").status_code == 404
    assert site.call("DELETE", f"/v1/admin/devices/{tag}").status_code == 404

    # Every change was the authenticated user's, not the service's Unix user.
    events = [e for e in audit.list_events(site.db.uow(), limit=100_000) if e.asset_tag == tag]
    by_type = {(e.type, e.success): e.actor for e in events}
    for kind in (audit.DEVICE_CREATE, audit.DEVICE_TOKEN_CREATE, audit.DEVICE_UPDATE,
                 audit.DEVICE_DELETE):  # fmt: skip
        assert by_type[(kind, True)] == "root", kind
    assert by_type[(audit.DEVICE_TOKEN_CREATE, False)] == "root"  # the refused token


def test_an_asset_tag_two_oses_share_and_one_holding_a_slash(site: Site) -> None:
    site.register("SHARED-TAG-1", OSType.MACOS)
    linux = site.register("SHARED-TAG-1", OSType.LINUX)
    ambiguous = site.call("GET", "/v1/admin/devices/SHARED-TAG-1")
    assert ambiguous.status_code == 409
    assert "names devices of more than one OS" in ambiguous.json()["error"]
    assert site.ok("GET", "/v1/admin/devices/SHARED-TAG-1?os=linux")["device"]["id"] == linux
    slashed = site.register("VM/1 2")  # printable ASCII: a "/" and a space inside
    assert site.ok("GET", "/v1/admin/devices/VM%2F1%202")["device"]["id"] == slashed
    assert site.call("GET", "/v1/admin/devices/VM%2F1%202/diff").status_code == 409
    assert site.ok("DELETE", "/v1/admin/devices/VM/1 2")["device"]["id"] == slashed


def test_device_listings_page_by_keyset_with_no_duplicates_or_gaps(site: Site, cli: Cli) -> None:
    _, pager = users.add_user(site.db.uow(), "pager", (Role.ACCESS,), actor="setup")
    for i in range(23):
        site.register(f"PAGE-{i:03d}", OSType.WINDOWS if i % 2 else OSType.LINUX,
                      assigned_user="pager" if i % 3 == 0 else None)  # fmt: skip
    site.register("PAGE-000", OSType.MACOS)  # the same tag: ordered by OS after it
    seen: list[tuple[str, str]] = []
    after: str | None = None
    pages = 0
    while True:
        query: dict[str, Any] = {"limit": 4} | ({"after": after} if after else {})
        page = site.ok("GET", "/v1/admin/devices", params=query)
        assert len(page["devices"]) <= 4
        seen += [(d["asset_tag"], d["os_type"]) for d in page["devices"]]
        pages += 1
        after = page["next"]
        if after is None:
            break
    assert len(seen) == len(set(seen)) and seen == sorted(seen)
    listed = cli_json(cli, "devices", "ls")
    assert seen == [(d["asset_tag"], d["os_type"]) for d in listed]  # everything, in order
    assert pages == -(-len(seen) // 4)  # the last page says it is the last
    assert ("PAGE-000", "linux") in seen and ("PAGE-000", "macos") in seen

    mine: list[str] = []
    after = None
    while True:
        query = {"limit": 3} | ({"after": after} if after else {})
        page = site.ok("GET", "/v1/me/devices", who=pager, params=query)
        mine += [d["asset_tag"] for d in page["devices"]]
        if (after := page["next"]) is None:
            break
    assert mine == [f"PAGE-{i:03d}" for i in range(0, 23, 3)]


def test_users_add_list_edit_reset_and_remove(site: Site, cli: Cli) -> None:
    created = site.ok("POST", "/v1/admin/users", status=201,
                      json={"name": "newbie", "roles": ["access", "editor", "access"],
                            "logins": ["nb", "newbie.b@corp.example", "nb"]})  # fmt: skip
    assert (created["name"], created["roles"]) == ("newbie", ["access", "editor"])
    token = created["token"]
    assert site.ok("GET", "/v1/me/devices", who=token) == {"devices": [], "next": None}
    assert site.call("POST", "/v1/admin/users",
                     json={"name": "newbie", "roles": ["access"]}).status_code == 409  # fmt: skip

    listed = site.ok("GET", "/v1/admin/users")["users"]
    assert listed == cli_json(cli, "users", "ls")
    assert [u for u in listed if u["name"] == "newbie"] == [
        user_to_dict(users.get_user(site.db.uow(), "newbie"))
    ]
    assert next(u for u in listed if u["name"] == "newbie")["logins"] == [
        "nb", "newbie.b@corp.example"
    ]  # fmt: skip

    edited = site.ok("PATCH", "/v1/admin/users/newbie", json={"roles": ["access"]})["user"]
    assert (edited["roles"], edited["logins"]) == (["access"], ["nb", "newbie.b@corp.example"])
    edited = site.ok("PATCH", "/v1/admin/users/newbie", json={"logins": []})["user"]
    assert (edited["roles"], edited["logins"]) == (["access"], [])
    assert site.call("PATCH", "/v1/admin/users/nobody",
                     json={"logins": []}).status_code == 404  # fmt: skip

    reset = site.ok("POST", "/v1/admin/users/newbie/reset-token")
    assert reset["name"] == "newbie" and reset["token"] != token
    assert site.call("GET", "/v1/me/devices", token).status_code == 401
    assert site.call("GET", "/v1/me/devices", reset["token"]).status_code == 200

    removed = site.ok("DELETE", "/v1/admin/users/newbie")["user"]
    assert removed["name"] == "newbie"
    assert site.call("GET", "/v1/me/devices", reset["token"]).status_code == 401
    assert site.call("DELETE", "/v1/admin/users/newbie").status_code == 404

    actors = {
        (e.type, e.details.get("user")): e.actor
        for e in audit.list_events(site.db.uow(), limit=100_000)
        if e.details.get("user") == "newbie"
    }
    assert set(actors.values()) == {"root"} and len(actors) == 3  # create, update, delete


def test_a_device_admin_grants_no_role_it_lacks(site: Site) -> None:
    # "admin" holds only device-admin: it may make other device admins, nothing else.
    made = site.ok("POST", "/v1/admin/users", who="admin", status=201,
                   json={"name": "second-admin", "roles": ["device-admin"]})  # fmt: skip
    assert made["roles"] == ["device-admin"]
    body = {"name": "helper", "roles": ["device-admin", "editor", "bot"]}
    refused = site.call("POST", "/v1/admin/users", "admin", json=body)
    assert refused.status_code == 403
    assert refused.json()["error"] == (
        "adding user helper would grant the roles editor, bot, which user admin does not hold "
        "(device-admin): a device admin grants only roles it holds itself"
    )
    assert site.call("PATCH", "/v1/admin/users/second-admin", "admin",
                     json={"roles": ["device-admin", "access"]}).status_code == 403  # fmt: skip
    # Taking roles away, or keeping roles the user already has, grants nothing.
    users.edit_user(site.db.uow(), "second-admin", actor="setup",
                    roles=(Role.DEVICE_ADMIN, Role.ACCESS))  # fmt: skip
    kept = site.ok("PATCH", "/v1/admin/users/second-admin", who="admin",
                   json={"roles": ["access", "device-admin"]})  # fmt: skip
    assert kept["user"]["roles"] == ["access", "device-admin"]
    # A new credential for a user holding roles it lacks would hand it those roles.
    reset = site.call("POST", "/v1/admin/users/root/reset-token", "admin")
    assert reset.status_code == 403
    assert "would grant the roles editor, access" in reset.json()["error"]
    back = site.ok(
        "PATCH", "/v1/admin/users/second-admin", "admin", json={"roles": ["device-admin"]}
    )
    assert back["user"]["roles"] == ["device-admin"]
    assert site.ok("POST", "/v1/admin/users/second-admin/reset-token", who="admin")["token"]
    # root holds every human role, so may grant them; bot it lacks too.
    assert site.call("POST", "/v1/admin/users", "root",
                     json={"name": "bot-maker", "roles": ["bot"]}).status_code == 403  # fmt: skip
    site.ok("POST", "/v1/admin/users", status=201, json={"name": "helper", "roles": ["editor"]})
    assert users.get_user(site.db.uow(), "helper").roles == (Role.EDITOR,)
    created = audit.list_events(site.db.uow(), type=audit.USER_CREATE)
    made_here = [e for e in created if e.details.get("user") in ("second-admin", "helper")]
    assert [e.actor for e in made_here] == ["admin", "root"]


def test_who_may_grant_is_judged_in_the_write_on_the_roles_stored_then(site: Site) -> None:
    """The routes' grant checks run inside the change's transaction, on the user's row as
    it is then (locked on PostgreSQL): a role another admin added a moment before counts,
    and a refusal changes nothing, the credential included."""
    from inventory.errors import AccessDenied

    _, old = users.add_user(site.db.uow(), "racer", (Role.ACCESS,), actor="setup")
    users.edit_user(site.db.uow(), "racer", actor="other-admin", roles=(Role.ACCESS, Role.BOT))
    events = len(audit.list_events(site.db.uow(), limit=100_000))
    seen: list[tuple[Role, ...]] = []

    def refuse(current: Any) -> None:
        seen.append(current.roles)
        raise AccessDenied("refused")

    with pytest.raises(AccessDenied):
        users.edit_user(site.db.uow(), "racer", actor="x", roles=(Role.EDITOR,), check=refuse)
    with pytest.raises(AccessDenied):
        users.reset_token(site.db.uow(), "racer", actor="x", check=refuse)
    assert seen == [(Role.ACCESS, Role.BOT)] * 2
    assert users.get_user(site.db.uow(), "racer").roles == (Role.ACCESS, Role.BOT)
    assert users.authenticate(site.db.uow(), old).name == "racer"
    assert len(audit.list_events(site.db.uow(), limit=100_000)) == events
    # Through the API: "admin" holds neither access nor bot, which racer now has.
    refused = site.call("POST", "/v1/admin/users/racer/reset-token", "admin")
    assert refused.status_code == 403
    assert "would grant the roles access, bot" in refused.json()["error"]


def test_the_audit_log_pages_back_in_time_with_the_clis_filters(site: Site, cli: Cli) -> None:
    for i in range(7):
        site.ok("POST", "/v1/admin/devices", status=201,
                json={"os_type": "ios", "asset_tag": f"AUDIT-{i}"})  # fmt: skip
        site.call("POST", "/v1/admin/devices", json={"os_type": "ios", "asset_tag": "AUDIT-0"})
    site.call("POST", "/v1/admin/devices/NO-SUCH-ONE/enroll-token")  # a failed attempt
    everything = site.ok("GET", "/v1/admin/audit", params={"limit": 5000})
    assert everything["next"] is None
    ids = [e["id"] for e in everything["events"]]
    assert ids == sorted(ids, reverse=True)  # newest first
    # `audit ls --limit N` is the newest N, oldest first: the first page, reversed.
    assert cli_json(cli, "audit", "ls", "--limit", "12") == everything["events"][:12][::-1]

    paged: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        query: dict[str, Any] = {"type": "device.create", "limit": 3}
        page = site.ok("GET", "/v1/admin/audit", params=query | ({"after": after} if after else {}))
        assert len(page["events"]) <= 3
        paged += page["events"]
        if (after := page["next"]) is None:
            break
    creates = [e for e in everything["events"] if e["type"] == "device.create"]
    assert paged == creates and len({e["id"] for e in paged}) == len(paged)
    mine = [e for e in paged if e["asset_tag"] and e["asset_tag"].startswith("AUDIT-")]
    assert [e["actor"] for e in mine] == ["root"] * 7

    failed = site.ok("GET", "/v1/admin/audit", params={"failed": "true", "limit": 5000})
    assert failed["events"] and all(e["success"] is False for e in failed["events"])
    assert failed["events"][0]["type"] == "device.token.create"
    assert failed["events"] == cli_json(cli, "audit", "ls", "--failed", "--limit", "5000")[::-1]
    newest = everything["events"][0]["time"]
    since = site.ok("GET", "/v1/admin/audit", params={"since": newest})
    assert since["events"] and all(e["time"] >= newest for e in since["events"])
    assert site.ok("GET", "/v1/admin/audit", params={"since": "2999-01-01T00:00:00Z"}) == {
        "events": [], "next": None
    }  # fmt: skip


def test_config_show_and_set_with_the_clis_validation_and_the_stale_edit_check(
    site: Site, cli: Cli
) -> None:
    shown = site.ok("GET", "/v1/admin/config")
    assert shown == to_resource(preference.get_preference(site.db.uow()))
    assert shown == cli_json(cli, "config", "show")
    revision = shown["metadata"]["revision"]

    changed = site.ok("PATCH", "/v1/admin/config",
                      json={"device_trust": {"mode": "required", "min_attestation": "tpm_ekpub"},
                            "revision": revision})  # fmt: skip
    assert changed["changed"] == ["mode", "min_attestation"]
    trust = changed["preference"]["spec"]["device_trust"]
    assert (trust["mode"], trust["min_attestation"]) == ("required", "tpm_ekpub")
    assert changed["preference"]["metadata"]["revision"] == revision + 1
    assert site.ok("GET", "/v1/admin/config") == changed["preference"]
    same = site.ok("PATCH", "/v1/admin/config", json={"device_trust": {"mode": "required"}})
    assert same["changed"] == []

    stale = site.call("PATCH", "/v1/admin/config",
                      json={"device_trust": {"mode": "off"}, "revision": revision})  # fmt: skip
    assert stale.status_code == 409
    assert stale.json()["error"].startswith("the preference changed while you were editing it")
    bad_ca = site.call("PATCH", "/v1/admin/config",
                       json={"device_trust": {"ekcert_allowed_cas": ["not a PEM"]}})  # fmt: skip
    assert bad_ca.status_code == 400
    assert bad_ca.json() == {
        "error": "invalid device_trust.ekcert_allowed_cas[0]: not a PEM certificate"
    }
    body = {"device_trust": {"mode": "optional", "min_attestation": None}}
    back = site.ok("PATCH", "/v1/admin/config", json=body)
    assert back["preference"]["spec"]["device_trust"]["min_attestation"] == "any"
    event = audit.list_events(site.db.uow(), type=audit.CONFIG_UPDATE)[-1]
    assert event.actor == "root"


def test_jamf_sync_is_queued_as_the_user_and_status_is_the_clis(site: Site, cli: Cli) -> None:
    queued = site.ok("POST", "/v1/admin/jamf/sync", status=202)
    assert queued == {"task_id": site.syncs.calls[-1]["task_id"], "inventory": "default",
                      "kind": "partial", "force": False}  # fmt: skip
    assert site.syncs.calls[-1]["actor"] == "root"
    full = site.ok("POST", "/v1/admin/jamf/sync", who="admin", status=202,
                   json={"inventory": "default", "kind": "full", "force": True})  # fmt: skip
    assert (full["kind"], full["force"], site.syncs.calls[-1]["actor"]) == ("full", True, "admin")
    unknown = site.call("POST", "/v1/admin/jamf/sync", json={"inventory": "elsewhere"})
    assert unknown.status_code == 404
    assert unknown.json()["error"] == ("unknown Jamf inventory 'elsewhere': configured are default")
    assert [c["task_id"] for c in site.syncs.calls[-2:]] == [queued["task_id"], full["task_id"]]

    status = site.ok("GET", "/v1/admin/jamf/status")
    assert status["alert"] is False and status["notes"] == []
    assert status["inventories"] == cli_json(cli, "jamf", "status")
    assert status["inventories"][0]["inventory"] == "default"


BAD: list[tuple[str, str, Any, str]] = [
    ("POST", "/v1/admin/devices", {"os_type": "beos", "asset_tag": "X1"}, "os_type: "),
    ("POST", "/v1/admin/devices", {"os_type": "macos"}, "asset_tag: "),
    ("POST", "/v1/admin/devices", {"os_type": "macos", "asset_tag": "X1", "owner": "me"},
     "owner: Extra inputs are not permitted"),
    ("POST", "/v1/admin/devices", {"os_type": "macos", "asset_tag": "X\t1"}, "asset_tag: "),
    ("POST", "/v1/admin/devices", {"os_type": "macos", "asset_tag": "X\x001"}, "asset_tag: "),
    ("POST", "/v1/admin/devices", {"os_type": "macos", "asset_tag": "X" * 129}, "asset_tag: "),
    ("POST", "/v1/admin/devices", {"os_type": "macos", "asset_tag": "X1", "assigned_user": "a b"},
     "assigned_user: "),
    ("POST", "/v1/admin/devices", [], "request body: "),
    ("POST", "/v1/admin/devices", "{not json", "request body is not valid JSON"),
    ("POST", f"/v1/admin/devices/{GHOST}/enroll-token", {"ttl_seconds": 59}, "ttl_seconds: "),
    ("POST", f"/v1/admin/devices/{GHOST}/enroll-token", {"ttl_seconds": "600"}, "ttl_seconds: "),
    ("POST", f"/v1/admin/devices/{GHOST}/enroll-token", {"ttl": "1h"}, "ttl: "),
    ("GET", f"/v1/admin/devices/{GHOST}?os=beos", None, "query.os: "),
    ("GET", "/v1/admin/devices/%00", None, "path.ref: "),
    ("GET", "/v1/admin/devices?limit=0", None, "query.limit: "),
    ("GET", "/v1/admin/devices?limit=5001", None, "query.limit: "),
    ("GET", "/v1/admin/devices?after=not%20a%20cursor", None, "query.after: "),
    ("GET", "/v1/admin/devices?after=AAAA", None, "invalid page cursor 'AAAA'"),
    ("GET", "/v1/me/devices?after=AAAA", None, "invalid page cursor 'AAAA'"),
    ("GET", "/v1/admin/devices?after=NQ", None, "invalid page cursor 'NQ'"),  # JSON 5
    ("GET", "/v1/me/devices?after=bnVsbA", None, "invalid page cursor 'bnVsbA'"),  # null
    ("POST", "/v1/admin/users", {"name": "a b", "roles": ["access"]}, "name: "),
    ("POST", "/v1/admin/users", {"name": "ab", "roles": []}, "roles: "),
    ("POST", "/v1/admin/users", {"name": "ab", "roles": ["root"]}, "roles.0: "),
    ("POST", "/v1/admin/users", {"name": "ab", "roles": ["access"], "logins": ["a,b"]},
     "logins.0: "),
    ("PATCH", "/v1/admin/users/acc", {}, "request body: nothing to change"),
    ("PATCH", "/v1/admin/users/acc", {"roles": None}, "roles: may be left out, but not null"),
    ("DELETE", "/v1/admin/users/a%20b", None, "path.name: "),
    ("GET", "/v1/admin/audit?type=device.explode", None, "unknown event type 'device.explode'"),
    ("GET", "/v1/admin/audit?type=", None, "unknown event type ''"),  # not "any type"
    ("GET", "/v1/admin/audit?since=yesterday", None, "query.since: "),
    ("GET", "/v1/admin/audit?after=0", None, "query.after: "),
    ("GET", "/v1/admin/audit?failed=maybe", None, "query.failed: "),
    ("PATCH", "/v1/admin/config", {"device_trust": {"mode": "sometimes"}}, "device_trust.mode: "),
    ("PATCH", "/v1/admin/config", {"device_trust": {"auto_enroll": "yes"}},
     "device_trust.auto_enroll: "),
    ("PATCH", "/v1/admin/config", {"device_trust": {"colour": "red"}}, "device_trust.colour: "),
    ("PATCH", "/v1/admin/config", {"device_trust": {}, "revision": -1}, "revision: "),
    ("PATCH", "/v1/admin/config", {"mode": "off"}, "device_trust: "),
    ("POST", "/v1/admin/jamf/sync", {"force": True},
     "request body: force only applies to a full sync: give kind full"),
    ("POST", "/v1/admin/jamf/sync", {"kind": "sometimes"}, "kind: "),
    ("POST", "/v1/admin/jamf/sync", {"inventory": "a\nb"}, "inventory: "),
    ("GET", "/v1/admin/jamf/tasks/not-a-task", None, "path.task_id: "),
]  # fmt: skip


def test_bad_input_is_a_400_with_one_error_line_and_changes_nothing(site: Site) -> None:
    events = len(audit.list_events(site.db.uow(), limit=100_000))
    syncs = len(site.syncs.calls)
    for method, path, body, start in BAD:
        sent: dict[str, Any] = (
            {"content": body, "headers": {"Content-Type": "application/json"}}
            if isinstance(body, str)
            else {"json": body}
        )
        response = site.call(method, path, **sent)
        assert response.status_code == 400, (method, path, body, response.text)
        error = response.json()
        assert list(error) == ["error"], error
        assert error["error"].startswith(start), (path, body, error)
        assert "\n" not in error["error"] and len(error["error"]) < 500
    assert len(audit.list_events(site.db.uow(), limit=100_000)) == events
    assert len(site.syncs.calls) == syncs


def test_devtrust_serve_serves_the_admin_api_and_queues_syncs_on_the_workers_queue(
    tmp_path: Path,
) -> None:
    """As run: `devtrust serve` builds the admin API with the queue `devtrust jamf sync`
    uses (the embedded one here), and the task it queues names the user who asked."""
    data, port = tmp_path / "data", free_port()
    db_url = f"sqlite:///{tmp_path / 'devtrust.db'}"
    db = Database.connect(db_url)
    try:
        _, credential = users.add_user(db.uow(), "ops", (Role.DEVICE_ADMIN,), actor="setup")
    finally:
        db.close()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DEVTRUST_")}
    env = {**clean, "DEVTRUST_DATA_DIR": str(data), "DEVTRUST_DATABASE_URL": db_url}
    auth = {"Authorization": f"Bearer {credential}"}
    with (
        started([DEVTRUST, "serve", "--port", str(port)], env, "serve") as server,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=auth, timeout=30) as client,
    ):
        server.wait_for("Uvicorn running", timeout=30)
        queued = client.post("/v1/admin/jamf/sync", json={"kind": "full"})
        assert queued.status_code == 202, queued.text
        status = client.get("/v1/admin/jamf/status")
        assert status.status_code == 200, status.text
        task = client.get(f"/v1/admin/jamf/tasks/{queued.json()['task_id']}")
        assert task.status_code == 200, task.text  # queued, and no worker to take it
        assert task.json() == {"state": "PENDING", "done": False, "progress": None,
                               "outcome": None, "error": None}  # fmt: skip
        me = client.get("/v1/me/devices")
        assert (me.status_code, me.json()) == (200, {"devices": [], "next": None})
    task_id = queued.json()["task_id"]
    messages = [json.loads(p.read_text()) for p in (data / "queue" / "messages").iterdir()]
    (message,) = [m for m in messages if m["headers"]["id"] == task_id]
    assert message["headers"]["task"] == "devtrust.jamf.sync"
    _, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert kwargs == {"inventory": "default", "kind": "full", "force": False, "requested_by": "ops"}
    assert [e["inventory"] for e in status.json()["inventories"]] == ["default"]
