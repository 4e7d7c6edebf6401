"""The device agent's client side: what a person sees when the request cannot be made."""

from __future__ import annotations

import httpx
import pytest
import respx

from ceremony.agent.enroll import CeremonyClient, self_token
from ceremony.agent.errors import ServiceError
from ceremony.client import cleartext_refusal
from inventory.domain import CollectedData, OSType

URL = "https://devtrust.test:8800"
DEVICE = CollectedData(serial_number="LNX-1", os_type=OSType.LINUX)


def test_collected_data_the_service_would_refuse_is_refused_before_sending() -> None:
    long_version = CollectedData("LNX-1", OSType.LINUX, os_version="1." * 40)
    with respx.mock(assert_all_called=False) as mock, CeremonyClient(URL, "cred") as client:
        route = mock.post(f"{URL}/v1/enroll/self-token")
        with pytest.raises(ServiceError, match=r"^this device's collected data cannot be sent: "
                           r"os_version: String should have at most 64 characters$"):  # fmt: skip
            self_token(client, long_version)
        assert not route.called


@respx.mock
def test_a_refusal_carries_the_services_message_and_status() -> None:
    respx.post(f"{URL}/v1/enroll/self-token").mock(
        return_value=httpx.Response(403, json={"error": "requires the editor role"})
    )
    with CeremonyClient(URL, "cred") as client, pytest.raises(ServiceError) as refused:
        self_token(client, DEVICE)
    assert (str(refused.value), refused.value.status) == ("requires the editor role", 403)


@respx.mock
def test_an_answer_that_is_not_the_services_says_so() -> None:
    respx.post(f"{URL}/v1/enroll/self-token").mock(
        return_value=httpx.Response(502, text="<html>bad gateway</html>")
    )
    with CeremonyClient(URL, "cred") as client, pytest.raises(ServiceError) as refused:
        self_token(client, DEVICE)
    assert str(refused.value) == (
        "the devtrust service answered 502 Bad Gateway to /v1/enroll/self-token"
    )


@respx.mock
def test_an_unreachable_service_names_the_url_and_the_setting() -> None:
    respx.post(f"{URL}/v1/enroll/self-token").mock(side_effect=httpx.ConnectError("refused"))
    with CeremonyClient(URL, "cred") as client, pytest.raises(ServiceError) as refused:
        self_token(client, DEVICE)
    assert str(refused.value) == (
        f"cannot reach the devtrust service at {URL}: refused (is DEVTRUST_API_URL right?)"
    )
    assert refused.value.status is None


@pytest.mark.parametrize(
    "url",
    ["https://devtrust.example.com", "http://127.0.0.1:8800", "http://[::1]:8800",
     "http://localhost:8800", "http://127.0.0.2"],
)  # fmt: skip
def test_https_anywhere_and_plain_http_only_on_this_machine(url: str) -> None:
    assert cleartext_refusal(url) is None


def test_a_credential_is_never_sent_in_clear_across_a_network() -> None:
    with pytest.raises(ServiceError) as refused:
        CeremonyClient("http://devtrust.example.com:8800", "secret-credential")
    assert str(refused.value) == (
        "refusing to send your credential in clear to http://devtrust.example.com:8800: use "
        "https:// in DEVTRUST_API_URL (plain http is for a service on this machine only)"
    )
    assert cleartext_refusal("ftp://x") == (
        "DEVTRUST_API_URL must be an https:// (or a local http://) URL, not 'ftp://x'"
    )
