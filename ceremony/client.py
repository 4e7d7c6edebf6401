"""JSON over HTTPS to ``devtrust serve``, as the user whose credential it holds.

The device agent (``ceremony.agent.enroll.CeremonyClient``) and the admin CLI in its
remote mode (``worker.cli._remote``) both speak through :class:`ApiClient`: it verifies
the service's certificate (``DEVTRUST_API_CA_FILE`` for a private CA), never sends the
credential over plain http to another machine, and turns every failure into a
:class:`~ceremony.agent.errors.ServiceError` carrying the one line its user sees: the
service's own ``{"error": ...}`` when it answered, else what could not be done.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from ceremony.agent.errors import ServiceError
from ceremony.tls import client_context, verification_failure


def cleartext_refusal(api_url: str) -> str | None:
    """Why ``api_url`` may not carry a credential, or None: https anywhere, http to a
    loopback address only."""
    parts = urlsplit(api_url)
    if parts.scheme == "https":
        return None
    if parts.scheme != "http" or not parts.hostname:
        return f"DEVTRUST_API_URL must be an https:// (or a local http://) URL, not {api_url!r}"
    host = parts.hostname
    if host == "localhost":
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass
    return (
        f"refusing to send your credential in clear to {api_url}: use https:// in "
        "DEVTRUST_API_URL (plain http is for a service on this machine only)"
    )


class ApiClient:
    """One connection pool to the service, the credential on every request."""

    def __init__(
        self,
        api_url: str,
        user_token: str,
        *,
        timeout: float = 30.0,
        ca_file: Path | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``ca_file`` (DEVTRUST_API_CA_FILE): the PEM bundle of the CAs an https service's
        certificate is verified with; the system's trust store when None. Plain http is
        for a service on this machine only: the credential must not cross a network in
        clear."""
        self.api_url = api_url.rstrip("/")
        refusal = cleartext_refusal(self.api_url)
        if refusal is not None:
            raise ServiceError(refusal)
        self.ca_file = ca_file
        self._http = httpx.Client(
            base_url=self.api_url,
            headers={"Authorization": f"Bearer {user_token}"},
            timeout=timeout,
            verify=client_context(ca_file),
            transport=transport,
        )

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, str | int | bool] | None = None,
    ) -> dict[str, Any]:
        """The service's JSON answer to ``method path`` (``body`` sent as JSON unless
        None); a ServiceError with its status when it refused."""
        query = {k: ("true" if v is True else "false" if v is False else v)
                 for k, v in (params or {}).items()}  # fmt: skip
        try:
            response = self._http.request(method, path, json=body, params=query or None)
        except httpx.TransportError as exc:
            failure = verification_failure(exc, self.ca_file)
            if failure is not None:
                raise ServiceError(
                    f"cannot verify the devtrust service at {self.api_url}: {failure}"
                ) from None
            raise ServiceError(
                f"cannot reach the devtrust service at {self.api_url}: {exc} "
                "(is DEVTRUST_API_URL right?)"
            ) from None
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.is_success and isinstance(payload, dict):
            return payload
        if isinstance(payload, dict) and isinstance(payload.get("error"), str):
            raise ServiceError(payload["error"], response.status_code)
        raise ServiceError(
            f"the devtrust service answered {response.status_code} "
            f"{response.reason_phrase} to {path}",
            response.status_code,
        )
