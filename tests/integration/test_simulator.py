"""The Jamf Pro simulator over a real socket: auth, paging, filters, mutations, faults.

Every test talks HTTP to a uvicorn server on loopback, the way the sync engine will.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from jamf.simulator import SimulatorConfig, create_app, running_simulator
from jamf.simulator.catalog import MAC_MODELS, MACOS_RELEASES
from worker.cli import run

SECTIONS = ["GENERAL", "HARDWARE", "OPERATING_SYSTEM", "USER_AND_LOCATION", "LOCAL_USER_ACCOUNTS"]
INVENTORY = "/api/v1/computers-inventory"
REFERENCE = datetime(2026, 11, 26, tzinfo=UTC)
CLIENT_SECRET = "devtrust-secret"  # the simulator's default


class Jamf:
    """A bare Jamf Pro API caller: tokens, GETs with the bearer, and the admin routes."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30)
        self._token: str | None = None

    def __enter__(self) -> Jamf:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def oauth(
        self,
        client_id: str = "devtrust",
        secret: str = CLIENT_SECRET,
        path: str = "/api/oauth/token",
    ) -> httpx.Response:
        form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
        return self.http.post(path, data=form)

    @property
    def token(self) -> str:
        if self._token is None:
            for _ in range(20):  # token requests may meet injected faults too
                try:
                    response = self.oauth()
                    self._token = str(response.json()["access_token"])
                    break
                except (httpx.HTTPError, ValueError, KeyError):
                    continue
        assert self._token is not None
        return self._token

    def get(self, path: str = INVENTORY, token: str | None = None, **params: Any) -> httpx.Response:
        query = {key.replace("_", "-"): value for key, value in params.items()}
        headers = {"Authorization": f"Bearer {token or self.token}"}
        return self.http.get(path, params=query, headers=headers)

    def page(self, path: str = INVENTORY, **params: Any) -> dict[str, Any]:
        response = self.get(path, **params)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def all_records(self, page_size: int = 150, **params: Any) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        number = 0
        while True:
            body = self.page(page=number, page_size=page_size, **params)
            records.extend(body["results"])
            number += 1
            if number * page_size >= body["totalCount"]:
                return records

    def fleet(self, kind: str = "computers") -> list[dict[str, Any]]:
        response = self.http.get("/_sim/fleet", params={"kind": kind})
        assert response.status_code == 200
        fleet: list[dict[str, Any]] = response.json()
        return fleet


@pytest.fixture(scope="module")
def jamf() -> Iterator[Jamf]:
    """A read-only 1000-computer simulator shared by the tests that change nothing."""
    config = SimulatorConfig(devices=1000, seed=3, reference_time=REFERENCE)
    with running_simulator(config) as url, Jamf(url) as api:
        yield api


@pytest.fixture
def start() -> Iterator[Callable[..., Jamf]]:
    """Start a simulator of one's own (for mutations, faults, expiry)."""
    with ExitStack() as stack:

        def starter(**options: Any) -> Jamf:
            options.setdefault("reference_time", REFERENCE)
            url = stack.enter_context(running_simulator(SimulatorConfig(**options)))
            return stack.enter_context(Jamf(url))

        yield starter


# -- authentication --------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/oauth/token", "/api/v1/oauth/token"])
def test_oauth_client_credentials_grant_a_30_minute_bearer_token_at_both_paths(
    jamf: Jamf, path: str
) -> None:
    def token_requests() -> int:
        counts = jamf.http.get("/_sim/stats").json()["by_endpoint"].get("oauth/token", {})
        return int(sum(counts.values()))

    before = token_requests()
    body = jamf.oauth(path=path).json()
    assert token_requests() == before + 1  # counted (and faulted) as the token endpoint
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 1800  # Jamf's default lifetime
    assert jamf.get(token=body["access_token"], page_size=1).status_code == 200
    assert jamf.oauth(secret="guess", path=path).status_code == 401


def test_wrong_client_secret_is_refused_with_401(jamf: Jamf) -> None:
    response = jamf.oauth(secret="guess")
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    form = {"grant_type": "password", "client_id": "devtrust", "client_secret": "devtrust-secret"}
    assert jamf.http.post("/api/oauth/token", data=form).status_code == 400


def test_basic_auth_token_keep_alive_and_invalidate(jamf: Jamf) -> None:
    response = jamf.http.post("/api/v1/auth/token", auth=("admin", "admin-password"))
    assert response.status_code == 200
    first = response.json()
    expires = datetime.fromisoformat(first["expires"])
    assert timedelta(minutes=29) < expires - datetime.now(UTC) <= timedelta(minutes=30, seconds=1)

    bearer = {"Authorization": f"Bearer {first['token']}"}
    renewed = jamf.http.post("/api/v1/auth/keep-alive", headers=bearer)
    assert renewed.status_code == 200
    second = renewed.json()["token"]
    assert second != first["token"]
    assert jamf.get(token=first["token"]).status_code == 401  # replaced by keep-alive
    assert jamf.get(token=second, page_size=1).status_code == 200

    gone = jamf.http.post(
        "/api/v1/auth/invalidate-token", headers={"Authorization": f"Bearer {second}"}
    )
    assert gone.status_code == 204
    assert jamf.get(token=second).status_code == 401
    wrong = jamf.http.post("/api/v1/auth/token", auth=("admin", "nope"))
    assert wrong.status_code == 401


def test_jamf_pro_version_is_readable_with_any_token(jamf: Jamf) -> None:
    assert jamf.get("/api/v1/jamf-pro-version").json()["version"].startswith("11.")
    assert jamf.http.get("/api/v1/jamf-pro-version").status_code == 401


def test_missing_or_unknown_token_is_401(jamf: Jamf) -> None:
    assert jamf.http.get(INVENTORY).status_code == 401
    response = jamf.get(token="not-a-token")
    assert response.status_code == 401
    assert response.json()["errors"][0]["code"] == "INVALID_TOKEN"


def test_expired_token_is_refused(start: Callable[..., Jamf]) -> None:
    api = start(devices=10, token_ttl=1)
    body = api.oauth().json()
    assert body["expires_in"] == 1
    assert api.get(token=body["access_token"]).status_code == 200
    time.sleep(1.1)
    assert api.get(token=body["access_token"]).status_code == 401
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    assert api.http.post("/api/v1/auth/keep-alive", headers=bearer).status_code == 401


def test_tokens_can_be_expired_on_demand(start: Callable[..., Jamf]) -> None:
    api = start(devices=10)
    assert api.get().status_code == 200
    assert api.http.delete("/_sim/tokens").json() == {"expired": 1}
    assert api.get().status_code == 401


def test_a_client_without_read_privilege_gets_403(jamf: Jamf) -> None:
    token = jamf.oauth("noread", "noread-secret").json()["access_token"]
    response = jamf.get(token=token)
    assert response.status_code == 403
    assert response.json()["httpStatus"] == 403
    assert jamf.get("/api/v1/computers-inventory/1", token=token).status_code == 403
    user = jamf.http.post("/api/v1/auth/token", auth=("noread", "noread-secret")).json()
    assert jamf.get(token=user["token"]).status_code == 403


# -- paging, sections, sorting ---------------------------------------------------------


def test_paging_by_id_returns_every_device_exactly_once(jamf: Jamf) -> None:
    records = jamf.all_records(page_size=150, sort="id:asc")
    ids = [int(r["id"]) for r in records]
    assert ids == list(range(1, 1001))
    assert [int(d["id"]) for d in jamf.fleet()] == ids
    assert jamf.page(page=7, page_size=150)["results"] == []


def test_versions_one_to_four_serve_the_same_pages(jamf: Jamf) -> None:
    params = {"page": 2, "page_size": 25, "sort": "id:desc", "section": SECTIONS}
    versions = ("v1", "v2", "v3", "v4")
    pages = [jamf.page(f"/api/{v}/computers-inventory", **params) for v in versions]
    assert pages[0] == pages[1] == pages[2] == pages[3]
    assert pages[0]["results"][0]["id"] == "950"
    assert jamf.get("/api/v5/computers-inventory").status_code == 404
    assert jamf.get("/api/v5/computers-inventory-detail/1").status_code == 404


def test_only_requested_sections_are_filled(jamf: Jamf) -> None:
    general_only = jamf.page(page_size=5)["results"][0]
    assert general_only["general"]["name"]
    assert general_only["hardware"] is None
    assert general_only["operatingSystem"] is None
    assert general_only["userAndLocation"] is None
    assert general_only["localUserAccounts"] == []

    hardware = jamf.page(page_size=5, section=["HARDWARE"])["results"][0]
    assert hardware["general"] is None  # GENERAL only when asked, or when nothing is
    assert hardware["hardware"]["serialNumber"]
    assert hardware["operatingSystem"] is None
    both = jamf.page(page_size=5, section=["HARDWARE", "GENERAL"])["results"][0]
    assert both["general"]["name"] and both["hardware"]["serialNumber"]


def test_records_look_like_a_real_mac_fleet(jamf: Jamf) -> None:
    records = jamf.all_records(page_size=500, sort="id:asc", section=SECTIONS)
    serials = [r["hardware"]["serialNumber"] for r in records]
    assert all(re.fullmatch(r"[A-Z0-9]{12}", s) for s in serials)
    assert len(set(serials)) == len(serials)
    releases = {(r.version, r.build, r.supplemental) for r in MACOS_RELEASES}
    systems = [r["operatingSystem"] for r in records]
    assert all(
        (s["version"], s["build"], s["supplementalBuildVersion"]) in releases for s in systems
    )
    assert any(s["supplementalBuildVersion"] for s in systems)  # some Rapid Security Responses
    identifiers = {m.identifier for m in MAC_MODELS}
    assert all(r["hardware"]["modelIdentifier"] in identifiers for r in records)
    managed = sum(r["general"]["remoteManagement"]["managed"] for r in records)
    assert 900 <= managed <= 990
    dates = [datetime.fromisoformat(r["general"]["reportDate"]) for r in records]
    assert all(REFERENCE - timedelta(days=30) <= d < REFERENCE for d in dates)
    for record in records:
        accounts = record["localUserAccounts"]
        assert 1 <= len(accounts) <= 3
        assert record["userAndLocation"]["username"] in {a["username"] for a in accounts}
        assert record["general"]["platform"] == "Mac"


def test_sort_by_report_date_and_by_several_keys(jamf: Jamf) -> None:
    newest = jamf.page(page_size=50, sort="general.reportDate:desc")["results"]
    dates = [r["general"]["reportDate"] for r in newest]
    assert dates == sorted(dates, reverse=True)
    fleet = sorted(jamf.fleet(), key=lambda d: d["reportDate"], reverse=True)
    assert dates[0] == fleet[0]["reportDate"]

    mixed = jamf.page(page_size=1000, sort="general.remoteManagement.managed:asc,id:desc")
    unmanaged = [r for r in mixed["results"] if not r["general"]["remoteManagement"]["managed"]]
    assert mixed["results"][: len(unmanaged)] == unmanaged
    ids = [int(r["id"]) for r in unmanaged]
    assert ids == sorted(ids, reverse=True)


def test_default_sort_is_by_name_like_jamf(jamf: Jamf) -> None:
    names = [r["general"]["name"].casefold() for r in jamf.page(page_size=200)["results"]]
    assert names == sorted(names)


# -- filters ---------------------------------------------------------------------------


def test_filter_on_managed_matches_the_fleet(jamf: Jamf) -> None:
    managed = [d for d in jamf.fleet() if d["managed"]]
    records = jamf.all_records(filter="general.remoteManagement.managed==true", sort="id:asc")
    assert [r["id"] for r in records] == [d["id"] for d in managed]


def test_filter_on_report_date_matches_the_fleet(jamf: Jamf) -> None:
    fleet = jamf.fleet()
    since = sorted(d["reportDate"] for d in fleet)[600]
    expected = sorted(int(d["id"]) for d in fleet if d["reportDate"] >= since)
    body = jamf.page(filter=f"general.reportDate>={since}", sort="id:asc", page_size=2000)
    assert body["totalCount"] == len(expected) == 400
    assert [int(r["id"]) for r in body["results"]] == expected


def test_filter_with_and_or_and_wildcards(jamf: Jamf) -> None:
    fleet = {d["id"]: d for d in jamf.fleet()}
    text = "hardware.serialNumber==C02*;(id<100,id=in=(500,501,502))"
    results = jamf.page(filter=text, page_size=2000, sort="id:asc")["results"]
    expected = [
        i
        for i, d in fleet.items()
        if d["serialNumber"].startswith("C02") and (int(i) < 100 or int(i) in (500, 501, 502))
    ]
    assert [r["id"] for r in results] == expected


def test_device_by_id_and_404(jamf: Jamf) -> None:
    record = jamf.get("/api/v1/computers-inventory-detail/17").json()
    sectioned = jamf.get("/api/v1/computers-inventory-detail/17", section=SECTIONS).json()
    assert record["id"] == "17"
    assert record["hardware"]["serialNumber"]
    assert record["localUserAccounts"]
    for version in ("v1", "v2", "v3", "v4"):
        assert jamf.get(f"/api/{version}/computers-inventory-detail/17").json() == record
        by_id = jamf.get(f"/api/{version}/computers-inventory/17", section=SECTIONS).json()
        assert by_id == sectioned
        missing = jamf.get(f"/api/{version}/computers-inventory-detail/99999")
        assert missing.status_code == 404
        assert missing.json()["httpStatus"] == 404
        assert jamf.get(f"/api/{version}/computers-inventory/99999").status_code == 404


def test_single_records_honour_sections_and_default_like_jamf(jamf: Jamf) -> None:
    # computers-inventory/{id}: GENERAL alone unless other sections are asked for.
    general = jamf.get("/api/v4/computers-inventory/17").json()
    assert general["general"]["name"]
    assert general["hardware"] is None and general["localUserAccounts"] == []
    hardware = jamf.get("/api/v4/computers-inventory/17", section=["HARDWARE"]).json()
    assert hardware["general"] is None and hardware["hardware"]["serialNumber"]
    # computers-inventory-detail/{id}: every section ("return all sections"), unless
    # some are asked for, and then only those.
    detail = "/api/v4/computers-inventory-detail/17"
    everything = jamf.get(detail).json()
    assert everything["security"]["sipStatus"] and everything["diskEncryption"]
    assert everything["operatingSystem"]["version"] and everything["userAndLocation"]["username"]
    asked = jamf.get(detail, section=["GENERAL", "OPERATING_SYSTEM"]).json()
    assert asked["general"] == everything["general"]
    assert asked["operatingSystem"] == everything["operatingSystem"]
    assert asked["hardware"] is None and asked["localUserAccounts"] == []
    assert asked["diskEncryption"] is None and asked["security"] is None
    refused = jamf.get(detail, section=["COLOUR"])
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["field"] == "section"


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({"page_size": 2001}, "page-size", "between 1 and 2000"),
        ({"page_size": 0}, "page-size", "between 1 and 2000"),
        ({"page": -1}, "page", "0 or more"),
        ({"page": "two"}, "page", "integer"),
        ({"filter": "general.colour==red"}, "filter", "unknown field 'general.colour'"),
        ({"filter": "id=="}, "filter", "expected a value"),
        ({"filter": "general.reportDate>yesterday"}, "filter", "not a valid date-time"),
        ({"sort": "colour:asc"}, "sort", "unknown field 'colour'"),
        ({"sort": "id:up"}, "sort", "neither asc nor desc"),
        ({"section": ["GENERAL", "COLOUR"]}, "section", "unknown section 'COLOUR'"),
    ],
)
def test_bad_parameters_are_400_naming_the_problem(
    jamf: Jamf, params: dict[str, Any], field: str, words: str
) -> None:
    response = jamf.get(**params)
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["field"] == field
    assert words in error["description"]


# -- mobile devices --------------------------------------------------------------------


def test_mobile_devices_are_a_separate_smaller_fleet(jamf: Jamf) -> None:
    path = "/api/v2/mobile-devices/detail"
    body = jamf.page(path, page_size=200, section=["GENERAL", "HARDWARE", "USER_AND_LOCATION"])
    assert body["totalCount"] == 100
    device = body["results"][0]
    assert device["mobileDeviceId"] == "1"
    assert device["deviceType"] == "iOS"
    assert device["general"]["osVersion"] and device["general"]["osBuild"]
    assert device["userAndLocation"]["username"]
    serials = {d["hardware"]["serialNumber"] for d in body["results"]}
    assert len(serials) == 100
    assert not serials & {d["serialNumber"] for d in jamf.fleet()}
    managed = jamf.page(path, filter="managed==true", page_size=200)["totalCount"]
    assert managed == sum(d["managed"] for d in jamf.fleet("mobile-devices"))
    assert jamf.get(path, filter="general.managed==true").status_code == 400


def test_one_mobile_device_comes_in_jamfs_detail_shape(jamf: Jamf) -> None:
    sections = ["GENERAL", "HARDWARE", "USER_AND_LOCATION"]
    listed = jamf.page("/api/v2/mobile-devices/detail", page=0, page_size=5, section=sections)
    item = listed["results"][4]
    detail = jamf.get("/api/v2/mobile-devices/5/detail").json()
    # Jamf's MobileDeviceDetailsV2: identity and OS at the top, the user under
    # ``location``, the model under ``ios``; none of the list's sections.
    assert detail["id"] == item["mobileDeviceId"] == "5"
    assert detail["serialNumber"] == item["hardware"]["serialNumber"]
    assert detail["osVersion"] == item["general"]["osVersion"]
    assert detail["osBuild"] == item["general"]["osBuild"]
    assert detail["osSupplementalBuildVersion"] == item["general"]["osSupplementalBuildVersion"]
    last = item["general"]["lastInventoryUpdateDate"]
    assert detail["lastInventoryUpdateTimestamp"] == last
    assert detail["managed"] == item["general"]["managed"]
    assert detail["location"]["username"] == item["userAndLocation"]["username"]
    assert detail["type"] == "ios"
    assert detail["ios"]["modelIdentifier"] == item["hardware"]["modelIdentifier"]
    assert not {"mobileDeviceId", "general", "hardware", "userAndLocation"} & set(detail)
    missing = jamf.get("/api/v2/mobile-devices/9999/detail")
    assert missing.status_code == 404 and missing.json()["httpStatus"] == 404


# -- mutations -------------------------------------------------------------------------


def test_added_changed_and_deleted_devices_show_in_the_next_pages(
    start: Callable[..., Jamf],
) -> None:
    api = start(devices=200)
    before = datetime.now(UTC) - timedelta(seconds=1)
    old = api.get("/api/v1/computers-inventory/5", section=SECTIONS).json()

    added = api.http.post("/_sim/devices", json={"hardware": {"serialNumber": "C02TESTADD01"}})
    assert added.status_code == 201
    assert added.json()["id"] == "201"
    changed = api.http.patch("/_sim/devices/5")
    assert changed.status_code == 200
    assert api.http.delete("/_sim/devices/7").status_code == 204
    assert api.http.delete("/_sim/devices/7").status_code == 404

    ids = [int(r["id"]) for r in api.all_records(sort="id:asc")]
    assert ids == [i for i in range(1, 202) if i != 7]
    assert [int(d["id"]) for d in api.fleet()] == ids
    assert api.get("/api/v1/computers-inventory/7").status_code == 404

    new = api.get("/api/v4/computers-inventory-detail/5").json()
    assert new["general"]["reportDate"] > old["general"]["reportDate"]
    assert new["operatingSystem"]["version"] != old["operatingSystem"]["version"]
    assert new["hardware"]["serialNumber"] == old["hardware"]["serialNumber"]
    recent = api.page(filter=f"general.reportDate>={before.isoformat()}", sort="id:asc")
    assert [r["id"] for r in recent["results"]] == ["5", "201"]
    serial = api.page(filter="hardware.serialNumber==C02TESTADD01", section=["HARDWARE"])
    assert [r["id"] for r in serial["results"]] == ["201"]


def test_changes_accept_overrides(start: Callable[..., Jamf]) -> None:
    api = start(devices=20)
    body = {"general": {"remoteManagement": {"managed": False}}}
    assert api.http.patch("/_sim/devices/3", json=body).status_code == 200
    unmanaged = api.page(filter="general.remoteManagement.managed==false", page_size=100)
    assert "3" in {r["id"] for r in unmanaged["results"]}
    assert api.http.patch("/_sim/devices/99", json={}).status_code == 404
    assert api.http.post("/_sim/devices", content=b"[1]").status_code == 400


def test_mobile_devices_can_be_added_changed_and_deleted(start: Callable[..., Jamf]) -> None:
    api = start(devices=200)
    path = "/api/v2/mobile-devices/detail"
    before = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    added = api.http.post("/_sim/mobile-devices", json={})
    assert added.json()["mobileDeviceId"] == "21"
    assert api.http.patch("/_sim/mobile-devices/4").status_code == 200
    assert api.http.delete("/_sim/mobile-devices/9").status_code == 204
    ids = [r["mobileDeviceId"] for r in api.page(path, page_size=100)["results"]]
    assert ids == [str(i) for i in range(1, 22) if i != 9]
    recent = api.page(path, filter=f"lastInventoryUpdateDate>={before}", sort="mobileDeviceId:asc")
    assert [r["mobileDeviceId"] for r in recent["results"]] == ["4", "21"]
    assert api.http.get("/_sim/fleet", params={"kind": "tablets"}).status_code == 400


# -- faults and latency ----------------------------------------------------------------


def outcome(api: Jamf) -> str:
    """What a client sees for one inventory request: a fault's name, or "ok"."""
    try:
        response = api.get(page_size=5)
    except httpx.RemoteProtocolError:
        return "dropped"
    if response.status_code == 429:
        assert response.headers["retry-after"] == "1"
        assert response.headers["x-ratelimit-remaining"] == "0"
    if response.status_code != 200:
        return str(response.status_code)
    try:
        response.json()
    except ValueError:
        html = response.headers["content-type"].startswith("text/html")
        return "html" if html else "truncated"
    return "ok"


def test_every_kind_of_fault_is_injected(start: Callable[..., Jamf]) -> None:
    api = start(devices=50, fault_rate=1.0)
    seen = Counter(outcome(api) for _ in range(140))
    assert set(seen) == {"500", "502", "503", "429", "html", "truncated", "dropped"}
    stats = api.http.get("/_sim/stats").json()
    assert stats["faults_injected"] >= 140
    assert stats["by_endpoint"]["computers-inventory"]["dropped"] == seen["dropped"]


def test_token_requests_fail_at_half_the_rate(start: Callable[..., Jamf]) -> None:
    api = start(devices=5, fault_rate=1.0)
    failures = 0
    for _ in range(60):
        try:
            failures += api.oauth().status_code != 200
        except httpx.HTTPError:
            failures += 1
    assert 15 <= failures <= 45


def test_faults_are_reproducible_from_the_seed(start: Callable[..., Jamf]) -> None:
    def outcomes(seed: int) -> list[str]:
        api = start(devices=20, fault_rate=0.5, fault_seed=seed)
        return [outcome(api) for _ in range(30)]

    first, again, other = outcomes(11), outcomes(11), outcomes(12)
    assert first == again
    assert first != other
    assert "ok" in first
    assert len(set(first)) > 2


def test_faults_and_latency_change_at_runtime(start: Callable[..., Jamf]) -> None:
    api = start(devices=10, fault_rate=1.0)
    settings = api.http.put("/_sim/faults", json={"fault_rate": 0, "latency_ms": 150}).json()
    assert settings["fault_rate"] == 0
    began = time.perf_counter()
    assert {outcome(api) for _ in range(3)} == {"ok"}
    assert time.perf_counter() - began >= 0.45
    api.http.put("/_sim/faults", json={"latency_ms": 0, "fault_rate": 1, "fault_kinds": ["429"]})
    assert outcome(api) == "429"
    assert api.http.put("/_sim/faults", json={"fault_rate": 2}).status_code == 400
    assert api.http.put("/_sim/faults", json={"fault_kinds": ["gremlins"]}).status_code == 400


# -- determinism and scale -------------------------------------------------------------


def test_the_same_seed_makes_the_same_fleet(start: Callable[..., Jamf]) -> None:
    def first_page(seed: int) -> list[dict[str, Any]]:
        api = start(devices=300, seed=seed)
        results: list[dict[str, Any]] = api.page(page_size=300, section=SECTIONS)["results"]
        return results

    assert first_page(5) == first_page(5)
    assert first_page(5) != first_page(6)


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def test_a_100k_fleet_serves_first_and_last_pages_without_generating_the_rest() -> None:
    app = create_app(SimulatorConfig(devices=100_000, reference_time=REFERENCE))
    generator = app.state.simulator.computers.generator
    generated: list[int] = []
    original = generator.record

    def counting_record(ident: int) -> dict[str, Any]:
        generated.append(ident)
        record: dict[str, Any] = original(ident)
        return record

    generator.record = counting_record
    rss_before = _rss_mb()
    with running_simulator(app.state.simulator.config, app=app) as url, Jamf(url) as api:
        for page in (0, 49):
            began = time.perf_counter()
            body = api.page(page=page, page_size=2000, sort="id:asc", section=SECTIONS)
            assert time.perf_counter() - began < 5
            assert body["totalCount"] == 100_000
        assert body["results"][-1]["id"] == "100000"
        recent = api.page(filter="general.reportDate>=2026-11-25T00:00:00Z", sort="id:asc")
        assert 3000 < recent["totalCount"] < 3700  # a thirtieth of the fleet
        assert _rss_mb() - rss_before < 50
    assert len(generated) == 2 * 2000 + 100


# -- the command line ------------------------------------------------------------------


def test_cli_refuses_bad_flags_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["jamf", "simulator", "--devices", "-1"]) == 1
    assert run(["jamf", "simulator", "--fault-rate", "1.5"]) == 1
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert run(["jamf", "simulator", "--port", str(port)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "error: --devices must be between 0 and 10000000, not -1",
        "error: --fault-rate must be between 0 and 1, not 1.5",
        f"error: cannot listen on 127.0.0.1:{port}: address already in use",
    ]


def test_cli_serves_until_interrupted() -> None:
    command = [sys.executable, "-c", "from worker.cli import main; main()"]
    args = ["jamf", "simulator", "--port", "0", "--devices", "25", "--client-id", "demo"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        command + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            match = re.fullmatch(
                r"Jamf Pro simulator: 25 computers at (\S+) \(client id demo\)\n", line
            )
            assert match, line
            with Jamf(match.group(1)) as api:
                issued = api.oauth("demo", "devtrust-secret").json()
                assert issued["expires_in"] == 1800  # --token-ttl defaults to Jamf's 30 min
                assert api.get(token=issued["access_token"]).json()["totalCount"] == 25
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=10)
    assert process.returncode == 0
