"""Auto-enrollment through the real stack: ``devtrust serve`` and ``devtrust worker`` in
subprocesses, a private Redis as broker, result backend and rate limiter, over HTTP.

The device side is the agent's macOS flow with its software key: the token the check
mints is spent by the enrollment ceremony, and the device ends up owned by the user.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from ceremony.agent.enroll import CeremonyClient, enroll_macos
from ceremony.agent.softkey import SoftwareEnclaveKey
from ceremony.protocol import Collected
from inventory.db import Database
from inventory.domain import CollectedData, OSType, Profile, Role
from inventory.preference import DeviceTrust, DeviceTrustMode
from inventory.serialize import collected_to_dict
from inventory.services import audit, devices, preference, users
from tests.processes import DEVTRUST, Process, RedisServer, free_port, started, worker

PROFILE = Profile(
    model_identifier="MacBookPro18,3",
    os_version="14.2.1",
    os_build="23C71",
    os_usernames=("alice", "bob", "carol"),
    jamf_binary_version="11.1.0",
)


@dataclass
class Stack:
    url: str
    db: Database
    tmp: Path
    worker: Process
    redis_url: str
    env: dict[str, str]

    def user(
        self, name: str, roles: tuple[Role, ...] = (Role.ACCESS,), logins: tuple[str, ...] = ()
    ) -> str:
        return users.add_user(self.db.uow(), name, roles, actor="admin", logins=logins)[1]

    def device(self, serial: str, profile: Profile = PROFILE) -> None:
        devices.register_device(
            self.db.uow(), os_type="macos", asset_tag=serial, actor="jamf", profile=profile
        )

    def trust(self, *, auto_enroll: bool, mode: DeviceTrustMode = DeviceTrustMode.OPTIONAL) -> None:
        trust = DeviceTrust(mode=mode, auto_enroll=auto_enroll)
        preference.update_preference(self.db.uow(), trust, actor="admin")

    def post(self, credential: str, collected: CollectedData) -> httpx.Response:
        body = {"collected": Collected.from_domain(collected).model_dump(mode="json")}
        return httpx.post(f"{self.url}/v1/auto-enroll", json=body, headers=_auth(credential))

    def poll(self, credential: str, location: str) -> httpx.Response:
        return httpx.get(f"{self.url}{location}", headers=_auth(credential))


def _auth(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def collected(serial: str, user: str = "alice", **changes: Any) -> CollectedData:
    fields = {
        "model_identifier": "MacBookPro18,3",
        "os_version": "14.2.1",
        "os_build": "23C71",
        "os_login_user": user,
        "jamf_binary_version": "11.1.0",
        **changes,
    }
    return CollectedData(serial_number=serial, os_type=OSType.MACOS, **fields)


@contextmanager
def _stack(tmp: Path, *, embedded: bool = False, **env: str) -> Iterator[Stack]:
    """The stack; ``embedded``: on the embedded file broker and result backend."""
    redis_server = RedisServer(tmp)
    redis_server.start()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DEVTRUST_")}
    database_url = f"sqlite:///{tmp / 'devtrust.db'}"
    full = {
        **clean,
        "DEVTRUST_DATA_DIR": str(tmp / "data"),
        "DEVTRUST_DATABASE_URL": database_url,
        **(
            {}
            if embedded
            else {
                "DEVTRUST_BROKER_URL": f"{redis_server.url}/0",
                "DEVTRUST_RESULT_BACKEND": f"{redis_server.url}/1",
            }
        ),
        **env,
    }
    port = free_port()
    db = Database.connect(database_url)
    try:
        # The service first, so that it starts while the worker does (both find the
        # database migrated, above).
        with (
            started([DEVTRUST, "serve", "--port", str(port)], full, "serve") as server,
            worker(full, "autoenroll") as checks,
        ):
            server.wait_for("Uvicorn running", timeout=30)
            try:
                yield Stack(f"http://127.0.0.1:{port}", db, tmp, checks, redis_server.url, full)
            finally:
                # No test here looks at how the worker stops, and a warm shutdown takes
                # seconds (about six on the embedded broker): it is killed instead.
                checks.kill()
    finally:
        db.close()
        redis_server.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with _stack(tmp_path_factory.mktemp("stack"), DEVTRUST_AUTO_ENROLL_ATTEMPTS="4") as running:
        yield running


@pytest.fixture(scope="module")
def slow(stack: Stack) -> Iterator[Stack]:
    """The same stack (its Redis, worker and database) behind a second ``devtrust serve``
    that does not wait for verdicts: every check is answered 202 and polled. Its tests
    have users and devices of their own."""
    port = free_port()
    env = {**stack.env, "DEVTRUST_AUTO_ENROLL_WAIT": "0"}
    with started([DEVTRUST, "serve", "--port", str(port)], env, "serve, no wait") as server:
        server.wait_for("Uvicorn running", timeout=30)
        yield replace(stack, url=f"http://127.0.0.1:{port}", env=env)


# The users of the Macs the tests on ``slow`` register (the stack's other tests have
# alice, bob and carol).
SLOW_PROFILE = replace(PROFILE, os_usernames=("amy", "ben", "cora"))


def test_a_synced_device_auto_enrolls_and_a_second_user_is_then_refused(
    stack: Stack, tmp_path: Path
) -> None:
    alice, bob = stack.user("alice"), stack.user("bob")
    stack.device("C02AUTO00001")
    stack.trust(auto_enroll=True)

    answer = stack.post(alice, collected("C02AUTO00001"))
    assert answer.status_code == 200, answer.text
    token = answer.json()["token"]
    assert answer.json()["device"]["asset_tag"] == "C02AUTO00001"
    # The worker logs the check, never the token it minted nor the device's data.
    stack.worker.wait_for(r"devtrust.ceremony.auto_enroll\[.*\] succeeded in .*: \*\*\*")
    assert token not in stack.worker.output()
    assert "MacBookPro18,3" not in stack.worker.output()

    key = SoftwareEnclaveKey.load_or_create(tmp_path)
    with CeremonyClient(stack.url, alice) as client:
        enrolled = enroll_macos(client, token, collected("C02AUTO00001"), key)
    assert (enrolled["enroll_status"], enrolled["owner"]) == ("enrolled", "alice")

    again = stack.post(bob, collected("C02AUTO00001", user="bob"))
    assert (again.status_code, again.json()) == (403, {"error": "device is already enrolled"})
    events = audit.list_events(stack.db.uow(), type=audit.DEVICE_TOKEN_CREATE)
    assert [(e.actor, e.success) for e in events] == [("alice", True), ("bob", False)]
    assert "device is already enrolled" in events[1].message


def test_drift_is_refused_with_its_reason_and_the_data_kept_for_diff(stack: Stack) -> None:
    carol = stack.user("carol")
    stack.device("C02AUTO00002")
    stack.trust(auto_enroll=True)
    answer = stack.post(carol, collected("C02AUTO00002", user="carol", os_version="14.3"))
    assert answer.status_code == 403
    assert answer.json()["error"] == (
        "device does not match its MDM profile: os_version differs: the device changed "
        "since the MDM last reported it: wait for the next MDM sync or run `devtrust jamf sync`"
    )
    [event] = [e for e in audit.list_events(stack.db.uow()) if e.actor == "carol"]
    assert "the device reports '14.3', the MDM profile says '14.2.1'" in event.message
    device = devices.get_device(stack.db.uow(), "C02AUTO00002")
    [kept] = devices.collected_history(stack.db.uow(), device.id)
    assert collected_to_dict(kept)["os_version"] == "14.3"

    unknown = stack.post(carol, collected("C02NOTSYNCED", user="carol"))
    assert (unknown.status_code, unknown.json()) == (403, {"error": "device not found"})


@pytest.mark.parametrize(
    ("mode", "auto_enroll", "message"),
    [
        (DeviceTrustMode.OPTIONAL, False, "auto-enrollment is disabled"),
        (DeviceTrustMode.OFF, True, "device trust is off"),
    ],
)
def test_auto_enrollment_off_refuses_at_once(
    stack: Stack, mode: DeviceTrustMode, auto_enroll: bool, message: str
) -> None:
    dave = stack.user(f"dave-{mode.value}")  # the name, as the audit log names the actor
    stack.device(f"C02OFF-{mode.value}")
    stack.trust(auto_enroll=auto_enroll, mode=mode)
    answer = stack.post(dave, collected(f"C02OFF-{mode.value}", user="alice"))
    assert answer.status_code == 403 and answer.json()["error"].startswith(message)
    events = audit.list_events(stack.db.uow(), type=audit.DEVICE_TOKEN_CREATE)
    [event] = [e for e in events if e.actor == f"dave-{mode.value}"]
    assert not event.success and message in event.message


def test_attempts_are_rate_limited_per_user(stack: Stack) -> None:
    erin, frank = stack.user("erin"), stack.user("frank")
    stack.trust(auto_enroll=True)
    statuses = [stack.post(erin, collected("C02NOPE")).status_code for _ in range(5)]
    assert statuses == [403, 403, 403, 403, 429]
    limited = stack.post(erin, collected("C02NOPE"))
    assert limited.json()["error"].startswith("too many auto-enrollment attempts for erin")
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert stack.post(frank, collected("C02NOPE")).status_code == 403  # another user's count
    events = audit.list_events(stack.db.uow(), type=audit.DEVICE_TOKEN_CREATE)
    limited_events = [e for e in events if e.actor == "erin" and "too many" in e.message]
    assert len(limited_events) == 2 and not any(e.success for e in limited_events)


def test_a_slow_verdict_is_answered_202_and_polled_by_its_user_only(slow: Stack) -> None:
    amy, ben = slow.user("amy"), slow.user("ben")
    slow.device("C02SLOW00001", SLOW_PROFILE)
    slow.trust(auto_enroll=True)
    answer = slow.post(amy, collected("C02SLOW00001", user="amy"))
    assert answer.status_code == 202
    location = answer.headers["Location"]
    assert location == answer.json()["location"]
    assert location.startswith("/v1/auto-enroll/")

    polled = slow.poll(amy, location)
    deadline = time.monotonic() + 30
    while polled.status_code == 202 and time.monotonic() < deadline:
        time.sleep(0.1)
        polled = slow.poll(amy, location)
    assert polled.status_code == 200 and polled.json()["token"]
    assert slow.poll(ben, location).status_code == 404
    assert slow.poll(amy, "/v1/auto-enroll/not-a-check").status_code == 404


# The adversarial pass's takeover, replayed: a Jamf-synced Mac whose user of record is
# tomasz.costa, and an attacker with the access role who knows only its serial.
TAKEN_PROFILE = Profile(
    model_identifier="Mac16,1",
    os_version="15.2",
    os_build="24C101",
    os_usernames=("tomasz.costa", "_mbsetupuser"),
    jamf_binary_version="11.12.0",
)
TAKEN_VALUES = ("Mac16,1", "15.2", "24C101", "tomasz.costa", "11.12.0")


def mac(serial: str, user: str, **changes: Any) -> CollectedData:
    return collected(
        serial,
        user,
        **{
            "model_identifier": "Mac16,1",
            "os_version": "15.2",
            "os_build": "24C101",
            "jamf_binary_version": "11.12.0",
            **changes,
        },
    )


def test_the_takeover_of_a_synced_mac_by_another_user_is_refused(
    stack: Stack, tmp_path: Path
) -> None:
    serial = "C02TAKEOVER1"
    mallory = stack.user("mallory")
    tomasz = stack.user("tomasz", logins=("tomasz.costa",))
    stack.device(serial, TAKEN_PROFILE)
    stack.trust(auto_enroll=True)

    # Step 1: whatever the attacker sends, the refusal tells nothing the MDM knows.
    probe = stack.post(mallory, mac(serial, "mallory", model_identifier="MacBookAir10,1"))
    assert probe.status_code == 403
    assert not any(value in probe.text for value in TAKEN_VALUES), probe.text

    # Step 2: the right values and the owner's login user, resent: still refused.
    replay = stack.post(mallory, mac(serial, "tomasz.costa"))
    assert replay.status_code == 403 and "token" not in replay.json()
    assert replay.json()["error"].startswith(f"user mallory is not a user of device {serial}/")
    assert not any(value in replay.text for value in TAKEN_VALUES), replay.text
    assert devices.get_device(stack.db.uow(), serial).enroll_status.value == "not_enrolled"
    events = audit.list_events(stack.db.uow(), type=audit.DEVICE_TOKEN_CREATE)
    refused = [e for e in events if e.actor == "mallory"]
    assert len(refused) == 2 and not any(e.success for e in refused)
    assert "MDM usernames: tomasz.costa" in refused[1].message  # for admins, in the log

    # The real owner, who logs in as tomasz.costa, still auto-enrolls and enrolls.
    drifted = stack.post(tomasz, mac(serial, "tomasz.costa", os_build="24C999"))
    assert drifted.status_code == 403 and "os_build differs" in drifted.json()["error"]
    assert not any(value in drifted.text for value in TAKEN_VALUES), drifted.text
    answer = stack.post(tomasz, mac(serial, "tomasz.costa"))
    assert answer.status_code == 200, answer.text
    key = SoftwareEnclaveKey.load_or_create(tmp_path)
    with CeremonyClient(stack.url, tomasz) as client:
        enrolled = enroll_macos(client, answer.json()["token"], mac(serial, "tomasz.costa"), key)
    assert (enrolled["enroll_status"], enrolled["owner"]) == ("enrolled", "tomasz")


def test_a_device_registered_by_hand_auto_enrolls_only_for_its_assigned_user(
    stack: Stack,
) -> None:
    owner, other = stack.user("gina"), stack.user("hank")
    stack.trust(auto_enroll=True)
    devices.register_device(
        stack.db.uow(), os_type="macos", asset_tag="C02MANUAL001", actor="admin"
    )
    devices.register_device(
        stack.db.uow(),
        os_type="macos",
        asset_tag="C02MANUAL002",
        actor="admin",
        assigned_user="gina",
    )
    unassigned = stack.post(owner, collected("C02MANUAL001", user="gina"))
    assert unassigned.status_code == 403
    assert "no MDM profile and no assigned user: ask an admin" in unassigned.json()["error"]
    refused = stack.post(other, collected("C02MANUAL002", user="hank"))
    assert refused.json()["error"] == "user hank is not a user of device C02MANUAL002/macOS"
    assert stack.post(owner, collected("C02MANUAL002", user="gina")).status_code == 200


def test_a_bot_is_refused_auto_enrollment_naming_the_roles_needed(stack: Stack) -> None:
    bot = stack.user("ci-bot", roles=(Role.BOT,))
    stack.device("C02BOT000001", replace_users(PROFILE, "ci-bot"))
    stack.trust(auto_enroll=True)
    answer = stack.post(bot, collected("C02BOT000001", user="ci-bot"))
    assert answer.status_code == 403
    assert answer.json()["error"] == (
        "auto-enrollment requires the access, editor or device-admin role; user ci-bot has bot"
    )
    [event] = [e for e in audit.list_events(stack.db.uow()) if e.actor == "ci-bot"]
    assert not event.success and "requires the access" in event.message


def replace_users(profile: Profile, *names: str) -> Profile:
    return replace(profile, os_usernames=names)


def test_unknown_and_non_canonical_check_ids_are_404_at_once(stack: Stack) -> None:
    alice = stack.user("ivy")
    started_at = time.monotonic()
    for check_id in (str(uuid.uuid4()), str(uuid.uuid4()).upper(), uuid.uuid4().hex):
        assert stack.poll(alice, f"/v1/auto-enroll/{check_id}").status_code == 404
    assert time.monotonic() - started_at < 1.0  # no waiting for a verdict that never comes


def test_a_verdict_is_sealed_short_lived_and_delivered_once(slow: Stack) -> None:
    cora = slow.user("cora")
    slow.device("C02ONCE00001", SLOW_PROFILE)
    slow.trust(auto_enroll=True)
    answer = slow.post(cora, collected("C02ONCE00001", user="cora"))
    assert answer.status_code == 202
    check_id = answer.json()["check_id"]
    backend = redis.Redis.from_url(f"{slow.redis_url}/1")
    key = f"celery-task-meta-{check_id}"
    deadline = time.monotonic() + 30
    while not backend.exists(key) and time.monotonic() < deadline:
        time.sleep(0.05)
    stored = backend.get(key)
    assert stored is not None
    assert 0 < backend.ttl(key) <= 300  # the token's own five minutes, not days

    polled = slow.poll(cora, answer.headers["Location"])
    assert polled.status_code == 200, polled.text
    token = polled.json()["token"]
    assert token.encode() not in stored  # sealed in the backend, with a key it never saw
    assert not backend.exists(key)  # delivered, so forgotten
    assert slow.poll(cora, answer.headers["Location"]).status_code == 404  # once
    backend.close()


def test_on_the_embedded_backend_a_verdict_is_sealed_and_deleted_once_delivered(
    tmp_path: Path,
) -> None:
    with _stack(tmp_path, embedded=True, DEVTRUST_AUTO_ENROLL_WAIT="0") as slow:
        alice = slow.user("alice")
        slow.device("C02FILE00001")
        slow.trust(auto_enroll=True)
        answer = slow.post(alice, collected("C02FILE00001"))
        assert answer.status_code == 202
        stored_at = tmp_path / "data" / "results" / f"celery-task-meta-{answer.json()['check_id']}"
        deadline = time.monotonic() + 30
        while not stored_at.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        stored = stored_at.read_bytes()
        polled = slow.poll(alice, answer.headers["Location"])
        assert polled.status_code == 200, polled.text
        assert polled.json()["token"].encode() not in stored and b"sealed_token" in stored
        assert not stored_at.exists()
        assert slow.poll(alice, answer.headers["Location"]).status_code == 404
