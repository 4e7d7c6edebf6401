"""Random and mutated bodies into the ceremony's routes: never a 5xx, always the error shape.

The routes are enrollment's three, device authentication's two and auto-enrollment's
request and poll. Random bytes and random JSON are refused with a 4xx. Mutations start
from bodies that work (the TPM structures a real swtpm produced, captured in
``test_tpm_verify_fuzz``; a software macOS key; live challenges for enrolled devices), so
they reach the checks behind the parsers; one may still be a valid request, and then its
answer is the route's documented model. A macOS init that is accepted is carried on to a
correct answer, so what the device sent is also stored. The service runs in uvicorn on
loopback, on SQLite only: this is about the service's answers (the refusal tests cover
both databases). Auto-enrollment's queue is stood in for by one that runs the worker's
check in this process (the real queue is tested in ``test_auto_enroll_service``).
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from ceremony.agent.softkey import SoftwareEnclaveKey
from ceremony.authn import DeviceAuthentication
from ceremony.autoenroll import AutoEnrollment
from ceremony.device_ca import DeviceCA
from ceremony.enroll import EnrollmentCeremony
from ceremony.protocol import (
    AuthChallenge,
    AuthInit,
    AutoEnrollPending,
    AutoEnrollToken,
    DeviceCertificate,
    DeviceResult,
    EnrollChallenge,
    EnrollInit,
    SelfToken,
    encode,
)
from ceremony.ratelimit import LocalRateLimiter
from ceremony.service import create_app
from inventory.db import Database
from inventory.domain import AttestationType, CollectedData, Credential, OSType, Profile, Role
from inventory.models import ChallengeRow
from inventory.preference import DeviceTrust
from inventory.services import devices, enrollment, preference, tokens, users
from inventory.settings import Settings
from tests.ceremony import serving
from tests.unit.test_tpm_verify_fuzz import (
    AK_PUBLIC,
    PCR_VALUES,
    QUOTE,
    QUOTE_SIGNATURE,
    REQUEST,
)
from worker import jobs

INIT = "/v1/enroll/init"
COMPLETE = "/v1/enroll/complete"
SELF_TOKEN = "/v1/enroll/self-token"
AUTH_INIT = "/v1/authenticate/init"
AUTH_COMPLETE = "/v1/authenticate/complete"
AUTO_ENROLL = "/v1/auto-enroll"
POLL = "/v1/auto-enroll/{check_id}"
ROUTES = (INIT, COMPLETE, SELF_TOKEN, AUTH_INIT, AUTH_COMPLETE, AUTO_ENROLL)
ANSWERS: dict[str, type[BaseModel]] = {
    INIT: EnrollChallenge,
    COMPLETE: DeviceResult,
    SELF_TOKEN: SelfToken,
    AUTH_INIT: AuthChallenge,
    AUTH_COMPLETE: DeviceCertificate,
    AUTO_ENROLL: AutoEnrollToken,
    POLL: AutoEnrollToken,
}
PROFILE = Profile(
    model_identifier="MacBookPro18,3",
    os_version="14.2.1",
    os_build="23C71",
    os_usernames=("erin",),
    jamf_binary_version="11.1.0",
)

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'devtrust.db'}"


class InlineCheckQueue:
    """Auto-enrollment's queue, stood in for: the worker's own check runs at ``submit``, in
    this process. A check id it never issued is pending, as Celery's result backend says
    of one; with ``slow`` set, the next check is pending once before its verdict."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.verdicts: dict[str, dict[str, Any]] = {}
        self.pending: set[str] = set()
        self.slow = False

    def submit(
        self, check_id: str, user: str, logins: Sequence[str], collected: dict[str, Any]
    ) -> None:
        verdict = jobs.auto_enroll_check(
            self.settings, user=user, collected=collected, check=check_id, logins=logins
        )
        self.verdicts[check_id] = json.loads(json.dumps(verdict))  # as the backend keeps it
        if self.slow:
            self.pending.add(check_id)

    def verdict(self, check_id: str, wait: float) -> dict[str, Any] | None:
        if check_id in self.pending:
            self.pending.discard(check_id)
            return None
        return self.verdicts.get(check_id)

    def forget(self, check_id: str) -> None:
        self.verdicts.pop(check_id, None)


@dataclass
class Service:
    client: httpx.Client
    db: Database
    ceremony: EnrollmentCeremony
    authentication: DeviceAuthentication
    queue: InlineCheckQueue
    credential: str
    key: SoftwareEnclaveKey
    serials: Iterator[int]
    user_key: bytes = field(
        default_factory=lambda: (
            ec.generate_private_key(ec.SECP256R1())
            .public_key()
            .public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    )

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credential}"}

    def token_for(self, asset_tag: str, os_type: OSType) -> str:
        devices.register_device(self.db.uow(), os_type=os_type, asset_tag=asset_tag, actor="admin")
        return tokens.create_token(self.db.uow(), asset_tag, actor="admin").token

    def post(self, route: str, content: bytes, headers: dict[str, str]) -> httpx.Response:
        headers = {"Content-Type": "application/json", **headers}
        return self.client.post(route, content=content, headers=headers)


@pytest.fixture
def service(db: Database, db_url: str, tmp_path: Path) -> Iterator[Service]:
    ceremony = EnrollmentCeremony(db)
    authentication = DeviceAuthentication(db, DeviceCA.load_or_create(tmp_path / "device-ca"))
    queue = InlineCheckQueue(Settings(database_url=db_url, auto_migrate=False))
    limiter = LocalRateLimiter(1_000_000, timedelta(hours=1), "auto-enrollment attempts")
    auto_enrollment = AutoEnrollment(db, queue, limiter, wait=0)
    preference.update_preference(db.uow(), DeviceTrust(auto_enroll=True), actor="admin")
    # An editor: self-token reaches past the role check; init and complete do not care.
    _, credential = users.add_user(db.uow(), "erin", (Role.EDITOR,), actor="admin")
    key = SoftwareEnclaveKey.load_or_create(tmp_path)
    app = create_app(Settings(), {}, ceremony, auto_enrollment, authentication)
    try:
        with serving(app) as url, httpx.Client(base_url=url, timeout=30) as client:
            yield Service(
                client, db, ceremony, authentication, queue, credential, key, itertools.count()
            )
    finally:
        jobs.database_for(queue.settings).close()  # the worker's pool, opened by the checks


def assert_refusal(response: httpx.Response) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    body = response.json()
    assert isinstance(body, dict) and list(body) == ["error"], body
    assert isinstance(body["error"], str) and body["error"], body
    assert len(body["error"].splitlines()) == 1, body["error"]


def assert_answered(route: str, response: httpx.Response) -> None:
    """A refusal in the error shape, or (a mutation that left a valid request) the
    route's answer; never a 5xx. A 202 is an auto-enrollment check still running."""
    event(f"{route} {response.status_code}")  # --hypothesis-show-statistics shows the mix
    if response.status_code == 202:
        assert route in (AUTO_ENROLL, POLL), route
        pending = AutoEnrollPending.model_validate(response.json())
        assert response.headers["location"] == pending.location
    elif response.is_success:
        assert response.status_code == (201 if route == SELF_TOKEN else 200)
        ANSWERS[route].model_validate(response.json())
    else:
        assert_refusal(response)


# Random bodies

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=20,
)
HEADERS = st.sampled_from(["valid", "none", "Bearer not-a-credential", "Basic eDp5", "Bearer"])


def headers_for(service: Service, choice: str) -> dict[str, str]:
    if choice == "valid":
        return service.auth
    return {} if choice == "none" else {"Authorization": choice}


@FUZZ
@given(
    route=st.sampled_from(ROUTES),
    body=st.binary(max_size=2000) | JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    auth=HEADERS,
)
def test_random_bodies_are_refused_with_a_4xx(
    service: Service, route: str, body: bytes, auth: str
) -> None:
    assert_refusal(service.post(route, body, headers_for(service, auth)))


# Mutated bodies


def collected(serial: str, os_type: OSType) -> dict[str, Any]:
    return {
        "serial_number": serial,
        "os_type": os_type.value,
        "os_version": "13",
        "os_login_user": "erin",
        "collect_time": "2026-11-26T11:59:00Z",
    }


def tpm_init(serial: str, token: str) -> dict[str, Any]:
    fields = (
        "ek_cert",
        "ek_public",
        "ak_public",
        "creation_data",
        "creation_attestation",
        "creation_signature",
    )
    attestation = {name: encode(getattr(REQUEST, name)) for name in fields}
    return {"token": token, "collected": collected(serial, OSType.LINUX), "tpm": attestation}


def live_tpm_answer(service: Service, serial: str, token: str) -> dict[str, Any]:
    """An answer to a real challenge with the right activated secret (read from the
    server's state): only its quote, over another nonce, is wrong."""
    init = EnrollInit(**tpm_init(serial, token))
    challenge = service.ceremony.begin(service.credential, init)
    uow = service.db.uow()
    with uow.read():
        row = uow.session.get(ChallengeRow, challenge.challenge_id)
        assert row is not None
        secret = row.state["secret"]
    quote = {
        "attestation": encode(QUOTE),
        "signature": encode(QUOTE_SIGNATURE),
        "pcr_values": {str(i): encode(v) for i, v in PCR_VALUES.items()},
    }
    return {
        "challenge_id": challenge.challenge_id,
        "tpm": {"activated_secret": secret, "quotes": [quote]},
    }


def mac_init(
    service: Service, serial: str, token: str, key: SoftwareEnclaveKey | None = None
) -> dict[str, Any]:
    return {
        "token": token,
        "collected": collected(serial, OSType.MACOS),
        "macos": {"public_key": encode((key or service.key).public_key_der())},
    }


def live_mac_answer(service: Service, serial: str, token: str) -> dict[str, Any]:
    # A key of its own: one key enrolls one Mac, and an answer the mutation left valid
    # enrolls its device.
    key = SoftwareEnclaveKey(ec.generate_private_key(ec.SECP256R1()))
    challenge = service.ceremony.begin(
        service.credential, EnrollInit(**mac_init(service, serial, token, key))
    )
    assert challenge.macos is not None
    signature = key.sign(challenge.macos.challenge)
    return {"challenge_id": challenge.challenge_id, "macos": {"signature": encode(signature)}}


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a JSON document, the root excepted."""
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return
    for key, inner in items:
        yield (*prefix, key)
        yield from paths(inner, (*prefix, key))


def with_offset(moment: datetime, minutes: int | None) -> str:
    if minutes is not None:
        moment = moment.replace(tzinfo=timezone(timedelta(minutes=minutes)))
    return moment.isoformat()


TIMES = st.builds(with_offset, st.datetimes(), st.none() | st.integers(-1439, 1439))


def decoded(value: Any) -> bytes | None:
    """The bytes a base64 field holds, or None for any other value."""
    if not isinstance(value, str) or len(value) < 8:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        return None


# Mutations are drawn as plans that do not depend on the body (whose tokens, ids and
# signatures differ from run to run), then applied to it: places and offsets are taken
# modulo what is there, so hypothesis replays and shrinks them faithfully.
Edit = tuple[str, int, bytes]
EDITS = st.lists(
    st.tuples(
        st.sampled_from(["flip", "set", "insert", "delete", "cut", "append"]),
        st.integers(0, 1 << 16),
        st.binary(min_size=1, max_size=8),
    ),
    min_size=1,
    max_size=4,
)
REPLACEMENTS = st.one_of(
    st.text(max_size=40),
    st.text(min_size=60, max_size=300),
    st.binary(max_size=300).map(encode),
    TIMES,
    JSON_VALUES,
)


def edit_bytes(data: bytes, edits: list[Edit]) -> bytes:
    """A real structure with a few bytes flipped, set, inserted, deleted, cut or appended
    (up to 8 KiB, past the verifiers' size bounds)."""
    out = bytearray(data)
    for kind, where, payload in edits:
        at = where % max(len(out), 1)
        if kind == "flip" and out:
            out[at] ^= 1 << (payload[0] % 8)
        elif kind == "set" and out:
            out[at] = payload[0]
        elif kind == "insert":
            out[at:at] = payload
        elif kind == "delete":
            del out[at : at + len(payload)]
        elif kind == "cut":
            del out[at:]
        elif kind == "append":
            out += payload * (1 + payload[0] * 4)
    return bytes(out)


def parent_of(body: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        body = body[key]
    return body


@dataclass(frozen=True)
class BlobEdits:
    """Keep the body's shape and change a few bytes of its structures: reaches the
    verifiers."""

    edits: list[tuple[int, list[Edit]]]  # (which base64 field, its edits)

    def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        blobs = [p for p in paths(body) if decoded(parent_of(body, p)[p[-1]]) is not None]
        for which, edits in self.edits:
            if not blobs:
                break
            path = blobs[which % len(blobs)]
            parent = parent_of(body, path)
            data = decoded(parent[path[-1]])
            if data is not None:  # an earlier edit may have cut it to nothing
                parent[path[-1]] = encode(edit_bytes(data, edits))
        return body


@dataclass(frozen=True)
class ShapeEdits:
    """Drop places, replace them with anything, or give them an unknown sibling: mostly
    meets the validation."""

    edits: list[tuple[int, str, Any]]  # (which place, what to do, a replacement)

    def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        for which, action, value in self.edits:
            places = list(paths(body))
            if not places:
                break
            path = places[which % len(places)]
            parent = parent_of(body, path)
            if action == "drop":
                del parent[path[-1]]
            elif action == "replace":
                parent[path[-1]] = value
            elif isinstance(parent, dict):
                parent[f"{path[-1]}-extra"] = value
        return body


MUTATIONS = st.one_of(
    st.builds(BlobEdits, st.lists(st.tuples(st.integers(0, 64), EDITS), min_size=1, max_size=2)),
    st.builds(
        ShapeEdits,
        st.lists(
            st.tuples(
                st.integers(0, 64), st.sampled_from(["drop", "replace", "extra"]), REPLACEMENTS
            ),
            min_size=1,
            max_size=3,
        ),
    ),
)


KINDS = ["tpm-init", "mac-init", "tpm-complete", "mac-complete", "self-token"]


@FUZZ
@given(kind=st.sampled_from(KINDS), mutation=MUTATIONS)
def test_mutated_bodies_never_get_a_5xx(
    service: Service, kind: str, mutation: BlobEdits | ShapeEdits
) -> None:
    # A device and a token of its own for every example, so an earlier one that enrolled
    # its device leaves the next one as much to reach.
    serial = f"FUZZ-{next(service.serials)}"
    os_type = OSType.MACOS if kind.startswith("mac") else OSType.LINUX
    route = {"init": INIT, "complete": COMPLETE, "token": SELF_TOKEN}[kind.rpartition("-")[2]]
    if kind == "self-token":
        body = {"collected": collected(serial, os_type)}
    else:
        token = service.token_for(serial, os_type)
        body = {
            "tpm-init": lambda: tpm_init(serial, token),
            "mac-init": lambda: mac_init(service, serial, token),
            "tpm-complete": lambda: live_tpm_answer(service, serial, token),
            "mac-complete": lambda: live_mac_answer(service, serial, token),
        }[kind]()
    sent = mutation.apply(copy.deepcopy(body))
    response = service.post(route, json.dumps(sent).encode(), service.auth)
    assert_answered(route, response)
    if kind == "mac-init" and response.is_success:
        finish_mac_ceremony(service, response)


def finish_mac_ceremony(service: Service, accepted: httpx.Response) -> None:
    """Answer an accepted init correctly: what the first round trip accepted must be
    storable when the second enrolls the device."""
    challenge = EnrollChallenge.model_validate(accepted.json())
    assert challenge.macos is not None
    signature = service.key.sign(challenge.macos.challenge)
    answer = {"challenge_id": challenge.challenge_id, "macos": {"signature": encode(signature)}}
    response = service.post(COMPLETE, json.dumps(answer).encode(), service.auth)
    assert_answered(COMPLETE, response)


OPTIONAL_TEXT = ["model_identifier", "os_version", "os_build", "os_id", "os_login_user",
                 "jamf_binary_version", "reported_asset_tag", "system_serial_number",
                 "base_board_serial_number"]  # fmt: skip
TEXTS = st.none() | st.text(max_size=20) | st.text(min_size=50, max_size=260)


@FUZZ
@given(
    texts=st.fixed_dictionaries({}, optional=dict.fromkeys(OPTIONAL_TEXT, TEXTS)),
    collect_time=st.none() | TIMES | st.text(max_size=30),
    via=st.sampled_from(["enroll", "login"]),
)
def test_collected_data_accepted_at_init_is_stored_by_complete(
    service: Service, texts: dict[str, Any], collect_time: Any, via: str
) -> None:
    serial = f"FUZZ-{next(service.serials)}"
    if via == "enroll":
        body = mac_init(service, serial, service.token_for(serial, OSType.MACOS))
    else:
        enrolled(service, serial, OSType.MACOS)
        body = auth_init(service, serial, OSType.MACOS)
    body["collected"].update(texts, collect_time=collect_time)
    route = INIT if via == "enroll" else AUTH_INIT
    response = service.post(route, json.dumps(body).encode(), service.auth)
    assert_answered(route, response)
    if response.is_success and via == "enroll":
        finish_mac_ceremony(service, response)
    elif response.is_success:
        finish_mac_login(service, response)


# Device authentication and auto-enrollment: the login's routes


def enrolled(service: Service, serial: str, os_type: OSType) -> None:
    """A device enrolled by the service's user: a TPM one with the swtpm AK that signed
    the captured quote, or a Mac with the service's software key."""
    tpm = os_type is not OSType.MACOS
    credential = Credential(
        id=str(uuid.uuid4()),
        public_key=AK_PUBLIC if tpm else service.key.public_key_der(),
        ek_cert_serial=None,
        attestation_type=AttestationType.TPM_EKPUB if tpm else AttestationType.NONE,
    )
    enrollment.enroll_device(
        service.db.uow(),
        token=service.token_for(serial, os_type),
        credential=credential,
        collected=CollectedData(serial_number=serial, os_type=os_type),
        user="erin",
    )


def auth_init(service: Service, serial: str, os_type: OSType) -> dict[str, Any]:
    return {"collected": collected(serial, os_type), "user_public_key": encode(service.user_key)}


def live_auth_tpm_answer(service: Service, serial: str) -> dict[str, Any]:
    """An answer to a real challenge with a quote the enrolled AK signed, over another
    nonce: only that is wrong."""
    init = AuthInit(**auth_init(service, serial, OSType.LINUX))
    challenge = service.authentication.begin(service.credential, init)
    quote = {
        "attestation": encode(QUOTE),
        "signature": encode(QUOTE_SIGNATURE),
        "pcr_values": {str(i): encode(v) for i, v in PCR_VALUES.items()},
    }
    return {"challenge_id": challenge.challenge_id, "tpm": {"quotes": [quote]}}


def live_auth_mac_answer(service: Service, serial: str) -> dict[str, Any]:
    init = AuthInit(**auth_init(service, serial, OSType.MACOS))
    challenge = service.authentication.begin(service.credential, init)
    assert challenge.macos is not None
    signature = service.key.sign(challenge.macos.challenge)
    return {"challenge_id": challenge.challenge_id, "macos": {"signature": encode(signature)}}


def auto_enroll_body(service: Service, serial: str) -> dict[str, Any]:
    """A login on a registered Mac that matches its MDM profile."""
    devices.register_device(
        service.db.uow(), os_type=OSType.MACOS, asset_tag=serial, actor="jamf", profile=PROFILE
    )
    body = collected(serial, OSType.MACOS)
    body.update(model_identifier="MacBookPro18,3", os_version="14.2.1", os_build="23C71",
                jamf_binary_version="11.1.0")  # fmt: skip
    return {"collected": body}


def finish_mac_login(service: Service, accepted: httpx.Response) -> None:
    """Answer an accepted login correctly: what its init accepted must be storable (and
    certifiable) when its complete records the collected data."""
    challenge = AuthChallenge.model_validate(accepted.json())
    if challenge.macos is None:  # a mutation made it another device's login
        return
    signature = service.key.sign(challenge.macos.challenge)
    answer = {"challenge_id": challenge.challenge_id, "macos": {"signature": encode(signature)}}
    response = service.post(AUTH_COMPLETE, json.dumps(answer).encode(), service.auth)
    assert_answered(AUTH_COMPLETE, response)
    assert response.is_success, response.text


def follow(service: Service, pending: httpx.Response) -> None:
    """Poll a pending auto-enrollment check where it says."""
    response = service.client.get(pending.headers["location"], headers=service.auth)
    assert_answered(POLL, response)


LOGIN_KINDS = ["auth-tpm-init", "auth-mac-init", "auth-tpm-complete", "auth-mac-complete",
               "auto-enroll"]  # fmt: skip


@FUZZ
@given(kind=st.sampled_from(LOGIN_KINDS), mutation=MUTATIONS, slow=st.booleans())
def test_mutated_login_bodies_never_get_a_5xx(
    service: Service, kind: str, mutation: BlobEdits | ShapeEdits, slow: bool
) -> None:
    serial = f"FUZZ-{next(service.serials)}"
    os_type = OSType.MACOS if "mac" in kind or kind == "auto-enroll" else OSType.LINUX
    if kind == "auto-enroll":
        route, body = AUTO_ENROLL, auto_enroll_body(service, serial)
    else:
        enrolled(service, serial, os_type)
        route = AUTH_INIT if kind.endswith("init") else AUTH_COMPLETE
        body = {
            "auth-tpm-init": lambda: auth_init(service, serial, os_type),
            "auth-mac-init": lambda: auth_init(service, serial, os_type),
            "auth-tpm-complete": lambda: live_auth_tpm_answer(service, serial),
            "auth-mac-complete": lambda: live_auth_mac_answer(service, serial),
        }[kind]()
    service.queue.slow = slow
    response = service.post(route, json.dumps(mutation.apply(copy.deepcopy(body))).encode(),
                            service.auth)  # fmt: skip
    assert_answered(route, response)
    if kind == "auth-mac-init" and response.is_success:
        finish_mac_login(service, response)
    if response.status_code == 202:
        follow(service, response)


# One path segment, sent as it is: a "/" would make it two, and the client would resolve
# a bare "." or ".." away (so dots go percent-encoded).
CHECK_IDS = st.text(st.characters(codec="utf-8", exclude_characters="/"), min_size=1, max_size=80)


@FUZZ
@given(check_id=CHECK_IDS | st.uuids().map(str), auth=HEADERS)
def test_polling_any_check_id_never_gets_a_5xx(service: Service, check_id: str, auth: str) -> None:
    segment = quote(check_id, safe="").replace(".", "%2E")
    response = service.client.get(f"{AUTO_ENROLL}/{segment}", headers=headers_for(service, auth))
    assert_answered(POLL, response)
