"""The Jamf client against a respx router: auth, renewal, retries, paging, probing.

The router is injected as the client's transport, the clock is moved by hand and
``sleep`` only records the waits, so every retry scenario runs instantly.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import respx

from inventory.errors import ConfigurationError
from inventory.settings import JAMF_API_VERSIONS, load_settings
from jamf.client import API_VERSIONS, DEFAULT_SECTIONS, MOBILE_SECTIONS, JamfClient, RetryPolicy
from jamf.errors import (
    RETRYABLE,
    JamfAuthError,
    JamfBadResponse,
    JamfConfigError,
    JamfNotFound,
    JamfPermissionError,
    JamfRequestRefused,
    JamfServerBusy,
    JamfUnavailable,
)

BASE = "https://acme.jamfcloud.example"
CLIENT_ID = "3c1d-client-id"
CLIENT_SECRET = "client-secret-Zq81-never-log-me"
USERNAME = "api-reader"
PASSWORD = "password-Px42-never-log-me"
SERVER_DATE = "Wed, 26 Nov 2026 12:00:00 GMT"
V1 = "/api/v1/computers-inventory"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Sleeps(list[float]):
    """Records the waits; optionally moves the clock, as a real sleep would."""

    def __init__(self, clock: Clock | None = None) -> None:
        super().__init__()
        self.clock = clock

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
        if self.clock is not None:
            self.clock.advance(seconds)


@pytest.fixture
def router() -> respx.Router:
    return respx.Router(base_url=BASE, assert_all_called=False)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def make(router: respx.Router, clock: Clock, sleeps: Sleeps) -> Callable[..., JamfClient]:
    def make(**kwargs: Any) -> JamfClient:
        options: dict[str, Any] = {
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "api_version": 1,
            "transport": httpx.MockTransport(router.handler),
            "clock": clock,
            "sleep": sleeps,
        }
        options.update(kwargs)
        return JamfClient(BASE, **options)

    return make


def oauth_tokens(router: respx.Router, expires_in: int = 60) -> respx.Route:
    """Each call issues the next token: token-1, token-2, ..."""
    count = iter(range(1, 1_000))

    def issue(request: httpx.Request) -> httpx.Response:
        body = {"access_token": f"token-{next(count)}", "expires_in": expires_in}
        return httpx.Response(200, json={**body, "token_type": "Bearer", "scope": "api-role:1"})

    return router.post("/api/oauth/token").mock(side_effect=issue)


def page(*ids: int, total: int | None = None) -> httpx.Response:
    results = [{"id": str(i), "general": {"name": f"mac-{i}"}} for i in ids]
    return httpx.Response(
        200, json={"totalCount": len(ids) if total is None else total, "results": results}
    )


def bearer(request: httpx.Request) -> str:
    return request.headers["authorization"].removeprefix("Bearer ")


# -- authentication -----------------------------------------------------------------


def test_oauth_token_is_fetched_with_the_client_credentials_form(
    router: respx.Router, make: Callable[..., JamfClient]
) -> None:
    tokens = oauth_tokens(router)
    inventory = router.get(V1).mock(return_value=page(1, 2))

    result = make().computers_page(page=0)

    assert [r["id"] for r in result.results] == ["1", "2"]
    assert result.total_count == 2
    form = httpx.QueryParams(tokens.calls.last.request.content.decode())
    assert dict(form) == {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    assert inventory.calls.last.request.headers["authorization"] == "Bearer token-1"


def test_basic_login_gets_a_token_and_invalidates_it_on_close(
    router: respx.Router, make: Callable[..., JamfClient]
) -> None:
    login = router.post("/api/v1/auth/token").mock(
        return_value=httpx.Response(
            200,
            json={"token": "user-token-1", "expires": "2026-11-26T12:30:00.000Z"},
            headers={"date": SERVER_DATE},
        )
    )
    invalidate = router.post("/api/v1/auth/invalidate-token").mock(return_value=httpx.Response(204))
    router.get(V1).mock(return_value=page(1))

    with make(client_id=None, client_secret=None, username=USERNAME, password=PASSWORD) as jamf:
        jamf.computers_page(page=0)

    expected = httpx.BasicAuth(USERNAME, PASSWORD)._auth_header
    assert login.calls.last.request.headers["authorization"] == expected
    assert invalidate.call_count == 1
    assert bearer(invalidate.calls.last.request) == "user-token-1"


def test_token_is_renewed_before_it_expires(
    router: respx.Router, make: Callable[..., JamfClient], clock: Clock
) -> None:
    tokens = oauth_tokens(router, expires_in=60)
    inventory = router.get(V1).mock(return_value=page(1))
    jamf = make()

    jamf.computers_page(page=0)
    clock.advance(47)  # 13 s left: more than 20% of 60 s, keep it
    jamf.computers_page(page=0)
    clock.advance(2)  # 11 s left: renew before the server can refuse it mid-sync
    jamf.computers_page(page=0)

    assert tokens.call_count == 2
    assert [bearer(c.request) for c in inventory.calls] == ["token-1", "token-1", "token-2"]


@pytest.mark.parametrize(
    ("lifetime", "kept_for", "renewed_after"),
    [
        (1800, 1430, 1445),  # 30 minutes (Jamf's user tokens): renewed with 6 min left
        (599, 475, 480),  # Jamf's API client example: 20% of the lifetime
        (60, 47, 49),  # a short API client lifetime: 12 s
        (4, 1, 2.5),  # shorter than MIN_MARGIN: renewed at half its life, not on every call
    ],
)
def test_tokens_are_renewed_before_expiry_with_a_margin_fitting_their_lifetime(
    router: respx.Router,
    make: Callable[..., JamfClient],
    clock: Clock,
    lifetime: int,
    kept_for: float,
    renewed_after: float,
) -> None:
    tokens = oauth_tokens(router, expires_in=lifetime)
    inventory = router.get(V1).mock(return_value=page(1))
    jamf = make()

    jamf.computers_page(page=0)
    jamf.computers_page(page=0)
    clock.advance(kept_for)
    jamf.computers_page(page=0)
    clock.advance(renewed_after - kept_for)
    jamf.computers_page(page=0)

    assert tokens.call_count == 2
    assert [bearer(c.request) for c in inventory.calls] == ["token-1"] * 3 + ["token-2"]


def test_oauth_falls_back_to_the_v1_token_path_on_404_keeps_it_and_logs_which(
    router: respx.Router, make: Callable[..., JamfClient], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="devtrust.jamf")
    guide = router.post("/api/oauth/token").mock(return_value=httpx.Response(404))
    issued = iter(range(1, 100))
    v1 = router.post("/api/v1/oauth/token").mock(
        side_effect=lambda request: httpx.Response(
            200, json={"access_token": f"v1-token-{next(issued)}", "expires_in": 60}
        )
    )
    inventory = router.get(V1).mock(return_value=page(1))
    jamf = make()

    jamf.computers_page(page=0)
    caplog.clear()
    inventory.mock(side_effect=[httpx.Response(401), page(1)])  # forces one renewal
    jamf.computers_page(page=0)

    assert guide.call_count == 1  # asked once; the renewal went straight to v1
    assert v1.call_count == 2
    assert [bearer(c.request) for c in inventory.calls][-1] == "v1-token-2"
    assert "Jamf API client token from /api/v1/oauth/token" in caplog.text
    assert CLIENT_SECRET not in caplog.text and "v1-token" not in caplog.text


def test_oauth_uses_the_guides_token_path_first_and_says_so(
    router: respx.Router, make: Callable[..., JamfClient], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="devtrust.jamf")
    guide = oauth_tokens(router)
    v1 = router.post("/api/v1/oauth/token").mock(return_value=httpx.Response(500))
    router.get(V1).mock(return_value=page(1))

    make().computers_page(page=0)

    assert (guide.call_count, v1.call_count) == (1, 0)
    assert "Jamf API client token from /api/oauth/token, valid for 60 s" in caplog.messages


def test_oauth_without_either_token_path_is_not_found_naming_both(
    router: respx.Router, make: Callable[..., JamfClient], sleeps: Sleeps
) -> None:
    router.post(path__regex=r"^/api(/v1)?/oauth/token$").mock(return_value=httpx.Response(404))
    inventory = router.get(V1).mock(return_value=page(1))

    with pytest.raises(JamfNotFound, match=r"neither /api/oauth/token nor /api/v1/oauth/token"):
        make().computers_page(page=0)

    assert inventory.call_count == 0
    assert sleeps == []  # a missing endpoint is not retried


def test_user_token_is_renewed_with_keep_alive_not_the_password(
    router: respx.Router, make: Callable[..., JamfClient], clock: Clock
) -> None:
    def issued(token: str, expires: str) -> httpx.Response:
        return httpx.Response(
            200, json={"token": token, "expires": expires}, headers={"date": SERVER_DATE}
        )

    login = router.post("/api/v1/auth/token").mock(
        return_value=issued("user-token-1", "2026-11-26T12:30:00Z")
    )
    keep_alive = router.post("/api/v1/auth/keep-alive").mock(
        return_value=issued("user-token-2", "2026-11-26T12:30:00Z")
    )
    inventory = router.get(V1).mock(return_value=page(1))
    jamf = make(client_id=None, client_secret=None, username=USERNAME, password=PASSWORD)

    jamf.computers_page(page=0)
    clock.advance(25 * 60)  # 5 of 30 minutes left
    jamf.computers_page(page=0)

    assert login.call_count == 1
    assert bearer(keep_alive.calls.last.request) == "user-token-1"
    assert [bearer(c.request) for c in inventory.calls] == ["user-token-1", "user-token-2"]


def test_a_401_renews_the_token_once_and_the_request_succeeds(
    router: respx.Router, make: Callable[..., JamfClient]
) -> None:
    tokens = oauth_tokens(router)
    inventory = router.get(V1).mock(side_effect=[httpx.Response(401), page(7)])

    result = make().computers_page(page=0)

    assert [r["id"] for r in result.results] == ["7"]
    assert tokens.call_count == 2
    assert [bearer(c.request) for c in inventory.calls] == ["token-1", "token-2"]


def test_two_401s_in_a_row_stop_with_invalid_credentials(
    router: respx.Router, make: Callable[..., JamfClient], sleeps: Sleeps
) -> None:
    oauth_tokens(router)
    inventory = router.get(V1).mock(return_value=httpx.Response(401))

    with pytest.raises(JamfAuthError) as caught:
        make().computers_page(page=0)

    assert str(caught.value) == "invalid Jamf API credentials"
    assert inventory.call_count == 2
    assert sleeps == []  # not a retryable failure


def test_token_endpoint_refusing_twice_is_invalid_credentials(
    router: respx.Router, make: Callable[..., JamfClient]
) -> None:
    tokens = router.post("/api/oauth/token").mock(
        return_value=httpx.Response(401, json={"error": "invalid_client"})
    )
    inventory = router.get(V1).mock(return_value=page(1))

    with pytest.raises(JamfAuthError, match=r"^invalid Jamf API credentials$"):
        make().computers_page(page=0)

    assert tokens.call_count == 2
    assert inventory.call_count == 0


def test_403_means_the_client_lacks_the_read_privilege(
    router: respx.Router, make: Callable[..., JamfClient]
) -> None:
    oauth_tokens(router)
    router.get(V1).mock(return_value=httpx.Response(403))
    router.get("/api/v2/mobile-devices/detail").mock(return_value=httpx.Response(403))
    jamf = make()

    with pytest.raises(JamfPermissionError) as caught:
        jamf.computers_page(page=0)
    assert str(caught.value) == "the Jamf API client lacks the Read Computers privilege"

    with pytest.raises(JamfPermissionError, match="lacks the Read Mobile Devices privilege"):
        jamf.mobile_devices_page(page=0)


def test_concurrent_threads_share_one_token_renewal(
    router: respx.Router, make: Callable[..., JamfClient]
) -> None:
    tokens = oauth_tokens(router)
    router.get(V1).mock(return_value=page(1))
    jamf = make(max_connections=5)
    errors: list[BaseException] = []

    def fetch(number: int) -> None:
        try:
            jamf.computers_page(page=number)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=fetch, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert tokens.call_count == 1


# -- retries ------------------------------------------------------------------------


def test_5xx_and_429_are_retried_and_retry_after_is_honoured(
    router: respx.Router, make: Callable[..., JamfClient], sleeps: Sleeps
) -> None:
    oauth_tokens(router)
    inventory = router.get(V1).mock(
        side_effect=[
            httpx.Response(500),
            httpx.Response(502),
            httpx.Response(503),
            httpx.Response(429, headers={"retry-after": "7"}),
            page(1),
        ]
    )

    result = make().computers_page(page=0)

    assert [r["id"] for r in result.results] == ["1"]
    assert inventory.call_count == 5
    assert len(sleeps) == 4
    # Full jitter: each backoff lies between 0 and 0.5 s doubled per attempt...
    for attempt, wait in enumerate(sleeps[:3]):
        assert 0 <= wait <= 0.5 * 2**attempt
    # ...but never shorter than what the server asked for.
    assert sleeps[3] == 7


def test_retry_after_as_an_http_date_is_counted_from_the_server_clock(
    router: respx.Router, make: Callable[..., JamfClient], sleeps: Sleeps
) -> None:
    oauth_tokens(router)
    busy = httpx.Response(
        503, headers={"retry-after": "Wed, 26 Nov 2026 12:00:20 GMT", "date": SERVER_DATE}
    )
    router.get(V1).mock(side_effect=[busy, page(1)])

    make().computers_page(page=0)

    assert sleeps == [20]


def test_retry_after_is_capped_by_the_longest_wait(
    router: respx.Router, make: Callable[..., JamfClient], sleeps: Sleeps
) -> None:
    oauth_tokens(router)
    router.get(V1).mock(side_effect=[httpx.Response(429, headers={"retry-after": "3600"}), page(1)])

    make(retry=RetryPolicy(max_wait=12)).computers_page(page=0)

    assert sleeps == [12]


def test_rate_limit_headers_hold_back_the_next_request(
    router: respx.Router, make: Callable[..., JamfClient], sleeps: Sleeps
) -> None:
    oauth_tokens(router)
    exhausted = page(1)
    exhausted.headers["x-ratelimit-remaining"] = "0"
    exhausted.headers["x-ratelimit-reset"] = "4"
    router.get(V1).mock(side_effect=[exhausted, page(2)])
    jamf = make()

    jamf.computers_page(page=0)
    jamf.computers_page(page=1)

    assert sleeps == [4]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"<html><body>504 Gateway Time-out</body></html>", "text/html"),
        (b'{"totalCount": 3, "results": [{"id": "1"}, {"id": "2"', "application/json"),
        (b'{"totalCount": 3}', "application/json"),
        (b"", "application/json"),
    ],
    ids=["html-timeout-page", "truncated-json", "no-results", "empty"],
)
def test_a_200_that_is_not_a_page_is_retried_never_returned(
    router: respx.Router,
    make: Callable[..., JamfClient],
    sleeps: Sleeps,
    body: bytes,
    content_type: str,
) -> None:
    oauth_tokens(router)
    bad = httpx.Response(200, content=body, headers={"content-type": content_type})
    router.get(V1).mock(side_effect=[bad, page(1, 2, 3)])

    result = make().computers_page(page=0)

    assert [r["id"] for r in result.results] == ["1", "2", "3"]
    assert len(sleeps) == 1


def test_connection_errors_and_timeouts_are_retried(
    router: respx.Router, make: Callable[..., JamfClient], sleeps: Sleeps
) -> None:
    oauth_tokens(router)
    router.get(V1).mock(
        side_effect=[
            httpx.ConnectError("connection refused"),
            httpx.ReadTimeout("read timed out"),
            httpx.RemoteProtocolError("peer closed connection without sending complete message"),
            httpx.ReadError("connection reset by peer"),
            page(1),
        ]
    )

    assert make().computers_page(page=0).results == [{"id": "1", "general": {"name": "mac-1"}}]
    assert len(sleeps) == 4


def test_token_endpoint_failures_are_retried_too(
    router: respx.Router, make: Callable[..., JamfClient], sleeps: Sleeps
) -> None:
    ok = httpx.Response(200, json={"access_token": "token-1", "expires_in": 60})
    router.post("/api/oauth/token").mock(side_effect=[httpx.Response(502), ok])
    router.get(V1).mock(return_value=page(1))

    make().computers_page(page=0)

    assert len(sleeps) == 1


def test_exhausted_attempts_name_the_path_the_last_status_and_the_attempts(
    router: respx.Router, make: Callable[..., JamfClient], sleeps: Sleeps
) -> None:
    oauth_tokens(router)
    inventory = router.get(V1).mock(return_value=httpx.Response(503))

    with pytest.raises(JamfUnavailable) as caught:
        make().computers_page(page=0)

    assert str(caught.value) == (
        f"Jamf Pro is unavailable: GET {V1} failed after 6 attempts (last: HTTP 503)"
    )
    assert inventory.call_count == 6
    assert len(sleeps) == 5
    assert isinstance(caught.value.__cause__, JamfServerBusy)


def test_total_time_bounds_the_retries(
    router: respx.Router, make: Callable[..., JamfClient], clock: Clock
) -> None:
    oauth_tokens(router)
    inventory = router.get(V1).mock(side_effect=httpx.ConnectTimeout("timed out"))
    policy = RetryPolicy(attempts=100, initial_wait=10, max_wait=10, total_timeout=25)

    with pytest.raises(JamfUnavailable, match=r"last: timeout \(ConnectTimeout\)"):
        make(retry=policy, sleep=Sleeps(clock)).computers_page(page=0)

    assert inventory.call_count < 100
    assert clock.now - 1000.0 <= 25


def test_a_bad_request_is_refused_at_once_with_jamfs_reason(
    router: respx.Router, make: Callable[..., JamfClient], sleeps: Sleeps
) -> None:
    oauth_tokens(router)
    refusal = {
        "httpStatus": 400,
        "errors": [{"code": "INVALID_RSQL_FILTER", "description": "Invalid RSQL filter"}],
    }
    inventory = router.get(V1).mock(return_value=httpx.Response(400, json=refusal))

    with pytest.raises(JamfRequestRefused, match=r"HTTP 400: Invalid RSQL filter"):
        make().computers_page(page=0, filter="general.name=")

    assert inventory.call_count == 1
    assert sleeps == []


def test_the_retryable_errors_are_written_down_in_one_place() -> None:
    assert issubclass(JamfBadResponse, RETRYABLE)
    assert issubclass(JamfServerBusy, RETRYABLE)
    assert issubclass(httpx.ConnectError, RETRYABLE)
    for final in (JamfAuthError, JamfPermissionError, JamfUnavailable, JamfRequestRefused):
        assert not issubclass(final, RETRYABLE)


# -- paging, versions, single records -----------------------------------------------


def test_paging_parameters_are_sent_exactly(
    router: respx.Router, make: Callable[..., JamfClient]
) -> None:
    oauth_tokens(router)
    inventory = router.get(V1).mock(return_value=page(1, total=1201))

    result = make().computers_page(
        page=2, page_size=600, filter="general.reportDate>=2026-11-26T00:00:00Z"
    )

    assert result.page == 2
    assert result.total_count == 1201
    assert inventory.calls.last.request.url.params.multi_items() == [
        ("page", "2"),
        ("page-size", "600"),
        *[("section", s) for s in DEFAULT_SECTIONS],
        ("sort", "id:asc"),
        ("filter", "general.reportDate>=2026-11-26T00:00:00Z"),
    ]


def test_mobile_devices_are_paged_from_the_v2_detail_endpoint(
    router: respx.Router, make: Callable[..., JamfClient]
) -> None:
    oauth_tokens(router)
    body = {"totalCount": 1, "results": [{"mobileDeviceId": "9"}]}
    mobile = router.get("/api/v2/mobile-devices/detail").mock(
        return_value=httpx.Response(200, json=body)
    )

    result = make().mobile_devices_page(page=0, page_size=100)

    assert result.results == [{"mobileDeviceId": "9"}]
    params = mobile.calls.last.request.url.params
    assert params["sort"] == "mobileDeviceId:asc"
    assert params.get_list("section") == ["GENERAL", "HARDWARE", "USER_AND_LOCATION"]
    assert "filter" not in params


@pytest.mark.parametrize("size", [0, -1, 2001])
def test_page_size_out_of_bounds_is_refused(make: Callable[..., JamfClient], size: int) -> None:
    with pytest.raises(JamfConfigError, match="between 1 and 2000"):
        make().computers_page(page=0, page_size=size)


@pytest.mark.parametrize("size", [1, 2000])
def test_page_size_bounds_are_accepted(
    router: respx.Router, make: Callable[..., JamfClient], size: int
) -> None:
    oauth_tokens(router)
    inventory = router.get(V1).mock(return_value=page(1))

    make().computers_page(page=0, page_size=size)

    assert inventory.calls.last.request.url.params["page-size"] == str(size)


def test_version_probe_picks_v2_when_v4_and_v3_are_missing_and_remembers_it(
    router: respx.Router, make: Callable[..., JamfClient]
) -> None:
    oauth_tokens(router)
    v4 = router.get("/api/v4/computers-inventory").mock(return_value=httpx.Response(404))
    v3 = router.get("/api/v3/computers-inventory").mock(return_value=httpx.Response(404))
    v2 = router.get("/api/v2/computers-inventory").mock(return_value=page(1))
    v1 = router.get(V1).mock(return_value=page(1))
    jamf = make(api_version=None)

    jamf.computers_page(page=0)
    jamf.computers_page(page=1)

    assert jamf.api_version == 2
    assert (v4.call_count, v3.call_count) == (1, 1)
    assert v2.call_count == 3  # the probe (page-size 1), then the two pages
    assert v2.calls[0].request.url.params["page-size"] == "1"
    assert v1.call_count == 0


def test_version_probe_asks_v4_first_and_stops_there(
    router: respx.Router, make: Callable[..., JamfClient]
) -> None:
    oauth_tokens(router)
    inventory = router.get(path__regex=r"^/api/v\d/computers-inventory$").mock(return_value=page(1))
    jamf = make(api_version=None)

    assert jamf.api_version == 4
    jamf.computers_page(page=0)

    assert [c.request.url.path for c in inventory.calls] == ["/api/v4/computers-inventory"] * 2


def test_the_probe_goes_newest_first_and_each_version_is_asked_once(
    router: respx.Router, make: Callable[..., JamfClient]
) -> None:
    oauth_tokens(router)
    inventory = router.get(path__regex=r"^/api/v\d/computers-inventory$").mock(
        side_effect=[httpx.Response(404)] * 3 + [page(1)]
    )

    assert make(api_version=None).api_version == 1
    assert [c.request.url.path for c in inventory.calls] == [
        f"/api/v{v}/computers-inventory" for v in (4, 3, 2, 1)
    ]


def test_a_server_without_computers_inventory_is_not_found(
    router: respx.Router, make: Callable[..., JamfClient]
) -> None:
    oauth_tokens(router)
    router.get(path__regex=r"/api/v\d/computers-inventory").mock(return_value=httpx.Response(404))

    with pytest.raises(JamfNotFound, match=r"tried v4, v3, v2 and v1"):
        make(api_version=None).computers_page(page=0)


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_every_configured_version_is_used_as_is_without_a_probe(
    router: respx.Router, make: Callable[..., JamfClient], version: int
) -> None:
    oauth_tokens(router)
    inventory = router.get(path__regex=r"^/api/v\d/computers-inventory$").mock(return_value=page(1))
    detail = router.get(path__regex=r"^/api/v\d/computers-inventory-detail/7$").mock(
        return_value=httpx.Response(200, json={"id": "7"})
    )
    jamf = make(api_version=version)

    jamf.computers_page(page=0)
    jamf.computer("7")

    assert [c.request.url.path for c in inventory.calls] == [f"/api/v{version}/computers-inventory"]
    assert detail.calls.last.request.url.path == f"/api/v{version}/computers-inventory-detail/7"


@pytest.mark.parametrize("version", [0, 5, -1])
def test_an_unknown_version_is_refused_naming_the_choices(version: int) -> None:
    with pytest.raises(
        JamfConfigError, match=rf"^unknown Jamf API version {version}: use 1, 2, 3 or 4$"
    ):
        JamfClient(BASE, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, api_version=version)


def test_a_computer_is_read_from_the_detail_route_with_the_clients_sections(
    router: respx.Router, make: Callable[..., JamfClient]
) -> None:
    oauth_tokens(router)
    detail = "/api/v4/computers-inventory-detail"
    router.get(f"{detail}/41").mock(return_value=httpx.Response(404))
    found = router.get(f"{detail}/42").mock(
        return_value=httpx.Response(200, json={"id": "42", "hardware": {"serialNumber": "C1"}})
    )
    jamf = make(api_version=4)

    assert jamf.computer("41") is None
    assert jamf.computer("42") == {"id": "42", "hardware": {"serialNumber": "C1"}}
    assert found.calls.last.request.url.params.get_list("section") == list(DEFAULT_SECTIONS)
    jamf.computer("42", sections=("GENERAL", "SECURITY"))
    assert found.calls.last.request.url.params.get_list("section") == ["GENERAL", "SECURITY"]


def test_a_mobile_device_is_read_from_its_detail_route_with_the_clients_sections(
    router: respx.Router, make: Callable[..., JamfClient]
) -> None:
    oauth_tokens(router)
    found = router.get("/api/v2/mobile-devices/9/detail").mock(
        return_value=httpx.Response(200, json={"id": "9", "serialNumber": "DMQ1"})
    )

    assert make().mobile_device("9") == {"id": "9", "serialNumber": "DMQ1"}
    assert found.calls.last.request.url.params.get_list("section") == list(MOBILE_SECTIONS)


# -- configuration and secrets ------------------------------------------------------


@pytest.mark.parametrize(
    ("credentials", "message"),
    [
        ({}, "no Jamf credentials"),
        (
            {"client_id": "a", "client_secret": "b", "username": "c", "password": "d"},
            "not both",
        ),
        ({"client_id": "a"}, "client secret is missing"),
        ({"client_secret": "b"}, "client id is missing"),
        ({"username": "c", "password": "  "}, "password is missing"),
        ({"password": "d"}, "username is missing"),
    ],
)
def test_exactly_one_credential_pair_is_required(credentials: dict[str, Any], message: str) -> None:
    with pytest.raises(JamfConfigError, match=message):
        JamfClient(BASE, **credentials)


def test_the_settings_accept_exactly_the_clients_api_versions() -> None:
    assert tuple(sorted(API_VERSIONS)) == JAMF_API_VERSIONS
    assert load_settings(jamf_api_version=4).jamf_api_version == 4
    assert load_settings().jamf_api_version is None  # probed


@pytest.mark.parametrize("value", [0, 5, "9"])
def test_a_bad_api_version_setting_is_one_clear_line(value: object) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(jamf_api_version=value)
    assert str(caught.value) == (
        f"invalid setting jamf_api_version: use 1, 2, 3 or 4, or leave it unset to probe, "
        f"not {int(str(value))}"
    )


def test_secrets_and_tokens_never_reach_the_log(
    router: respx.Router,
    make: Callable[..., JamfClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    oauth_tokens(router)
    router.get(V1).mock(
        side_effect=[
            httpx.Response(503),
            httpx.ConnectError("refused"),
            httpx.Response(401),
            page(1),
            httpx.Response(401),
            httpx.Response(401),
        ]
    )
    jamf = make()

    jamf.computers_page(page=0)
    with pytest.raises(JamfAuthError) as caught:
        jamf.computers_page(page=1)

    assert "retrying in" in caplog.text  # the retries were logged...
    shown = caplog.text + str(caught.value) + repr(jamf)
    for secret in (CLIENT_SECRET, "token-1", "token-2", "token-3"):
        assert secret not in shown  # ...without a secret or token in them
