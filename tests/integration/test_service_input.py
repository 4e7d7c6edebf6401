"""What the ceremony service refuses at its boundary, and how it reports database errors.

A NUL in a serial number, sent by a rate-limited user on PostgreSQL, used to answer
``503 the inventory database is unavailable``: the audit INSERT of the refused attempt
failed on the NUL, and any database error was reported as the database being down.
Now every text field of every request model refuses control characters (400 naming the
field, nothing stored), and only an error that says the database cannot be used is 503.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ValidationError
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError

from ceremony import fields, protocol
from ceremony.admin import AdminApi
from ceremony.authn import DeviceAuthentication
from ceremony.autoenroll import AutoEnrollment
from ceremony.device_ca import DeviceCA
from ceremony.enroll import EnrollmentCeremony
from ceremony.ratelimit import LocalRateLimiter
from ceremony.service import create_app, database_error
from inventory.db import Database
from inventory.domain import Role
from inventory.preference import DeviceTrust
from inventory.services import audit, preference, users
from inventory.settings import Settings
from tests.ceremony import PendingQueue, serving
from tests.processes import free_port

REQUESTS = (protocol.EnrollInit, protocol.EnrollComplete, protocol.SelfTokenRequest,
            protocol.AutoEnrollRequest, protocol.AuthInit, protocol.AuthComplete)  # fmt: skip
FORBIDDEN = ["\x00", "\x07", "\t", "\n", "\x1b", "\x7f", "\x85", "\u2028", "\u2029"]


def text_fields(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """The dotted path of every text field in ``model`` and the models it holds."""
    for name, field in model.model_fields.items():
        kinds = get_args(field.annotation) if get_origin(field.annotation) else (field.annotation,)
        for kind in kinds:
            if get_origin(kind) is Annotated:
                kind = get_args(kind)[0]
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                yield from text_fields(kind, f"{prefix}{name}.")
            elif kind is str:
                yield f"{prefix}{name}"


def with_value(path: str, value: str) -> dict[str, Any]:
    body: dict[str, Any] = {}
    *parents, last = path.split(".")
    inner = body
    for part in parents:
        inner = inner.setdefault(part, {})
    inner[last] = value
    return body


def test_every_text_field_of_every_request_refuses_control_characters() -> None:
    fields = {(model, path) for model in REQUESTS for path in text_fields(model)}
    assert len(fields) > 40  # the collected data's eleven fields in four models, and more
    for model, path in sorted(fields, key=str):
        for character in FORBIDDEN:
            with pytest.raises(ValidationError) as refused:
                model.model_validate(with_value(path, f"ok{character}ok"))
            errors = {".".join(map(str, e["loc"])): e["msg"] for e in refused.value.errors()}
            assert path in errors, (model.__name__, path, errors)
            assert (
                "control character" in errors[path]
                or "NUL" in errors[path]
                or (path.endswith("serial_number") and "printable ASCII" in errors[path])
            ), errors[path]


@pytest.fixture
def auto_enroll_site(db: Database) -> Iterator[tuple[httpx.Client, dict[str, str]]]:
    preference.update_preference(db.uow(), DeviceTrust(auto_enroll=True), actor="admin")
    _, credential = users.add_user(db.uow(), "alice", (Role.ACCESS,), actor="admin")
    limiter = LocalRateLimiter(1, timedelta(hours=1), "auto-enrollment attempts")
    app = create_app(Settings(), {}, auto_enrollment=AutoEnrollment(db, PendingQueue(), limiter, 0))
    with serving(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client, {"Authorization": f"Bearer {credential}"}


def test_a_nul_from_a_rate_limited_user_is_refused_as_malformed_not_as_the_database_down(
    db: Database, auto_enroll_site: tuple[httpx.Client, dict[str, str]]
) -> None:
    client, auth = auto_enroll_site
    collected = {"serial_number": "C02XL0GJJGH5", "os_type": "macos"}
    assert (
        client.post("/v1/auto-enroll", json={"collected": collected}, headers=auth).status_code
        == 202
    )
    limited = client.post("/v1/auto-enroll", json={"collected": collected}, headers=auth)
    assert limited.status_code == 429
    events = audit.list_events(db.uow(), type=audit.DEVICE_TOKEN_CREATE)
    for field in ("serial_number", "os_login_user", "model_identifier"):
        sent = {**collected, field: "C02XL0GJJGH5\x00"}
        response = client.post("/v1/auto-enroll", json={"collected": sent}, headers=auth)
        assert response.status_code == 400, response.text
        assert response.json()["error"].startswith(f"collected.{field}: ")
    # Refused before anything ran: no audit event was attempted, so none failed.
    assert audit.list_events(db.uow(), type=audit.DEVICE_TOKEN_CREATE) == events


def real_database_errors(db: Database) -> dict[str, DBAPIError]:
    """Errors the database itself raised: a value it cannot store (PostgreSQL only), a
    constraint it enforced, a statement it does not know, a server that is not there."""
    caught: dict[str, DBAPIError] = {}

    def catch(name: str, statement: str, url: str | None = None, **params: Any) -> None:
        engine = db.engine if url is None else create_engine(url, connect_args=connect)
        try:
            with engine.begin() as conn:
                conn.execute(text(statement), params)
        except DBAPIError as exc:
            caught[name] = exc
        finally:
            if url is not None:
                engine.dispose()

    connect: dict[str, Any] = {}
    if db.engine.dialect.name == "postgresql":
        catch("data", "SELECT CAST(:v AS text)", v="a\x00b")
    else:  # a file another connection holds locked: busy, as good as down for now
        connect["timeout"] = 0
        holder = sqlite3.connect(str(db.engine.url.database), isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            catch("busy", "UPDATE users SET name = name", url=str(db.engine.url))
        finally:
            holder.close()
        connect.clear()
    catch("integrity", "INSERT INTO users SELECT * FROM users")
    catch("programming", "SELECT * FROM no_such_table")
    dead = f"postgresql+psycopg://devtrust:devtrust@127.0.0.1:{free_port()}/postgres"
    catch("down", "SELECT 1", url=dead)
    return caught


def test_only_an_unreachable_database_is_503(db: Database) -> None:
    users.add_user(db.uow(), "alice", (Role.ACCESS,), actor="admin")
    errors = real_database_errors(db)
    answers = {name: database_error(exc)[0] for name, exc in errors.items()}
    expected = {"integrity": 409, "programming": 500, "down": 503}
    if db.engine.dialect.name == "postgresql":
        expected["data"] = 400
        assert isinstance(errors["data"], DataError)
    else:
        expected["busy"] = 503
    assert answers == expected
    assert isinstance(errors["integrity"], IntegrityError)
    assert isinstance(errors["down"], OperationalError)


def test_the_service_answers_database_errors_by_what_they_are(db: Database) -> None:
    users.add_user(db.uow(), "alice", (Role.ACCESS,), actor="admin")
    errors = real_database_errors(db)
    app: FastAPI = create_app(Settings(), {})

    @app.get("/raise/{name}")
    def raising(name: str) -> None:
        raise errors[name]

    with serving(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        answered = {name: client.get(f"/raise/{name}") for name in errors}
    statuses = {name: r.status_code for name, r in answered.items()}
    assert statuses["down"] == 503 and statuses["integrity"] == 409
    assert statuses.get("data", 400) == 400 and statuses["programming"] == 500
    assert answered["down"].json() == {
        "error": "the inventory database is unavailable; try again shortly"
    }
    for response in answered.values():
        assert list(response.json()) == ["error"]
        assert "no_such_table" not in response.text and "\x00" not in response.text


def test_the_openapi_document_declares_the_bearer_scheme_and_every_answer(
    db: Database, tmp_path: Path
) -> None:
    limiter = LocalRateLimiter(1, timedelta(hours=1), "auto-enrollment attempts")
    app = create_app(
        Settings(),
        {},
        EnrollmentCeremony(db),
        AutoEnrollment(db, PendingQueue(), limiter, 0),
        DeviceAuthentication(db, DeviceCA.load_or_create(tmp_path / "device-ca")),
        admin=AdminApi(db, Settings()),
    )
    spec = app.openapi()
    assert spec["components"]["securitySchemes"] == {
        "userCredential": {
            "type": "http",
            "scheme": "bearer",
            "description": "the user's credential, printed once by `devtrust users add`",
        }
    }
    error = {"$ref": "#/components/schemas/ErrorBody"}
    routes = {
        (path, method): op for path, ops in spec["paths"].items() for method, op in ops.items()
    }
    assert len(routes) == 10 + 20  # and the admin API's (ceremony.admin)
    for (path, _), operation in routes.items():
        answers = operation["responses"]
        if path == "/healthz":
            assert "security" not in operation
            assert set(answers) == {"200", "413", "431", "503"}
            continue
        if path == "/metrics":  # for the scraper on the operators' network
            assert "security" not in operation
            assert set(answers) == {"200", "413", "431"}
            assert list(answers["200"]["content"]) == [CONTENT_TYPE_LATEST]
            continue
        assert operation["security"] == [{"userCredential": []}], path
        for status in ("400", "401", "413", "431", "503"):
            assert answers[status]["content"]["application/json"]["schema"] == error, (path, status)
        if path.startswith(("/v1/enroll/", "/v1/auto-enroll", "/v1/authenticate/", "/v1/admin")):
            assert {"403", "404", "409"} <= set(answers), path
        if path.startswith("/v1/auto-enroll"):
            assert answers["429"]["headers"]["Retry-After"]["required"] is True
            assert answers["202"]["headers"]["Location"]["required"] is True
    collected = spec["components"]["schemas"]["Collected"]["properties"]
    assert collected["collect_time"]["anyOf"][0]["format"] == "date-time"
    assert collected["os_build"]["anyOf"][0]["pattern"] == fields.TEXT_PATTERN
