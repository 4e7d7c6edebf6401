"""The ceremony HTTP service (``devtrust serve``): enrollment in two round trips, health.

Routes (JSON; the device agent sends the user's credential as ``Authorization: Bearer``):

- ``POST /v1/enroll/init``: token, collected data and the device's keys -> a challenge;
- ``POST /v1/enroll/complete``: the answer to the challenge -> the enrolled device;
- ``POST /v1/enroll/self-token``: for editors and device admins, register the calling
  device if needed and mint a token to enroll it (``device enroll --current-device``);
- ``POST /v1/auto-enroll``: at login, queue the auto-enrollment check on the worker and
  answer its verdict (a token for the ceremony), or 202 and ``GET /v1/auto-enroll/<id>``;
- ``POST /v1/authenticate/init`` and ``/complete``: an enrolled device proves itself again
  (a quote or a signature over a nonce) and the user gets a short-lived certificate
  bound to it; ``GET /v1/whoami`` names the user a credential belongs to;
- ``POST /v1/webhooks/jamf``: Jamf Pro's webhooks, each queueing a sync of the one
  device it names on the worker (``ceremony.webhooks``);
- ``/v1/admin/*`` and ``GET /v1/me/devices``: the admin CLI's operations, by role
  (``ceremony.admin``); ``/ui/``: the web console on them (``ceremony.console``);
- ``GET /v1/access/check``: the proxies' forward-auth check of a forwarded device
  certificate, answered from memory that every change invalidates (``ceremony.gate``);
- ``GET /healthz``: whether the database and the broker answer;
- ``GET /metrics``: syncs, requests, auto-enrollment verdicts and the queue, in
  Prometheus' text format (``ceremony.metrics``).

Every refusal is a 4xx whose body is ``{"error": "<one line>"}``, and every status a
route can answer is in ``/openapi.json`` (``ceremony.answers``), with the bearer scheme;
so is, for every base64 field, the TPM structure it carries, its framing and its size
limit (``ceremony.protocol.Blob``), for agents written from the document alone.
Bodies over ``MAX_BODY_BYTES`` are refused unread with 413, too many or too large
headers with 431 (``ceremony.limits``). Nothing a client sends yields a 500, and a
database error is 503 only when the database cannot be reached.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI, Path, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection

from ceremony import answers
from ceremony.authn import DeviceAuthentication
from ceremony.autoenroll import AutoEnrollment
from ceremony.enroll import EnrollmentCeremony
from ceremony.gate import AccessGate, access_routes
from ceremony.limits import RequestLimits
from ceremony.metrics import Metrics, RequestMetrics
from ceremony.protocol import (
    CHECK_ID_PATTERN,
    AuthChallenge,
    AuthComplete,
    AuthInit,
    AutoEnrollPending,
    AutoEnrollRequest,
    AutoEnrollToken,
    DeviceCertificate,
    DeviceResult,
    EnrollChallenge,
    EnrollComplete,
    EnrollInit,
    Health,
    SelfToken,
    SelfTokenRequest,
    WhoAmI,
)
from ceremony.ratelimit import RateLimited
from ceremony.webhooks import JamfWebhooks, webhook_routes
from inventory.db import create_db_engine
from inventory.errors import DevtrustError, Unauthenticated, one_line
from inventory.serialize import device_to_dict
from inventory.services import users
from inventory.settings import Settings

if TYPE_CHECKING:  # ceremony.admin imports this module
    from ceremony.admin import AdminApi
    from ceremony.console import AdminConsole

log = logging.getLogger("devtrust.serve")

Check = Callable[[], None]


def database_check(settings: Settings) -> Check:
    engine = create_db_engine(settings.database_url_value, pool_pre_ping=True)

    def check() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    return check


def broker_check(broker_url: str, transport_options: dict[str, Any]) -> Check:
    """The queue the service hands work to (its URL and options come from the worker)."""

    def check() -> None:
        from kombu.connection import Connection

        options = {"transport_options": transport_options, "connect_timeout": 2}
        with Connection(broker_url, **options) as c:  # type: ignore[no-untyped-call]
            c.ensure_connection(max_retries=1, timeout=2)

    return check


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _location(part: object) -> str:
    """One step of an error's location; a field name the client made up may hold
    anything, so it is escaped onto one line and cut short."""
    text = str(part)
    if not text.isprintable():
        text = repr(text)
    return text if len(text) <= 64 else f"{text[:61]}..."


def _validation_message(exc: RequestValidationError) -> str:
    first = exc.errors()[0]
    if first.get("type") == "json_invalid":
        return "request body is not valid JSON"
    where = ".".join(_location(p) for p in first.get("loc", ()) if p != "body")
    message = str(first.get("msg", "is invalid")).removeprefix("Value error, ")
    return f"{where}: {message}" if where else f"request body: {message}"


class BearerCredential(HTTPBearer):
    """The user's credential from ``Authorization: Bearer <DEVTRUST_USER_TOKEN>``.

    An ``HTTPBearer`` so the OpenAPI document declares the scheme on every route that
    reads it; the header is read, and refused, in the service's own words."""

    async def __call__(self, request: HTTPConnection) -> str:  # type: ignore[override]
        authorization = request.headers.get("authorization")
        if not authorization:
            raise Unauthenticated("no user credential given: set DEVTRUST_USER_TOKEN")
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthenticated("the Authorization header must be 'Bearer <user credential>'")
        return value.strip()


USER_CREDENTIAL = BearerCredential(
    scheme_name="userCredential",
    description="the user's credential, printed once by `devtrust users add`",
)
Credential = Annotated[str, Security(USER_CREDENTIAL)]


# SQLite's driver calls nearly everything an OperationalError, a missing table too; these
# are the codes that say the file cannot be used right now.
_SQLITE_UNAVAILABLE = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_CANTOPEN", "SQLITE_IOERR",
                       "SQLITE_FULL", "SQLITE_READONLY", "SQLITE_PROTOCOL")  # fmt: skip


def _unavailable(exc: DBAPIError) -> bool:
    if exc.connection_invalidated or isinstance(exc, InterfaceError):
        return True
    if not isinstance(exc, OperationalError):
        return False
    sqlite_code = getattr(exc.orig, "sqlite_errorname", None)  # PostgreSQL's: all of them
    return sqlite_code is None or sqlite_code.startswith(_SQLITE_UNAVAILABLE)


def database_error(exc: DBAPIError) -> tuple[int, str]:
    """What to answer for a database error: only one that says the database cannot be
    reached or used right now is 503. A value it refused to store or a constraint it
    enforced is about the request, and anything else is a fault of the service's own."""
    if _unavailable(exc):
        log.error("database unavailable: %s", one_line(exc))
        return 503, "the inventory database is unavailable; try again shortly"
    if isinstance(exc, DataError):
        log.warning("the database refused a value: %s", one_line(exc))
        return 400, "the request holds a value the inventory cannot store"
    if isinstance(exc, IntegrityError):
        log.warning("the database refused a change: %s", one_line(exc))
        return 409, "the request conflicts with a concurrent change; try again"
    log.error("database error", exc_info=exc)
    return 500, "internal error: the inventory database refused the statement"


def create_app(
    settings: Settings,
    checks: dict[str, Check],
    ceremony: EnrollmentCeremony | None = None,
    auto_enrollment: AutoEnrollment | None = None,
    authentication: DeviceAuthentication | None = None,
    webhooks: JamfWebhooks | None = None,
    metrics: Metrics | None = None,
    access: AccessGate | None = None,
    admin: AdminApi | None = None,
    console: AdminConsole | bool = True,
) -> FastAPI:
    """The service; ``checks`` are what ``/healthz`` tries (name -> raises if unwell).

    With ``admin``, the web console (``/ui/``) is served too, on the admin API's
    inventory, unless ``console`` is False (or is the console to serve).

    Without ``ceremony`` and ``auto_enrollment`` only ``/healthz`` (and ``/metrics``) is
    served.
    """
    # No redirects for trailing slashes: a wrong path is a 404 in the error shape.
    app = FastAPI(title="devtrust ceremony service", version="0.1", redirect_slashes=False)
    metrics = metrics or Metrics()
    app.add_middleware(RequestLimits)
    # Outermost: a request the limits refuse is counted too.
    app.add_middleware(RequestMetrics, metrics=metrics, routes=lambda: app.router.routes)

    @app.exception_handler(DevtrustError)
    async def refused(_: Request, exc: DevtrustError) -> JSONResponse:
        response = _error(exc.http_status, str(exc))
        if isinstance(exc, RateLimited):
            response.headers["Retry-After"] = str(exc.retry_after)
        if exc.http_status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(RequestValidationError)
    async def malformed(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_refused(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI's own refusals: an unknown route or method, or a body it could not
        # decode at all (not UTF-8, nested too deeply for the JSON parser).
        message = str(exc.detail)
        if exc.status_code == 400 and exc.__cause__ is not None:
            message = "request body is not valid JSON"
            if isinstance(exc.__cause__, RecursionError):
                message = "request body is nested too deeply"
        response = _error(exc.status_code, message)
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(DBAPIError)
    async def database_refused(_: Request, exc: DBAPIError) -> JSONResponse:
        return _error(*database_error(exc))

    if ceremony is not None:
        _enrollment_routes(app, ceremony)
    if auto_enrollment is not None:
        _auto_enrollment_routes(app, auto_enrollment, metrics)
    if authentication is not None:
        _authentication_routes(app, authentication)
    if webhooks is not None:
        webhook_routes(app, webhooks)
    if access is not None:
        access_routes(app, access)
    if admin is not None:
        admin.register(app)
    if console is True and admin is not None:
        from ceremony.console import AdminConsole

        console = AdminConsole(admin)
    if not isinstance(console, bool):
        console.register(app)

    @app.get(
        "/healthz",
        response_model=Health,
        responses={
            503: {"model": Health, "description": "The database or the broker does not answer"},
            **answers.refusals(413, 431),
        },
    )
    def healthz() -> JSONResponse:
        """Whether the database and the broker answer: 200 when both do, else 503."""
        report: dict[str, Any] = {}
        for name, check in checks.items():
            try:
                check()
                report[name] = "ok"
            except Exception as exc:  # what is wrong goes in the answer, not a 500
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                report[name] = f"unreachable: {first[:200]}"
        healthy = all(value == "ok" for value in report.values())
        return JSONResponse({"status": "ok" if healthy else "unhealthy", **report},
                            status_code=200 if healthy else 503)  # fmt: skip

    @app.get(
        "/metrics",
        response_class=Response,
        responses={
            200: {"description": "Prometheus text format", "content": {CONTENT_TYPE_LATEST: {}}},
            **answers.refusals(413, 431),
        },
    )
    def prometheus() -> Response:
        """Syncs, requests, auto-enrollment verdicts and the queue, for Prometheus."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _enrollment_routes(app: FastAPI, ceremony: EnrollmentCeremony) -> None:
    @app.post("/v1/enroll/init", responses=answers.ENROLLMENT)
    def enroll_init(body: EnrollInit, credential: Credential) -> EnrollChallenge:
        """First round trip: the enrollment token, the collected data and the device's
        keys (TPM EK and AK parameters, or a macOS public key) -> a single-use challenge."""
        return ceremony.begin(credential, body)

    @app.post("/v1/enroll/complete", responses=answers.ENROLLMENT)
    def enroll_complete(body: EnrollComplete, credential: Credential) -> DeviceResult:
        """Second round trip: the answer to the challenge -> the enrolled device."""
        return DeviceResult(device=device_to_dict(ceremony.complete(credential, body)))

    @app.post("/v1/enroll/self-token", status_code=201, responses=answers.ENROLLMENT)
    def self_token(body: SelfTokenRequest, credential: Credential) -> SelfToken:
        """For editors and device admins: register this device if needed and mint a
        short-lived token, bound to the caller, to enroll it."""
        issued = ceremony.self_token(credential, body.collected)
        return SelfToken(
            token=issued.token,
            expire_time=issued.expire_time,
            device=device_to_dict(issued.device),
        )


def _auto_enrollment_routes(
    app: FastAPI, auto_enrollment: AutoEnrollment, metrics: Metrics
) -> None:
    def answered(
        get: Callable[[], AutoEnrollToken | AutoEnrollPending], response: Response
    ) -> AutoEnrollToken | AutoEnrollPending:
        try:
            result = get()
        except DevtrustError as exc:
            if exc.http_status != 401:  # no credential: not a verdict on a device
                metrics.verdict("refused")
            raise
        if isinstance(result, AutoEnrollPending):
            metrics.verdict("pending")
            response.status_code = 202
            response.headers["Location"] = result.location
        else:
            metrics.verdict("token")
        return result

    @app.post("/v1/auto-enroll", responses=answers.AUTO_ENROLLMENT)
    def auto_enroll(
        body: AutoEnrollRequest, credential: Credential, response: Response
    ) -> AutoEnrollToken | AutoEnrollPending:
        """At login: check the calling user's registered, not enrolled device against its
        MDM profile; on success, a token for the enrollment ceremony. 202 with a Location
        to poll when the check takes longer than the service waits."""
        return answered(lambda: auto_enrollment.request(credential, body.collected), response)

    @app.get("/v1/auto-enroll/{check_id}", responses=answers.AUTO_ENROLLMENT)
    def auto_enroll_verdict(
        check_id: Annotated[str, Path(json_schema_extra={"pattern": CHECK_ID_PATTERN})],
        credential: Credential,
        response: Response,
    ) -> AutoEnrollToken | AutoEnrollPending:
        """The verdict of an auto-enrollment check this user asked for (202 while pending)."""
        return answered(lambda: auto_enrollment.poll(credential, check_id), response)


def _authentication_routes(app: FastAPI, authentication: DeviceAuthentication) -> None:
    @app.get("/v1/whoami", responses=answers.IDENTITY)
    def whoami(credential: Credential) -> WhoAmI:
        """The user this credential belongs to, and their roles."""
        user = users.authenticate(authentication.db.uow(), credential)
        return WhoAmI(user=user.name, roles=[r.value for r in user.roles])

    @app.post("/v1/authenticate/init", responses=answers.AUTHENTICATION)
    def authenticate_init(body: AuthInit, credential: Credential) -> AuthChallenge:
        """An enrolled device's collected data and the user's public key -> a nonce to
        quote (TPM) or sign (macOS). 409 when the device is registered but not enrolled."""
        return authentication.begin(credential, body)

    @app.post("/v1/authenticate/complete", responses=answers.AUTHENTICATION)
    def authenticate_complete(body: AuthComplete, credential: Credential) -> DeviceCertificate:
        """The proof -> a short-lived certificate for the user's key, bound to the device."""
        return authentication.complete(credential, body)
