"""The admin API: every admin command of the CLI as a route of ``devtrust serve``.

Each route is authenticated by the user's credential (``Authorization: Bearer``) and
authorised by role: a ``device-admin`` may do all of it; an ``editor`` only reads the
devices that are its own (it owns them, or they are assigned to it), as it would to
enroll one itself; anyone else gets 403 naming the role needed. The audit log names the
authenticated user as the actor of every change, and a device admin grants no role it
does not hold itself (nor resets the credential of a user who holds one).

Every answer is built with the serializers the CLI's ``--format json`` prints
(``inventory.serialize``), so the CLI can print exactly what it prints today from it:

- ``GET /v1/admin/devices?after=&limit=``: a page of devices and the cursor of the next;
  ``POST /v1/admin/devices`` registers one (201);
- ``GET|DELETE /v1/admin/devices/{ref}?os=``: one device, by asset tag or device id;
  ``.../raw`` its MDM record, ``.../diff`` its collected data against its profile;
- ``POST .../{ref}/enroll-token`` (201, the token shown once), ``POST .../{ref}/unenroll``;
- ``GET|POST /v1/admin/users``, ``PATCH|DELETE /v1/admin/users/{name}``,
  ``POST /v1/admin/users/{name}/reset-token``;
- ``GET /v1/admin/audit``: events newest first, a page at a time;
- ``GET|PATCH /v1/admin/config``: the cluster device-trust preference;
- ``POST /v1/admin/jamf/sync`` (202, the task id), ``GET /v1/admin/jamf/status``;
- ``GET /v1/me/devices``: the caller's own devices, for any role.

Listings page by keyset (``next`` is the ``after`` of the following page), so no listing
holds more than one page in memory, whatever the size of the fleet.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, Protocol, TypeVar

from fastapi import Body, FastAPI, Path, Query
from pydantic import WithJsonSchema
from starlette.exceptions import HTTPException as StarletteHTTPException

from ceremony import answers
from ceremony.fields import SerialNumber, UTCTime
from ceremony.protocol import (
    DEVICE_CURSOR_PATTERN,
    EVENT_CURSOR_PATTERN,
    AuditPage,
    DeviceAdd,
    DeviceDiff,
    DevicePage,
    DeviceResult,
    EnrollTokenIssued,
    EnrollTokenRequest,
    JamfStatus,
    JamfSyncQueued,
    JamfSyncRequest,
    JamfTask,
    PreferenceUpdate,
    PreferenceUpdated,
    RawRecord,
    Unenrolled,
    UserAdd,
    UserCredential,
    UserEdit,
    UserList,
    UserName,
    UserResult,
)
from ceremony.service import Credential
from inventory.db import Database
from inventory.domain import (
    MAX_ASSET_TAG_LENGTH,
    Device,
    OSType,
    Page,
    Role,
    TokenKind,
    User,
)
from inventory.durations import parse_duration
from inventory.errors import (
    AccessDenied,
    ConfigurationError,
    DevtrustError,
    InvalidArgument,
    NotFound,
    one_line,
)
from inventory.preference import parse_device_trust, to_resource
from inventory.serialize import (
    device_to_dict,
    event_to_dict,
    no_mdm_record,
    user_to_dict,
)
from inventory.services import audit, preference, tokens, users
from inventory.services import devices as device_service
from inventory.settings import Settings

if TYPE_CHECKING:
    pass

T = TypeVar("T")
# A route's check of the credential it was given: the user, or refused (401, 403).
Auth = Callable[[str], User]

DEFAULT_AUDIT_PAGE = 100  # `devtrust audit ls`'s default --limit
MAX_AUDIT_PAGE = audit.MAX_PAGE


class Conflict(DevtrustError):
    """The device (or preference) is not in the state the change needs: 409."""

    http_status = 409


class Misconfigured(DevtrustError):
    """The service's own settings cannot serve the request (not the caller's fault)."""

    http_status = 503


class TaskReader(Protocol):
    """What the result backend knows of a queued task (``worker.cli._queue.task_view``)."""

    def __call__(self, task_id: str) -> Any: ...


class SyncQueue(Protocol):
    """Queues a Jamf sync on the worker; the task's id (``worker.cli._queue.send_sync``)."""

    def __call__(self, *, inventory: str, kind: str, force: bool, actor: str) -> str: ...


@dataclass
class AdminApi:
    """What the admin routes need: the inventory, the service's settings, and the
    worker's queue (default: the one ``devtrust jamf sync`` uses, from the settings)."""

    db: Database
    settings: Settings
    queue_sync: SyncQueue | None = None
    read_task: TaskReader | None = None

    def register(self, app: FastAPI) -> None:
        admin_routes(app, self)

    def send_sync(self, *, inventory: str, kind: str, force: bool, actor: str) -> str:
        if self.queue_sync is not None:
            return self.queue_sync(inventory=inventory, kind=kind, force=force, actor=actor)
        from worker.cli._queue import send_sync

        return send_sync(self.settings, inventory=inventory, kind=kind, force=force, actor=actor)

    def task(self, task_id: str) -> JamfTask:
        if self.read_task is not None:
            view = self.read_task(task_id)
        else:
            from worker.cli._queue import task_view

            view = task_view(task_id)
        return JamfTask(**view.to_dict())

    def token_ttl(self) -> timedelta:
        """``devices enroll``'s default: the enrollment_token_ttl setting."""
        try:
            return parse_duration(
                self.settings.enrollment_token_ttl,
                what="setting DEVTRUST_ENROLLMENT_TOKEN_TTL",
                at_least=tokens.MIN_TTL,
                at_most=tokens.MAX_TTL,
            )
        except InvalidArgument as exc:
            raise Misconfigured(f"the service cannot mint tokens: {exc}") from None


# -- who may ------------------------------------------------------------------------


def _roles(user: User) -> str:
    return ", ".join(r.value for r in user.roles) or "no role"


def needs_admin(user: User, why: str = "") -> AccessDenied:
    return AccessDenied(
        f"this needs the {Role.DEVICE_ADMIN.value} role; user {user.name} has {_roles(user)}{why}"
    )


def require_admin(user: User) -> User:
    if not user.has(Role.DEVICE_ADMIN):
        raise needs_admin(user)
    return user


def _own(user: User, device: Device) -> bool:
    return user.name in (device.owner, device.assigned_user)


def readable(user: User, read: Callable[[], T], device: Callable[[T], Device]) -> T:
    """What ``read`` finds, for a device admin, or for an editor when the device is its
    own; anyone else, and an editor asking about another's device (or one that does not
    exist: no telling which), is refused naming the role needed."""
    if user.has(Role.DEVICE_ADMIN):
        return read()
    if not user.has(Role.EDITOR):
        raise needs_admin(user)
    not_own = " (an editor reads only its own devices: those it enrolled or is assigned)"
    try:
        found = read()
    except NotFound:
        raise needs_admin(user, not_own) from None
    if not _own(user, device(found)):
        raise needs_admin(user, not_own)
    return found


def may_grant(user: User, roles: Iterable[Role], what: str) -> None:
    """Refuse ``what`` when it would give anyone a role ``user`` does not hold."""
    lacking = [r.value for r in dict.fromkeys(roles) if not user.has(r)]
    if lacking:
        noun = "role" if len(lacking) == 1 else "roles"
        raise AccessDenied(
            f"{what} would grant the {noun} {', '.join(lacking)}, which user {user.name} does "
            f"not hold ({_roles(user)}): a device admin grants only roles it holds itself"
        )


@contextlib.contextmanager
def conflicts() -> Iterator[None]:
    """A request the schema accepts that names a device the inventory cannot act on as
    asked (an asset tag two OSes share, a device already enrolled, no collected data)
    is a conflict with the inventory's state: 409, the service's own message."""
    try:
        yield
    except InvalidArgument as exc:
        raise Conflict(str(exc)) from None


def _page(page: Page) -> DevicePage:
    return DevicePage(devices=[device_to_dict(d) for d in page.items], next=page.next_cursor)


# -- the routes -----------------------------------------------------------------------

# A device, as the CLI names one: its asset tag or its id (an asset tag may hold a "/").
# The document leaves "%" out of the path's pattern: a "%" in an asset tag must travel as
# "%25", and a client (or a fuzzer) that sends one bare sends another string. The route
# takes every asset tag the inventory can hold, "%" included, once decoded.
DevicePath = Annotated[
    SerialNumber,
    Path(description="the device's asset tag or device id (UUID); a '%' in it as %25"),
    WithJsonSchema(
        {"type": "string", "minLength": 1, "maxLength": MAX_ASSET_TAG_LENGTH,
         "pattern": "^ *[!-$&-~](?:[ -$&-~]*[!-$&-~])? *$"}
    ),
]  # fmt: skip
OSQuery = Annotated[
    OSType | None, Query(description="the device's OS, when two devices share the asset tag")
]
After = Annotated[
    str | None,
    Query(pattern=DEVICE_CURSOR_PATTERN, description="the previous page's `next`"),
]
PageSize = Annotated[
    int, Query(ge=1, le=device_service.MAX_PAGE_SIZE, description="devices per page")
]
UserPath = Annotated[UserName, Path(description="the user's name")]
# What `devtrust jamf sync` printed: a Celery task id (a UUID).
TaskId = Annotated[
    str, Path(pattern="^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
              description="the task id `POST /v1/admin/jamf/sync` answered")
]  # fmt: skip
# One of ``audit.EVENT_TYPES`` (the service refuses any other, as the CLI does).
EventType = Annotated[str, WithJsonSchema({"type": "string", "enum": list(audit.EVENT_TYPES)})]


def admin_routes(app: FastAPI, admin: AdminApi) -> None:
    db = admin.db

    def caller(credential: str) -> User:
        return users.authenticate(db.uow(), credential)

    def device_admin(credential: str) -> User:
        return require_admin(caller(credential))

    _device_routes(app, admin, caller, device_admin)
    _user_routes(app, db, device_admin)
    _audit_routes(app, db, device_admin)
    _config_routes(app, db, device_admin)
    _jamf_routes(app, admin, device_admin)

    @app.get("/v1/me/devices", responses=answers.OWN)
    def my_devices(
        credential: Credential,
        after: After = None,
        limit: PageSize = device_service.DEFAULT_PAGE_SIZE,
    ) -> DevicePage:
        """The caller's own devices (any role): those it enrolled or is assigned, paged
        as ``/v1/admin/devices``."""
        me = caller(credential)
        return _page(device_service.list_user_devices(db.uow(), me.name, limit=limit, cursor=after))

    # A path with two methods, or one a device's asset tag could swallow ("{ref:path}"
    # takes "<tag>/diff" too): any other method is 405 with an Allow naming exactly the
    # path's own (by default, the first route matched would name only its own method).
    devices = "/v1/admin/devices/{ref:path}"
    for path, methods in (
        ("/v1/admin/devices", ("GET", "POST")),
        (f"{devices}/diff", ("GET",)),
        (f"{devices}/raw", ("GET",)),
        (f"{devices}/enroll-token", ("POST",)),
        (f"{devices}/unenroll", ("POST",)),
        (devices, ("GET", "DELETE")),  # after its suffixed paths
        ("/v1/admin/users", ("GET", "POST")),
        ("/v1/admin/users/{name}", ("PATCH", "DELETE")),
        ("/v1/admin/config", ("GET", "PATCH")),
    ):
        _only(app, path, methods)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")


def _only(app: FastAPI, path: str, methods: tuple[str, ...]) -> None:
    allow = ", ".join(methods)

    def not_allowed() -> None:
        raise StarletteHTTPException(405, headers={"Allow": allow})

    others = [m for m in _METHODS if m not in methods]
    app.add_api_route(path, not_allowed, methods=others, include_in_schema=False)


def _device_routes(app: FastAPI, admin: AdminApi, caller: Auth, device_admin: Auth) -> None:
    db = admin.db
    base = "/v1/admin/devices"

    @app.get(base, responses=answers.ADMIN)
    def list_devices(
        credential: Credential,
        after: After = None,
        limit: PageSize = device_service.DEFAULT_PAGE_SIZE,
    ) -> DevicePage:
        """``devtrust devices ls``: a page of devices by asset tag, then OS; ``next`` is
        the ``after`` of the following page, null on the last."""
        device_admin(credential)
        return _page(device_service.list_devices(db.uow(), limit=limit, cursor=after))

    @app.post(base, status_code=201, responses=answers.ADMIN)
    def add_device(body: DeviceAdd, credential: Credential) -> DeviceResult:
        """``devtrust devices add``: register a device, not enrolled (409: already there;
        404: no such assigned user)."""
        me = device_admin(credential)
        device = device_service.register_device(
            db.uow(),
            os_type=body.os_type,
            asset_tag=body.asset_tag,
            actor=me.name,
            assigned_user=body.assigned_user,
        )
        return DeviceResult(device=device_to_dict(device))

    # Before ``{ref:path}``'s own routes: an asset tag may hold a "/", so "<tag>/diff" is
    # matched here first.
    @app.get(f"{base}/{{ref:path}}/diff", responses=answers.ADMIN)
    def diff_device(ref: DevicePath, credential: Credential, os: OSQuery = None) -> DeviceDiff:
        """``devtrust devices diff``: the device's last collected data against its MDM
        profile, field by field; a field with ``ok`` false fails auto-enrollment."""
        from inventory.drift import diff_report, no_collected_data

        me = caller(credential)
        with conflicts():
            device = readable(
                me, lambda: device_service.get_device(db.uow(), ref, os_type=os), lambda d: d
            )
        history = device_service.collected_history(db.uow(), device.id, limit=1)
        if not history:
            raise Conflict(no_collected_data(device))
        return DeviceDiff.model_validate(diff_report(device, history[0]))

    @app.get(f"{base}/{{ref:path}}/raw", responses=answers.ADMIN)
    def raw_device(ref: DevicePath, credential: Credential, os: OSQuery = None) -> RawRecord:
        """``devtrust devices get --raw``: the record the MDM sent when a sync last wrote
        the device (409 when no sync has)."""
        me = caller(credential)
        with conflicts():
            device, text = readable(
                me, lambda: device_service.raw_record(db.uow(), ref, os_type=os), lambda r: r[0]
            )
        if text is None:
            raise Conflict(no_mdm_record(device))
        return RawRecord(device=device_to_dict(device), record=json.loads(text))

    @app.post(f"{base}/{{ref:path}}/enroll-token", status_code=201, responses=answers.ADMIN)
    def enroll_token(
        ref: DevicePath,
        credential: Credential,
        os: OSQuery = None,
        body: Annotated[EnrollTokenRequest | None, Body()] = None,
    ) -> EnrollTokenIssued:
        """``devtrust devices enroll``: a token to enroll the device, shown only in this
        answer (409: the device is enrolled already)."""
        me = device_admin(credential)
        seconds = body.ttl_seconds if body is not None else None
        ttl = timedelta(seconds=seconds) if seconds is not None else admin.token_ttl()
        with conflicts():
            issued = tokens.create_token(
                db.uow(), ref, actor=me.name, kind=TokenKind.ADMIN, ttl=ttl, os_type=os
            )
        return EnrollTokenIssued(
            token=issued.token,
            device_id=issued.device.id,
            asset_tag=issued.device.asset_tag,
            expire_time=issued.expire_time.isoformat(),
            ttl_seconds=int(ttl.total_seconds()),
        )

    @app.post(f"{base}/{{ref:path}}/unenroll", responses=answers.ADMIN)
    def unenroll_device(ref: DevicePath, credential: Credential, os: OSQuery = None) -> Unenrolled:
        """``devtrust devices unenroll``: owner and credential cleared; ``changed`` false
        when it was not enrolled."""
        me = device_admin(credential)
        with conflicts():
            device, changed = device_service.unenroll_device(
                db.uow(), ref, actor=me.name, os_type=os
            )
        return Unenrolled(device=device_to_dict(device), changed=changed)

    @app.get(f"{base}/{{ref:path}}", responses=answers.ADMIN)
    def get_device(ref: DevicePath, credential: Credential, os: OSQuery = None) -> DeviceResult:
        """``devtrust devices get``: the device with its profile, posture and credential."""
        me = caller(credential)
        with conflicts():
            device = readable(
                me, lambda: device_service.get_device(db.uow(), ref, os_type=os), lambda d: d
            )
        return DeviceResult(device=device_to_dict(device))

    @app.delete(f"{base}/{{ref:path}}", responses=answers.ADMIN)
    def remove_device(ref: DevicePath, credential: Credential, os: OSQuery = None) -> DeviceResult:
        """``devtrust devices rm``: remove the device; the answer is what it was."""
        me = device_admin(credential)
        with conflicts():
            device = device_service.remove_device(db.uow(), ref, actor=me.name, os_type=os)
        return DeviceResult(device=device_to_dict(device))


def _credential(user: User, token: str) -> UserCredential:
    return UserCredential(name=user.name, roles=[r.value for r in user.roles], token=token)


def _user_routes(app: FastAPI, db: Database, device_admin: Auth) -> None:
    base = "/v1/admin/users"

    @app.get(base, responses=answers.ADMIN)
    def list_users(credential: Credential) -> UserList:
        """``devtrust users ls``: every user and their roles, by name."""
        device_admin(credential)
        return UserList(users=[user_to_dict(u) for u in users.list_users(db.uow())])

    @app.post(base, status_code=201, responses=answers.ADMIN)
    def add_user(body: UserAdd, credential: Credential) -> UserCredential:
        """``devtrust users add``: the user and their credential, shown only in this answer.
        403 when it would grant a role the caller does not hold."""
        me = device_admin(credential)
        roles = tuple(dict.fromkeys(body.roles))
        may_grant(me, roles, f"adding user {body.name}")
        user, token = users.add_user(
            db.uow(), body.name, roles, actor=me.name, logins=users.parse_logins(body.logins)
        )
        return _credential(user, token)

    @app.patch(f"{base}/{{name}}", responses=answers.ADMIN)
    def edit_user(name: UserPath, body: UserEdit, credential: Credential) -> UserResult:
        """``devtrust users edit``: replace the roles and/or the logins. 403 when the new
        roles hold one the user did not have and the caller does not hold."""
        me = device_admin(credential)
        roles = tuple(dict.fromkeys(body.roles)) if body.roles is not None else None
        logins = users.parse_logins(body.logins) if body.logins is not None else None

        def granting(current: User) -> None:  # in the write, on the roles it changes
            if roles is not None:
                may_grant(me, [r for r in roles if not current.has(r)], f"editing user {name}")

        user = users.edit_user(
            db.uow(), name, actor=me.name, roles=roles, logins=logins, check=granting
        )
        return UserResult(user=user_to_dict(user))

    @app.delete(f"{base}/{{name}}", responses=answers.ADMIN)
    def remove_user(name: UserPath, credential: Credential) -> UserResult:
        """``devtrust users rm``: their credential stops working at once."""
        me = device_admin(credential)
        return UserResult(user=user_to_dict(users.remove_user(db.uow(), name, actor=me.name)))

    @app.post(f"{base}/{{name}}/reset-token", responses=answers.ADMIN)
    def reset_token(name: UserPath, credential: Credential) -> UserCredential:
        """``devtrust users reset-token``: a new credential, shown only in this answer. 403
        when the user holds a role the caller does not: their credential would grant it."""
        me = device_admin(credential)

        def granting(current: User) -> None:  # in the write: the roles it would hand over
            may_grant(me, current.roles, f"resetting the credential of {name}")

        user, token = users.reset_token(db.uow(), name, actor=me.name, check=granting)
        return _credential(user, token)


def _audit_routes(app: FastAPI, db: Database, device_admin: Auth) -> None:
    @app.get("/v1/admin/audit", responses=answers.ADMIN)
    def list_audit(
        credential: Credential,
        type: Annotated[EventType | None, Query(description="only this event type")] = None,
        failed: Annotated[bool, Query(description="only failed attempts")] = False,
        since: Annotated[UTCTime | None, Query(description="only events since then")] = None,
        after: Annotated[
            str | None,
            Query(pattern=EVENT_CURSOR_PATTERN, description="the previous page's `next`"),
        ] = None,
        limit: Annotated[
            int, Query(ge=1, le=MAX_AUDIT_PAGE, description="events per page")
        ] = DEFAULT_AUDIT_PAGE,
    ) -> AuditPage:
        """``devtrust audit ls``: matching events, newest first; ``next`` (the id of the
        page's oldest) is the ``after`` of the page of older ones, null when none are left.
        The CLI's newest N, oldest first, is the first pages reversed."""
        device_admin(credential)
        events = audit.events_page(
            db.uow(),
            type=type,
            failed_only=failed,
            since=since,
            before=int(after) if after is not None else None,
            limit=limit + 1,
        )
        more = len(events) > limit
        events = events[:limit]
        return AuditPage(
            events=[event_to_dict(e) for e in events],
            next=str(events[-1].id) if more else None,
        )


def _config_routes(app: FastAPI, db: Database, device_admin: Auth) -> None:
    @app.get("/v1/admin/config", response_model=dict[str, Any], responses=answers.ADMIN)
    def show_config(credential: Credential) -> dict[str, Any]:
        """``devtrust config show --format json``: the cluster_auth_preference resource;
        ``metadata.revision`` is what a change may name to refuse a stale edit."""
        device_admin(credential)
        return to_resource(preference.get_preference(db.uow()))

    @app.patch("/v1/admin/config", responses=answers.ADMIN)
    def set_config(body: PreferenceUpdate, credential: Credential) -> PreferenceUpdated:
        """``devtrust config set`` / ``edit``: change the fields given, validated as the CLI
        validates them (400 naming the field); 409 when ``revision`` is not the stored one."""
        me = device_admin(credential)
        current = preference.get_preference(db.uow())
        values = body.device_trust.model_dump(mode="json", exclude_unset=True)
        wanted = parse_device_trust(values, current.device_trust)
        revision = body.revision if body.revision is not None else current.revision
        stored, changed = preference.update_preference(
            db.uow(), wanted, actor=me.name, expected_revision=revision
        )
        return PreferenceUpdated(changed=changed, preference=to_resource(stored))


def _jamf_routes(app: FastAPI, admin: AdminApi, device_admin: Auth) -> None:
    def source() -> Any:
        from jamf.config import source_from_settings

        try:
            return source_from_settings(admin.settings)
        except ConfigurationError as exc:
            raise Misconfigured(f"the service's Jamf settings are invalid: {exc}") from None

    @app.post("/v1/admin/jamf/sync", status_code=202, responses=answers.ADMIN)
    def jamf_sync(
        credential: Credential, body: Annotated[JamfSyncRequest | None, Body()] = None
    ) -> JamfSyncQueued:
        """``devtrust jamf sync``: queue a sync of one inventory (default: the first) on the
        worker; the answer names its task. 404: no such inventory."""
        me = device_admin(credential)
        body = body or JamfSyncRequest()
        configured = source()
        if body.inventory is None:
            spec = configured.inventories[0]
        else:
            spec = next((s for s in configured.inventories if s.name == body.inventory), None)
            if spec is None:
                known = ", ".join(s.name for s in configured.inventories)
                raise NotFound(f"unknown Jamf inventory {body.inventory!r}: configured are {known}")
        task_id = admin.send_sync(
            inventory=spec.name, kind=body.kind, force=body.force, actor=me.name
        )
        return JamfSyncQueued(task_id=task_id, inventory=spec.name, kind=body.kind,
                              force=body.force)  # fmt: skip

    @app.get("/v1/admin/jamf/tasks/{task_id}", responses=answers.ADMIN)
    def jamf_task(task_id: TaskId, credential: Credential) -> JamfTask:
        """``devtrust jamf sync --wait``: a queued sync's state, its progress while it runs
        and its run (or error) once done. 503 when the result backend cannot be read."""
        device_admin(credential)
        try:
            return admin.task(task_id)
        except (OSError, RuntimeError) as exc:
            raise Misconfigured(
                f"cannot read the sync task's state: the result backend did not answer "
                f"({one_line(exc)})"
            ) from None

    @app.get("/v1/admin/jamf/status", responses=answers.ADMIN)
    def jamf_status(credential: Credential) -> JamfStatus:
        """``devtrust jamf status --format json``: each inventory's last partial and full
        sync, its alert flag and any sync running (``alert``: the CLI exits 3)."""
        device_admin(credential)
        return _status(admin, source())


def _status(admin: AdminApi, source: Any) -> JamfStatus:
    from worker.jobs import sync_status_json

    entries, notes = sync_status_json(admin.db, admin.settings, source)
    alert = any(entry["alert"] for entry in entries)
    return JamfStatus(inventories=entries, alert=alert, notes=notes)
