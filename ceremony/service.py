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
- ``GET /healthz``: whether the database and the broker answer.

Every refusal is a 4xx whose body is ``{"error": "<one line>"}``; bodies over
``MAX_BODY_BYTES`` are refused unread with 413. Nothing a client sends yields a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ceremony.authn import DeviceAuthentication
from ceremony.autoenroll import AutoEnrollment
from ceremony.enroll import EnrollmentCeremony
from ceremony.protocol import (
    MAX_BODY_BYTES,
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
    ErrorBody,
    SelfToken,
    SelfTokenRequest,
    WhoAmI,
)
from ceremony.ratelimit import RateLimited
from inventory.db import create_db_engine
from inventory.errors import DevtrustError, Unauthenticated
from inventory.serialize import device_to_dict
from inventory.services import users
from inventory.settings import Settings

log = logging.getLogger("devtrust.serve")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

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


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes: by their Content-Length before reading,
    and while reading when the client streams without one.

    The body is read here in full (it is small) and handed on in one piece: an error
    raised from inside the app's own read would reach FastAPI, which turns any of them
    into a 400 of its own shape.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _too_large(self.limit)(scope, receive, send)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            if len(body) > self.limit:
                await _too_large(self.limit)(scope, receive, send)
                return
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


def _too_large(limit: int) -> JSONResponse:
    return _error(413, f"request body is larger than {limit} bytes")


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


def bearer_credential(
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> str:
    """The user's credential from ``Authorization: Bearer <DEVTRUST_USER_TOKEN>``."""
    if not authorization:
        raise Unauthenticated("no user credential given: set DEVTRUST_USER_TOKEN")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <user credential>'")
    return value.strip()


Credential = Annotated[str, Depends(bearer_credential)]
REFUSALS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody} for status in (400, 401, 403, 404, 409, 413, 422)
}


def create_app(
    settings: Settings,
    checks: dict[str, Check],
    ceremony: EnrollmentCeremony | None = None,
    auto_enrollment: AutoEnrollment | None = None,
    authentication: DeviceAuthentication | None = None,
) -> FastAPI:
    """The service; ``checks`` are what ``/healthz`` tries (name -> raises if unwell).

    Without ``ceremony`` and ``auto_enrollment`` only ``/healthz`` is served.
    """
    # No redirects for trailing slashes: a wrong path is a 404 in the error shape.
    app = FastAPI(title="devtrust ceremony service", version="0.1", redirect_slashes=False)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)

    @app.exception_handler(DevtrustError)
    async def refused(_: Request, exc: DevtrustError) -> JSONResponse:
        response = _error(exc.http_status, str(exc))
        if isinstance(exc, RateLimited):
            response.headers["Retry-After"] = str(exc.retry_after)
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
    async def database_down(_: Request, exc: DBAPIError) -> JSONResponse:
        log.error("database error: %s", exc)
        return _error(503, "the inventory database is unavailable; try again shortly")

    if ceremony is not None:
        _enrollment_routes(app, ceremony)
    if auto_enrollment is not None:
        _auto_enrollment_routes(app, auto_enrollment)
    if authentication is not None:
        _authentication_routes(app, authentication)

    @app.get("/healthz")
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

    return app


def _enrollment_routes(app: FastAPI, ceremony: EnrollmentCeremony) -> None:
    @app.post("/v1/enroll/init", responses=REFUSALS)
    def enroll_init(body: EnrollInit, credential: Credential) -> EnrollChallenge:
        """First round trip: the enrollment token, the collected data and the device's
        keys (TPM EK and AK parameters, or a macOS public key) -> a single-use challenge."""
        return ceremony.begin(credential, body)

    @app.post("/v1/enroll/complete", responses=REFUSALS)
    def enroll_complete(body: EnrollComplete, credential: Credential) -> DeviceResult:
        """Second round trip: the answer to the challenge -> the enrolled device."""
        return DeviceResult(device=device_to_dict(ceremony.complete(credential, body)))

    @app.post("/v1/enroll/self-token", status_code=201, responses=REFUSALS)
    def self_token(body: SelfTokenRequest, credential: Credential) -> SelfToken:
        """For editors and device admins: register this device if needed and mint a
        short-lived token, bound to the caller, to enroll it."""
        issued = ceremony.self_token(credential, body.collected)
        return SelfToken(
            token=issued.token,
            expire_time=issued.expire_time,
            device=device_to_dict(issued.device),
        )


def _auto_enrollment_routes(app: FastAPI, auto_enrollment: AutoEnrollment) -> None:
    def answered(
        result: AutoEnrollToken | AutoEnrollPending, response: Response
    ) -> AutoEnrollToken | AutoEnrollPending:
        if isinstance(result, AutoEnrollPending):
            response.status_code = 202
            response.headers["Location"] = result.location
        return result

    @app.post(
        "/v1/auto-enroll",
        responses={**REFUSALS, 202: {"model": AutoEnrollPending}, 429: {"model": ErrorBody}},
    )
    def auto_enroll(
        body: AutoEnrollRequest, credential: Credential, response: Response
    ) -> AutoEnrollToken | AutoEnrollPending:
        """At login: check the calling user's registered, not enrolled device against its
        MDM profile; on success, a token for the enrollment ceremony. 202 with a Location
        to poll when the check takes longer than the service waits."""
        return answered(auto_enrollment.request(credential, body.collected), response)

    @app.get(
        "/v1/auto-enroll/{check_id}",
        responses={**REFUSALS, 202: {"model": AutoEnrollPending}},
    )
    def auto_enroll_verdict(
        check_id: str, credential: Credential, response: Response
    ) -> AutoEnrollToken | AutoEnrollPending:
        """The verdict of an auto-enrollment check this user asked for (202 while pending)."""
        return answered(auto_enrollment.poll(credential, check_id), response)


def _authentication_routes(app: FastAPI, authentication: DeviceAuthentication) -> None:
    @app.get("/v1/whoami", responses=REFUSALS)
    def whoami(credential: Credential) -> WhoAmI:
        """The user this credential belongs to, and their roles."""
        user = users.authenticate(authentication.db.uow(), credential)
        return WhoAmI(user=user.name, roles=[r.value for r in user.roles])

    @app.post("/v1/authenticate/init", responses=REFUSALS)
    def authenticate_init(body: AuthInit, credential: Credential) -> AuthChallenge:
        """An enrolled device's collected data and the user's public key -> a nonce to
        quote (TPM) or sign (macOS). 409 when the device is registered but not enrolled."""
        return authentication.begin(credential, body)

    @app.post("/v1/authenticate/complete", responses=REFUSALS)
    def authenticate_complete(body: AuthComplete, credential: Credential) -> DeviceCertificate:
        """The proof -> a short-lived certificate for the user's key, bound to the device."""
        return authentication.complete(credential, body)
