"""A synchronous Jamf Pro API client for the sync engine's worker threads.

One ``JamfClient`` is shared by the threads of a sync: its connection pool is capped
(Jamf recommends at most 5 concurrent connections), its bearer token is shared and
renewed under a lock, and a rate-limit pause announced by the server holds back every
thread, not just the one that was told.

Each request is retried with exponential backoff and full jitter, bounded in attempts
and total time, on what a retry can fix: timeouts, refused or dropped connections, 429,
5xx, and a 200 that is not the JSON it should be (Jamf Cloud's HTML timeout page, a
cut-off body). Anything else is raised at once as one of ``jamf.errors``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import httpx
from tenacity import RetryCallState, RetryError, Retrying, retry_if_exception_type
from tenacity.wait import wait_random_exponential

from jamf.auth import TokenRefused, authenticator_for, read_json
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
    describe_failure,
    reset_seconds,
)

log = logging.getLogger("devtrust.jamf")

DEFAULT_SECTIONS = (
    "GENERAL",
    "HARDWARE",
    "OPERATING_SYSTEM",
    "USER_AND_LOCATION",
    "LOCAL_USER_ACCOUNTS",
    # Posture: FileVault, SIP, Gatekeeper, firewall, secure boot, activation lock.
    "SECURITY",
    "DISK_ENCRYPTION",
)
MOBILE_SECTIONS = ("GENERAL", "HARDWARE", "USER_AND_LOCATION")
MAX_PAGE_SIZE = 2000
# Newest first: Jamf Pro 11.30 added v4 and deprecated v3; v1 is deprecated since 2025.
API_VERSIONS = (4, 3, 2, 1)
MOBILE_DEVICES_PATH = "/api/v2/mobile-devices/detail"
# 408 is a proxy giving up on a slow upstream, the same thing as a 504.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    initial_wait: float = 0.5
    max_wait: float = 30.0
    total_timeout: float = 300.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise JamfConfigError("Jamf retry attempts must be at least 1")
        if self.initial_wait < 0 or self.max_wait < 0:
            raise JamfConfigError("Jamf retry waits must not be negative")
        if self.total_timeout <= 0:
            raise JamfConfigError("the Jamf retry time limit must be positive")


@dataclass(frozen=True)
class InventoryPage:
    page: int
    total_count: int
    results: list[dict[str, Any]]


class JamfClient:
    def __init__(
        self,
        base_url: str,
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        username: str | None = None,
        password: str | None = None,
        api_version: int | None = None,  # None: probe v4, v3, v2, v1 on first use
        max_connections: int = 5,
        timeout: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),  # frozen, so one shared default is safe
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        url = base_url.strip().rstrip("/")
        if not url.startswith(("https://", "http://")):
            raise JamfConfigError(f"the Jamf URL must start with https://, got {base_url!r}")
        if api_version is not None and api_version not in API_VERSIONS:
            raise JamfConfigError(f"unknown Jamf API version {api_version}: use {_versions()}")
        if max_connections < 1:
            raise JamfConfigError("the Jamf connection cap must be at least 1")
        if timeout <= 0:
            raise JamfConfigError("the Jamf request timeout must be positive")
        self._clock = clock
        self._sleep = sleep
        # What another process needs to build this client again (see spawn_config).
        rebuildable = transport is None and clock is time.monotonic and sleep is time.sleep
        self._spawn = (
            dict(
                base_url=url, client_id=client_id, client_secret=client_secret,
                username=username, password=password, max_connections=max_connections,
                timeout=timeout, retry=retry,
            )
            if rebuildable
            else None
        )  # fmt: skip
        self._retry = retry
        self._auth = authenticator_for(client_id, client_secret, username, password, self._clock)
        self._api_version = api_version
        self._probe_lock = threading.Lock()
        self._throttle_lock = threading.Lock()
        self._not_before = 0.0  # monotonic time before which no request is sent
        self._closed = False
        self._http = httpx.Client(
            base_url=url,
            transport=transport,
            timeout=timeout,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            headers={"Accept": "application/json", "User-Agent": "devtrust-jamf"},
            # A redirect means a wrong URL (http -> https, a login page): say so, don't follow.
            follow_redirects=False,
        )

    # -- public API -----------------------------------------------------------------

    @property
    def api_version(self) -> int:
        """The computers-inventory version in use; probed (one small request) if not set."""
        if self._api_version is None:
            with self._probe_lock:
                if self._api_version is None:
                    self._api_version = self._probe()
        return self._api_version

    def spawn_config(self) -> dict[str, Any] | None:
        """The keyword arguments that build this client again in a child process, with
        the API version in use once it is known; None when it has a transport, a clock or
        a sleep of its own (a test's), which another process could not have."""
        if self._spawn is None:
            return None
        return self._spawn | {"api_version": self._api_version}

    def computers_page(
        self,
        *,
        page: int,
        page_size: int = 500,
        sections: Sequence[str] = DEFAULT_SECTIONS,
        sort: str = "id:asc",
        filter: str | None = None,
    ) -> InventoryPage:
        path = f"/api/v{self.api_version}/computers-inventory"
        params = _page_params(page, page_size, sections, sort, filter)
        return self._inventory_page(path, params, page, "Read Computers", "API version")

    def computer(
        self, computer_id: str, *, sections: Sequence[str] = DEFAULT_SECTIONS
    ) -> dict[str, Any] | None:
        """One computer, or None when Jamf no longer has it.

        Read from ``computers-inventory-detail/{id}`` of the version in use (v3 and v4
        have no other single-record read), asking for ``sections``: Jamf Pro answers that
        route with every section whatever is asked, the simulator with those asked.
        """
        path = f"/api/v{self.api_version}/computers-inventory-detail/{{id}}"
        return self._record_by_id(path, computer_id, "computer", sections, "Read Computers")

    def mobile_devices_page(
        self,
        *,
        page: int,
        page_size: int = 500,
        sections: Sequence[str] = MOBILE_SECTIONS,
        sort: str = "mobileDeviceId:asc",
        filter: str | None = None,
    ) -> InventoryPage:
        params = _page_params(page, page_size, sections, sort, filter)
        return self._inventory_page(
            MOBILE_DEVICES_PATH, params, page, "Read Mobile Devices", "server version"
        )

    def mobile_device(
        self, device_id: str, *, sections: Sequence[str] = MOBILE_SECTIONS
    ) -> dict[str, Any] | None:
        """One mobile device, or None when Jamf no longer has it.

        The answer is Jamf's detail shape (top-level ``serialNumber``, ``osVersion``,
        ``location``, ``ios``), not the list's; ``jamf.mapping.map_mobile_device`` maps both.
        """
        path = "/api/v2/mobile-devices/{id}/detail"
        return self._record_by_id(path, device_id, "mobile device", sections, "Read Mobile Devices")

    def _inventory_page(
        self, path: str, params: httpx.QueryParams, page: int, privilege: str, check: str
    ) -> InventoryPage:
        result = self._get(path, params, privilege, lambda body: _page(body, path, page))
        if result is None:
            raise JamfNotFound(f"Jamf Pro has no {path}: check the Jamf URL and {check}")
        return result

    def _record_by_id(
        self, template: str, ident: str, what: str, sections: Sequence[str], privilege: str
    ) -> dict[str, Any] | None:
        if not ident.strip():
            raise JamfConfigError(f"a Jamf {what} id is empty")
        path = template.format(id=quote(ident.strip(), ""))
        params = httpx.QueryParams(tuple(("section", s) for s in sections))
        return self._get(path, params, privilege, lambda body: _record(body, path))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._auth.close(self._post)
        finally:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"JamfClient({str(self._http.base_url)!r}, auth={self._auth!r})"

    # -- one request, retried -------------------------------------------------------

    def _get(
        self,
        path: str,
        params: httpx.QueryParams,
        privilege: str,
        parse: Callable[[Any], T],
    ) -> T | None:
        """GET ``path`` and parse it inside the retry loop, so a bad body is retried too.

        Returns None on 404, the only status whose meaning the caller decides.
        """
        start = self._clock()
        policy = self._retry
        backoff = wait_random_exponential(multiplier=policy.initial_wait, max=policy.max_wait)

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            hint = error.retry_after if isinstance(error, JamfServerBusy) else None
            return min(max(backoff(state), hint or 0.0), policy.max_wait)

        def stop(state: RetryCallState) -> bool:
            if state.attempt_number >= policy.attempts:
                return True
            return self._clock() - start + (state.upcoming_sleep or 0.0) > policy.total_timeout

        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            # The failure may come from the token endpoint rather than ``path`` itself.
            where = getattr(error, "path", path)
            log.warning(
                "Jamf GET %s failed (%s%s), attempt %d of %d; retrying in %.1f s",
                path,
                describe_failure(error) if error else "?",
                "" if where == path else f" from {where}",
                state.attempt_number,
                policy.attempts,
                state.upcoming_sleep,
            )

        retrying = Retrying(
            retry=retry_if_exception_type(RETRYABLE),
            wait=wait,
            stop=stop,
            sleep=self._sleep,
            before_sleep=before_sleep,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._attempt(path, params, privilege, parse)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            raise JamfUnavailable(
                "GET",
                path,
                describe_failure(last) if last else "unknown",
                exc.last_attempt.attempt_number,
            ) from last
        raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover

    def _attempt(
        self,
        path: str,
        params: httpx.QueryParams,
        privilege: str,
        parse: Callable[[Any], T],
    ) -> T | None:
        # A 401 usually means the token expired early (a server restart, a clock jump):
        # renew once and go again. A second refusal in a row, whether from the token
        # endpoint or from the API with a brand-new token, means the credentials are bad.
        failures = 0
        while True:
            try:
                token = self._auth.token(self._post)
            except TokenRefused:
                failures += 1
                if failures >= 2:
                    raise JamfAuthError() from None
                log.warning("Jamf refused the %s credentials; trying once more", self._auth.kind)
                continue
            request = self._http.build_request(
                "GET", path, params=params, headers={"Authorization": f"Bearer {token}"}
            )
            response = self._send(request)
            if response.status_code != 401:
                break
            self._auth.reject(token)
            failures += 1
            if failures >= 2:
                raise JamfAuthError()
            log.info("Jamf answered %s with 401; renewing the token", path)
        status = response.status_code
        if status == 403:
            raise JamfPermissionError(privilege)
        if status == 404:
            return None
        if not 200 <= status < 300:
            raise JamfRequestRefused("GET", path, status, _error_detail(response))
        return parse(read_json(response, path))

    def _post(
        self,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
        auth: httpx.BasicAuth | None = None,
    ) -> httpx.Response:
        """For the authenticator: one POST, retryable statuses raised as JamfServerBusy."""
        request = self._http.build_request("POST", path, headers=headers, data=data)
        return self._send(request, auth=auth)

    def _send(self, request: httpx.Request, auth: httpx.BasicAuth | None = None) -> httpx.Response:
        self._wait_for_rate_limit()
        response = self._http.send(request, auth=auth)
        self._note_rate_limit(response)
        if response.status_code in RETRY_STATUSES:
            raise JamfServerBusy.from_response(request.url.path, response)
        return response

    # -- rate limits ----------------------------------------------------------------

    def _wait_for_rate_limit(self) -> None:
        with self._throttle_lock:
            pause = self._not_before - self._clock()
        if pause > 0:
            self._sleep(pause)

    def _note_rate_limit(self, response: httpx.Response) -> None:
        # "remaining: 0" on a successful answer announces a 429 for the next request;
        # waiting out the reset now costs the same and spares a failed attempt.
        if response.headers.get("x-ratelimit-remaining", "").strip() != "0":
            return
        reset = reset_seconds(response)
        if reset is None or reset <= 0:
            return
        with self._throttle_lock:
            until = self._clock() + min(reset, self._retry.max_wait)
            self._not_before = max(self._not_before, until)

    def _probe(self) -> int:
        for version in API_VERSIONS:
            path = f"/api/v{version}/computers-inventory"
            params = _page_params(0, 1, ("GENERAL",), "id:asc", None)
            found = self._get(path, params, "Read Computers", lambda body: True)
            if found:
                log.info("Jamf Pro offers %s; using it", path)
                return version
        tried = ", ".join(f"v{v}" for v in API_VERSIONS[:-1]) + f" and v{API_VERSIONS[-1]}"
        raise JamfNotFound(
            f"Jamf Pro at {self._http.base_url} has no computers-inventory API "
            f"(tried {tried}): check the Jamf URL"
        )


def _versions() -> str:
    """``1, 2, 3 or 4``: the versions a user may configure, oldest first."""
    ordered = sorted(API_VERSIONS)
    return ", ".join(str(v) for v in ordered[:-1]) + f" or {ordered[-1]}"


def _page_params(
    page: int, page_size: int, sections: Sequence[str], sort: str, filter: str | None
) -> httpx.QueryParams:
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise JamfConfigError(
            f"the Jamf page size must be between 1 and {MAX_PAGE_SIZE}, got {page_size}"
        )
    if page < 0:
        raise JamfConfigError(f"Jamf pages are numbered from 0, got {page}")
    params = [("page", str(page)), ("page-size", str(page_size))]
    params += [("section", section) for section in sections]
    if sort:
        params.append(("sort", sort))
    if filter:
        params.append(("filter", filter))
    return httpx.QueryParams(tuple(params))


def _page(body: Any, path: str, page: int) -> InventoryPage:
    # Checked inside the retry loop: a page without its fields is a broken answer, and
    # treating it as "no more devices" would make a full sync delete the rest.
    if not isinstance(body, dict):
        raise JamfBadResponse(path, "the page is not a JSON object")
    results = body.get("results")
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise JamfBadResponse(path, "the page has no 'results' list")
    total = body.get("totalCount")
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        raise JamfBadResponse(path, "the page has no 'totalCount'")
    return InventoryPage(page=page, total_count=total, results=results)


def _record(body: Any, path: str) -> dict[str, Any]:
    if not isinstance(body, dict) or not ("id" in body or "mobileDeviceId" in body):
        raise JamfBadResponse(path, "the record is not a JSON object with an 'id'")
    return body


def _error_detail(response: httpx.Response) -> str:
    """Jamf's own words for a refusal (``errors[0].description``), kept short."""
    if 300 <= response.status_code < 400:
        location = response.headers.get("location")
        return f"redirected to {location}" if location else "redirected"
    try:
        body = response.json()
        first = body["errors"][0]
        detail = str(first.get("description") or first.get("code") or "")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return ""
    return detail[:200]
