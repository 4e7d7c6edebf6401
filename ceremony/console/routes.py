"""The console's routes under ``/ui/``: pages for browsers, in HTML, never JSON.

Every route reads its query string and form itself (``ceremony.console.filters``), so
bad input is a 4xx page naming what is wrong, never FastAPI's JSON nor a 500. Every
change is a POST with the session's CSRF token, from this origin; every answer is
``Cache-Control: no-store`` (a minted token must not stay in a cache) with a
Content-Security-Policy that lets the page load nothing from anywhere else.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlencode

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool

from ceremony.admin import Conflict, readable, require_admin
from ceremony.console import AdminConsole, filters
from ceremony.console.sessions import LOGIN_COOKIE, SESSION_COOKIE, Session
from inventory.domain import (
    EnrollStatus,
    OSType,
    Role,
    TokenKind,
    TrustLevel,
    User,
)
from inventory.errors import (
    AccessDenied,
    DevtrustError,
    InvalidArgument,
    NotFound,
    Unauthenticated,
    quoted,
)
from inventory.preference import ANY, FIELDS, DeviceTrustMode, parse_device_trust, to_resource
from inventory.serialize import device_to_dict, event_to_dict, pretty_raw, run_to_dict
from inventory.services import audit, preference, tokens, users
from inventory.services import devices as device_service
from inventory.services import source_sync as store

log = logging.getLogger("devtrust.console")

PAGE_SIZE = 50
AUDIT_PAGE = 100
CSV_BATCH = 1000
MAX_FORM_BYTES = 256 * 1024  # a CA bundle of a few dozen certificates
DEVICE_ACTIONS = {
    "enroll-token": "Mint an enrollment token",
    "unenroll": "Unenroll",
    "remove": "Remove from the inventory",
}
DONE = {"unenrolled": "The device was unenrolled.", "not-enrolled": "It was not enrolled."}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def _when(value: datetime | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    else:
        moment = value
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("ceremony.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.globals.update(
        os_types=list(OSType),
        enroll_statuses=list(EnrollStatus),
        trust_levels=list(TrustLevel),
        no_source=device_service.NO_SOURCE,
        event_types=audit.EVENT_TYPES,
        modes=list(DeviceTrustMode),
        any_level=ANY,
    )
    return env


class _Page:
    """One request's view of the console: who, their CSRF token, the templates."""

    def __init__(self, console: AdminConsole, env: jinja2.Environment, request: Request) -> None:
        self.console = console
        self.env = env
        self.request = request
        self.user: User | None = None
        self.session: Session | None = None

    @property
    def is_admin(self) -> bool:
        return self.user is not None and self.user.has(Role.DEVICE_ADMIN)

    def me(self) -> User:
        if self.user is None:
            raise Unauthenticated("sign in first")
        return self.user

    def render(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        signer = self.console.signer()
        html = self.env.get_template(name).render(
            me=self.user,
            is_admin=self.is_admin,
            csrf=signer.csrf(self.session) if self.session is not None else "",
            path=self.request.url.path,
            **context,
        )
        return HTMLResponse(html, status_code=status, headers=HEADERS)


def console_routes(app: FastAPI, console: AdminConsole) -> None:
    admin = console.admin
    db = admin.db
    env = _environment()

    def secure(request: Request) -> bool:
        return request.url.scheme == "https" or admin.settings.tls_terminated_by_proxy

    def signed_in(request: Request) -> _Page:
        """The request's page, with its user when its session cookie is valid."""
        page = _Page(console, env, request)
        signer = console.signer()
        session = signer.parse(request.cookies.get(SESSION_COOKIE))
        if session is None:
            return page
        found = users.user_and_credential_hash(db.uow(), session.user)
        if found is not None and signer.valid(session, found[1], datetime.now(UTC)):
            page.user, page.session = found[0], session
        return page

    def error_page(page: _Page, exc: DevtrustError | DBAPIError) -> Response:
        if isinstance(exc, DBAPIError):
            from ceremony.service import database_error

            status, message = database_error(exc)
        else:
            status, message = exc.http_status, str(exc)
        if status == 401 and page.request.method == "GET":
            return _to_login(page.request)
        return page.render("error.html", status=status, status_code=status, message=message)

    def guarded(
        handler: Callable[[_Page], Response], *, admin_only: bool = False, public: bool = False
    ) -> Callable[[Request], Response]:
        def route(request: Request) -> Response:
            page = signed_in(request)
            try:
                if not public:
                    me = page.me()
                    if admin_only:
                        require_admin(me)
                return handler(page)
            except (DevtrustError, DBAPIError) as exc:
                return error_page(page, exc)

        return route

    def posted(
        handler: Callable[[_Page, dict[str, str]], Response], *, admin_only: bool = True
    ) -> Callable[[Request], Any]:
        async def route(request: Request) -> Response:
            body = await request.body()

            def work() -> Response:
                page = signed_in(request)
                try:
                    form = _form(request, body)
                    me = page.me()
                    if admin_only:
                        require_admin(me)
                    _same_origin(request)
                    assert page.session is not None
                    if not console.signer().csrf_ok(page.session, form.get("csrf")):
                        raise AccessDenied(
                            "the form's CSRF token does not match your session: reload the "
                            "page and try again"
                        )
                    return handler(page, form)
                except (DevtrustError, DBAPIError) as exc:
                    return error_page(page, exc)

            return await run_in_threadpool(work)

        return route

    def add(path: str, endpoint: Callable[..., Any], method: str = "GET") -> None:
        app.add_api_route(path, endpoint, methods=[method], include_in_schema=False)

    # -- signing in and out ---------------------------------------------------------

    def to_devices(_: Request) -> Response:
        return RedirectResponse("/ui/devices", status_code=303, headers=HEADERS)

    add("/ui", to_devices)
    add("/ui/", to_devices)

    def login_form(page: _Page, *, message: str = "", status: int = 200) -> Response:
        signer = console.signer()
        nonce = page.request.cookies.get(LOGIN_COOKIE) or signer.login_nonce()
        if len(nonce) > 64:
            nonce = signer.login_nonce()
        next_path = _next(page.request.query_params.get("next"))
        response = page.render(
            "login.html", status=status, login_csrf=signer.login_csrf(nonce),
            next_path=next_path, message=message,
        )  # fmt: skip
        response.set_cookie(
            LOGIN_COOKIE, nonce, max_age=3600, path="/ui", httponly=True,
            secure=secure(page.request), samesite="strict",
        )  # fmt: skip
        return response

    def show_login(page: _Page) -> Response:
        if page.user is not None:
            return RedirectResponse(_next(page.request.query_params.get("next")), 303)
        return login_form(page)

    add("/ui/login", guarded(show_login, public=True))

    async def sign_in(request: Request) -> Response:
        body = await request.body()

        def work() -> Response:
            page = _Page(console, env, request)
            signer = console.signer()
            try:
                form = _form(request, body)
                _same_origin(request)
                if not signer.login_csrf_ok(request.cookies.get(LOGIN_COOKIE), form.get("csrf")):
                    raise AccessDenied(
                        "the sign-in form expired or came from elsewhere: sign in again"
                    )
                credential = form.get("credential", "").strip()
                if not credential:
                    raise Unauthenticated("give your user credential")
                try:
                    user = users.authenticate(db.uow(), credential)
                except Unauthenticated:
                    log.info("console sign-in refused: not a user's credential")
                    raise Unauthenticated(
                        "that is not a user's credential (the one `devtrust users add` or "
                        "`devtrust users reset-token` printed)"
                    ) from None
            except (DevtrustError, DBAPIError) as exc:
                if isinstance(exc, DevtrustError) and exc.http_status in (400, 401, 403):
                    return login_form(page, message=str(exc), status=exc.http_status)
                return error_page(page, exc)
            credential_hash = users.credential_hash(credential)
            cookie = signer.issue(user.name, credential_hash, datetime.now(UTC))
            log.info("console sign-in: %s", user.name)
            response = RedirectResponse(_next(form.get("next")), 303, headers=HEADERS)
            response.set_cookie(
                SESSION_COOKIE, cookie, max_age=int(signer.ttl.total_seconds()), path="/ui",
                httponly=True, secure=secure(request), samesite="strict",
            )  # fmt: skip
            response.delete_cookie(LOGIN_COOKIE, path="/ui")
            return response

        return await run_in_threadpool(work)

    add("/ui/login", sign_in, "POST")

    def sign_out(page: _Page, _: dict[str, str]) -> Response:
        log.info("console sign-out: %s", page.me().name)
        response = RedirectResponse("/ui/login", 303, headers=HEADERS)
        response.delete_cookie(SESSION_COOKIE, path="/ui", secure=secure(page.request),
                               httponly=True, samesite="strict")  # fmt: skip
        return response

    add("/ui/logout", posted(sign_out, admin_only=False), "POST")

    # -- devices --------------------------------------------------------------------

    def devices_page(page: _Page) -> Response:
        me = page.me()
        params = _params(page.request)
        scope = None if page.is_admin else me.name
        where, after = filters.device_filter(params, user=scope)
        listing = device_service.list_matching_devices(
            db.uow(), where, limit=PAGE_SIZE, cursor=after
        )
        counts = device_service.device_counts(db.uow(), user=scope)
        kept = {k: v for k, v in params.items() if k != "after" and v}
        return page.render(
            "devices.html",
            devices=[device_to_dict(d) for d in listing.items],
            counts=counts,
            params=params,
            filtered=bool(kept),
            next_url=f"/ui/devices?{urlencode({**kept, 'after': listing.next_cursor})}"
            if listing.next_cursor else None,
            first_url=f"/ui/devices?{urlencode(kept)}" if after else None,
            may_open=page.is_admin or me.has(Role.EDITOR),
        )  # fmt: skip

    add("/ui/devices", guarded(devices_page))

    def find(page: _Page, ref: str) -> Any:
        me = page.me()
        ref = ref.strip()
        if not ref or len(ref) > 200:
            raise InvalidArgument("give a device id or an asset tag")
        try:
            return readable(
                me, lambda: device_service.get_device(db.uow(), ref), lambda d: d
            )
        except InvalidArgument as exc:  # an asset tag two OSes share: open it by its id
            raise InvalidArgument(f"{exc}; open the device from the devices page") from None

    def device_page(page: _Page) -> Response:
        ref = page.request.path_params["ref"]
        params = _params(page.request)
        filters.unknown(params, ("done",))
        done = params.get("done")
        if done is not None and done not in DONE:
            raise InvalidArgument(f"done: {quoted(done)} is not one of {', '.join(DONE)}")
        device = find(page, ref)
        _, raw = device_service.raw_record(db.uow(), device.id)
        history = device_service.collected_history(
            db.uow(), device.id, limit=admin.settings.collected_history_limit
        )
        from inventory.drift import compare

        fields = compare(device, history[0]) if history else None
        from inventory.serialize import collected_to_dict

        return page.render(
            "device.html",
            device=device_to_dict(device),
            label=device.label,
            raw=pretty_raw(raw) if raw is not None else None,
            history=[collected_to_dict(c) for c in history],
            fields=fields,
            drifted=fields is not None and any(not f.ok for f in fields),
            compared=_when(history[0].record_time or history[0].collect_time) if history else "",
            events=[event_to_dict(e) for e in audit.device_events(db.uow(), device.id)]
            if page.is_admin else [],
            actions=DEVICE_ACTIONS if page.is_admin else {},
            done=DONE.get(done or ""),
        )  # fmt: skip

    def confirm_page(page: _Page) -> Response:
        action = page.request.path_params["action"]
        if action not in DEVICE_ACTIONS:
            raise NotFound(f"no device action {quoted(action)}")
        filters.unknown(_params(page.request), ())
        device = find(page, page.request.path_params["ref"])
        return page.render(
            "confirm.html", device=device_to_dict(device), label=device.label,
            action=action, title=DEVICE_ACTIONS[action],
            ttl=admin.token_ttl() if action == "enroll-token" else None,
        )  # fmt: skip

    def device_action(page: _Page, form: dict[str, str]) -> Response:
        action = page.request.path_params["action"]
        if action not in DEVICE_ACTIONS:
            raise NotFound(f"no device action {quoted(action)}")
        me = page.me()
        device = find(page, page.request.path_params["ref"])
        if action == "enroll-token":
            if device.enroll_status is EnrollStatus.ENROLLED:
                raise Conflict(
                    f"device {device.label} is enrolled already: unenroll it first to enroll "
                    "it again"
                )
            try:
                issued = tokens.create_token(
                    db.uow(), device.id, actor=me.name, kind=TokenKind.ADMIN,
                    ttl=admin.token_ttl(),
                )  # fmt: skip
            except InvalidArgument as exc:
                raise Conflict(str(exc)) from None
            return page.render(
                "token.html", device=device_to_dict(issued.device), label=device.label,
                token=issued.token, expire_time=_when(issued.expire_time),
            )  # fmt: skip
        if action == "unenroll":
            _, changed = device_service.unenroll_device(db.uow(), device.id, actor=me.name)
            done = "unenrolled" if changed else "not-enrolled"
            return RedirectResponse(f"/ui/devices/{device.id}?done={done}", 303, headers=HEADERS)
        removed = device_service.remove_device(db.uow(), device.id, actor=me.name)
        return page.render("removed.html", label=removed.label)

    # The confirmation pages and actions first: a device is named by its id in links, but
    # an asset tag (which may hold a "/") works too.
    add("/ui/devices/{ref:path}/do/{action}", guarded(confirm_page, admin_only=True))
    add("/ui/devices/{ref:path}/do/{action}", posted(device_action), "POST")
    add("/ui/devices/{ref:path}", guarded(device_page))

    # -- syncs ----------------------------------------------------------------------

    def source() -> Any:
        from jamf.config import source_from_settings

        try:
            return source_from_settings(admin.settings)
        except DevtrustError as exc:
            from ceremony.admin import Misconfigured

            raise Misconfigured(f"the service's Jamf settings are invalid: {exc}") from None

    def sync_report() -> dict[str, Any]:
        from worker.jobs import sync_status

        configured = source()
        report, notes = sync_status(db, admin.settings, configured)
        entries = []
        for entry in report:
            runs = store.recent_runs(db.uow(), entry["inventory"], limit=15)
            running = entry["running"]
            entries.append({
                "inventory": entry["inventory"],
                "source": entry["source"],
                "alert": entry["alert"],
                "syncing": entry["syncing"],
                "running": run_to_dict(running) if running is not None else None,
                "runs": [run_to_dict(r) for r in runs],
            })  # fmt: skip
        return {"inventories": entries, "notes": notes,
                "running": any(e["running"] or e["syncing"] for e in entries)}  # fmt: skip

    def syncs_page(page: _Page) -> Response:
        params = _params(page.request)
        filters.unknown(params, ("queued",))
        queued = params.get("queued", "")
        if len(queued) > 200 or (queued and not queued.replace("-", "").isalnum()):
            raise InvalidArgument("queued: not a task id")
        return page.render("syncs.html", queued=queued, **sync_report())

    def syncs_live(page: _Page) -> Response:
        filters.unknown(_params(page.request), ())
        return page.render("_runs.html", **sync_report())

    def resync(page: _Page, form: dict[str, str]) -> Response:
        me = page.me()
        kind = form.get("kind", "")
        if kind not in ("full", "partial"):
            raise InvalidArgument(f"kind: {quoted(kind)} is not one of full, partial")
        configured = source()
        name = form.get("inventory", "").strip()
        names = [s.name for s in configured.inventories]
        if name not in names:
            raise NotFound(
                f"unknown Jamf inventory {quoted(name)}: configured are {', '.join(names)}"
            )
        task_id = admin.send_sync(inventory=name, kind=kind, force=False, actor=me.name)
        log.info("console resync: %s sync of %s queued by %s", kind, name, me.name)
        return RedirectResponse(f"/ui/syncs?{urlencode({'queued': task_id})}", 303,
                                headers=HEADERS)  # fmt: skip

    add("/ui/syncs", guarded(syncs_page, admin_only=True))
    add("/ui/syncs/live", guarded(syncs_live, admin_only=True))
    add("/ui/syncs", posted(resync), "POST")

    # -- audit ----------------------------------------------------------------------

    def audit_page(page: _Page) -> Response:
        params = _params(page.request)
        where, before = filters.audit_filter(params)
        events = audit.filtered_events(db.uow(), where, before=before, limit=AUDIT_PAGE + 1)
        more = len(events) > AUDIT_PAGE
        events = events[:AUDIT_PAGE]
        kept = {k: v for k, v in params.items() if k != "after" and v}
        return page.render(
            "audit.html",
            events=[event_to_dict(e) for e in events],
            params=params,
            next_url=f"/ui/audit?{urlencode({**kept, 'after': events[-1].id})}" if more else None,
            first_url=f"/ui/audit?{urlencode(kept)}" if before else None,
            csv_url=f"/ui/audit.csv?{urlencode(kept)}",
        )  # fmt: skip

    def audit_csv(page: _Page) -> Response:
        where, before = filters.audit_filter(_params(page.request))

        def rows() -> Iterator[str]:
            buffer = io.StringIO()
            out = csv.writer(buffer)
            out.writerow(["id", "time", "type", "result", "actor", "asset_tag", "os_type",
                          "device_id", "message"])  # fmt: skip
            after = before
            while True:
                batch = audit.filtered_events(db.uow(), where, before=after,
                                                    limit=CSV_BATCH)  # fmt: skip
                for e in batch:
                    out.writerow([_cell(v) for v in (
                        e.id, _when(e.time), e.type, "success" if e.success else "failed",
                        e.actor, e.asset_tag or "", e.os_type or "", e.device_id or "", e.message,
                    )])  # fmt: skip
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
                if len(batch) < CSV_BATCH:
                    return
                after = batch[-1].id

        return StreamingResponse(
            rows(), media_type="text/csv; charset=utf-8",
            headers={**HEADERS, "Content-Disposition": 'attachment; filename="devtrust-audit.csv"'},
        )  # fmt: skip

    add("/ui/audit", guarded(audit_page, admin_only=True))
    add("/ui/audit.csv", guarded(audit_csv, admin_only=True))

    # -- settings -------------------------------------------------------------------

    def settings_form(page: _Page, *, values: Mapping[str, Any] | None = None,
                      revision: int | None = None, message: str = "", saved: str = "",
                      status: int = 200) -> Response:  # fmt: skip
        current = preference.get_preference(db.uow())
        resource = to_resource(current)
        shown = dict(resource["spec"]["device_trust"])
        if values is not None:
            shown.update(values)
        return page.render(
            "settings.html", status=status, values=shown,
            cas_text="\n".join(shown["ekcert_allowed_cas"]),
            revision=current.revision if revision is None else revision,
            stored_revision=current.revision, update_time=_when(current.update_time),
            message=message, saved=saved,
        )  # fmt: skip

    def settings_page(page: _Page) -> Response:
        params = _params(page.request)
        filters.unknown(params, ("saved",))
        saved = params.get("saved", "")
        if saved and not saved.replace(",", "").replace("_", "").isalpha():
            raise InvalidArgument("saved: not a list of fields")
        return settings_form(page, saved=saved)

    def save_settings(page: _Page, form: dict[str, str]) -> Response:
        me = page.me()
        unknown = sorted(set(form) - {"csrf", "revision", *FIELDS})
        if unknown:
            raise InvalidArgument(f"unknown field {quoted(unknown[0])}")
        try:
            revision = int(form.get("revision", ""))
        except ValueError:
            raise InvalidArgument("revision: reload the page (the form lost it)") from None
        end = "-----END CERTIFICATE-----"
        text = form.get("ekcert_allowed_cas", "").replace("\r\n", "\n")
        cas = [b.strip() + "\n" + end for b in text.split(end) if b.strip()] if end in text \
            else ([text] if text.strip() else [])  # fmt: skip
        values: dict[str, Any] = {
            "mode": form.get("mode", ""),
            "auto_enroll": form.get("auto_enroll") == "on",
            "ekcert_allowed_cas": cas,
            "min_attestation": form.get("min_attestation", ""),
        }
        shown = {**values, "ekcert_allowed_cas": [text] if text.strip() else []}
        current = preference.get_preference(db.uow())
        try:
            wanted = parse_device_trust(values, current.device_trust)
            _, changed = preference.update_preference(
                db.uow(), wanted, actor=me.name, expected_revision=revision
            )
        except DevtrustError as exc:
            if exc.http_status in (400, 409):
                message = str(exc).replace("run the command again", "reload the page, edit again")
                return settings_form(page, values=shown, revision=revision,
                                     status=exc.http_status, message=message)  # fmt: skip
            raise
        saved = ",".join(changed) or "nothing"
        return RedirectResponse(f"/ui/settings?{urlencode({'saved': saved})}", 303,
                                headers=HEADERS)  # fmt: skip

    add("/ui/settings", guarded(settings_page, admin_only=True))
    add("/ui/settings", posted(save_settings), "POST")

    app.mount(
        "/ui/static", StaticFiles(packages=[("ceremony.console", "static")]), name="console-static"
    )


def _cell(value: object) -> str:
    """A CSV cell a spreadsheet will not run as a formula."""
    text = str(value)
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _params(request: Request) -> dict[str, str]:
    query = request.query_params
    if len(query) > 20:
        raise InvalidArgument("too many query parameters")
    for key in query:
        if len(query.getlist(key)) > 1:
            raise InvalidArgument(f"parameter {quoted(key)} given more than once")
    return dict(query)


def _form(request: Request, body: bytes) -> dict[str, str]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise InvalidArgument("send the page's form (application/x-www-form-urlencoded)")
    if len(body) > MAX_FORM_BYTES:
        raise InvalidArgument(f"the form is larger than {MAX_FORM_BYTES // 1024} KiB")
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                          max_num_fields=20)  # fmt: skip
    except (UnicodeDecodeError, ValueError):
        raise InvalidArgument("the form is not valid UTF-8 form data") from None
    form: dict[str, str] = {}
    for key, values in parsed.items():
        if len(values) > 1:
            raise InvalidArgument(f"field {quoted(key)} given more than once")
        form[key] = values[0]
    return form


def _same_origin(request: Request) -> None:
    """A change comes from this console's own pages (SameSite=Strict and the CSRF token
    already say so; a browser's Origin header says it a third time)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    if origin != own:
        raise AccessDenied(f"a change to the console must come from its own pages, not {origin}")


def _next(value: str | None) -> str:
    """Where to go after signing in: a console page only (no open redirect)."""
    if value and value.startswith("/ui/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/ui/devices"


def _to_login(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/ui/login?{urlencode({'next': target})}", 303, headers=HEADERS)
