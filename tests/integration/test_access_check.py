"""``GET /v1/access/check`` over a real socket, on both databases: the proxies' verdict
on a forwarded device certificate, from memory, revoked on the very next check when any
process (here the CLI, a process of its own) unenrolls or removes the device."""

from __future__ import annotations

import datetime
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ceremony.device_ca import DeviceCA, DeviceExtensions
from ceremony.gate import AccessGate, gate_for
from ceremony.service import create_app
from inventory.db import Database
from inventory.domain import (
    AttestationType,
    CollectedData,
    Credential,
    OSType,
    Role,
    TrustLevel,
)
from inventory.preference import DeviceTrust, DeviceTrustMode
from inventory.services import devices, enrollment, preference, tokens, users
from inventory.settings import Settings
from tests.ceremony import serving
from tests.processes import DEVTRUST

NOW = datetime.datetime.now(datetime.UTC)


@dataclass
class Site:
    db: Database
    url: str
    db_url: str
    ca: DeviceCA
    gate: AccessGate

    def enrolled(self, tag: str, user: str = "alice") -> DeviceExtensions:
        """A Linux device registered, enrolled by ``user`` with a software key."""
        if not any(u.name == user for u in users.list_users(self.db.uow())):
            users.add_user(self.db.uow(), user, (Role.ACCESS,), actor="admin")
        device = devices.register_device(
            self.db.uow(), os_type=OSType.LINUX, asset_tag=tag, actor="admin"
        )
        token = tokens.create_token(self.db.uow(), tag, actor="admin").token
        credential = Credential(uuid.uuid4().hex, b"key", None, AttestationType.NONE)
        collected = CollectedData(serial_number=tag, os_type=OSType.LINUX, os_login_user=user)
        enrollment.enroll_device(
            self.db.uow(), token=token, credential=credential, collected=collected, user=user
        )
        return DeviceExtensions(device.id, tag, credential.id)

    def cert(
        self,
        device: DeviceExtensions,
        user: str = "alice",
        ca: DeviceCA | None = None,
        ttl: datetime.timedelta = datetime.timedelta(hours=1),
        now: datetime.datetime | None = None,
    ) -> str:
        """The PEM of a device certificate, as ``devtrust device login`` gets one."""
        key = ec.generate_private_key(ec.SECP256R1())
        issued = (ca or self.ca).issue(
            user=user, public_key=key.public_key(), device=device, ttl=ttl, now=now or NOW
        )
        return issued.public_bytes(serialization.Encoding.PEM).decode()

    def check(self, pem: str | None = None, **headers: str) -> httpx.Response:
        sent = dict(headers)
        if pem is not None:
            sent["X-SSL-Client-Cert"] = quote(pem)  # nginx's $ssl_client_escaped_cert
        return httpx.get(f"{self.url}/v1/access/check", headers=sent, timeout=10)

    def mode(self, mode: str, **fields: object) -> None:
        trust = DeviceTrust(mode=DeviceTrustMode(mode), **fields)  # type: ignore[arg-type]
        preference.update_preference(self.db.uow(), trust, actor="admin")

    def cli(self, *argv: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DEVTRUST_")}
        env["DEVTRUST_DATABASE_URL"] = self.db_url
        return subprocess.run([DEVTRUST, *argv], env=env, capture_output=True, text=True,
                              timeout=60, check=False)  # fmt: skip


@pytest.fixture
def site(db: Database, db_url: str, tmp_path: Path) -> Iterator[Site]:
    ca = DeviceCA.load_or_create(tmp_path / "ca", now=NOW - datetime.timedelta(days=1))
    gate = gate_for(db, db_url, ca.cert, trusted_proxies=["127.0.0.0/8"], proxy_secret="s3cret")
    app = create_app(Settings(), {}, access=gate)
    try:
        with serving(app) as url:
            site = Site(db, url, db_url, ca, gate)
            site.mode("required")
            yield site
    finally:
        gate.close()


def test_a_trusted_device_passes_from_memory_and_is_refused_at_once_when_unenrolled(
    site: Site,
) -> None:
    device = site.enrolled("LNX-ACCESS-1")
    pem = site.cert(device)
    first = site.check(pem)
    assert first.status_code == 200, first.text
    assert first.headers["X-Devtrust-User"] == "alice"
    assert first.headers["X-Devtrust-Device-Id"] == device.device_id
    assert first.headers["X-Devtrust-Asset-Tag"] == "LNX-ACCESS-1"
    assert first.headers["X-Devtrust-Trust-Level"] == TrustLevel.SOFTWARE_KEY.value
    reads = site.gate.state.misses
    for _ in range(20):
        assert site.check(pem).status_code == 200
    assert site.gate.state.misses == reads  # no database read in the common case

    unenrolled = site.cli("devices", "unenroll", "LNX-ACCESS-1")
    assert unenrolled.returncode == 0, unenrolled.stderr
    refused = site.check(pem)  # the very next request
    assert refused.status_code == 403
    assert refused.json() == {"error": "device LNX-ACCESS-1 is not enrolled (it was unenrolled)"}
    assert refused.headers["X-Devtrust-Reason"] == refused.json()["error"]


def test_a_removed_or_re_enrolled_device_and_an_expired_certificate_are_refused(
    site: Site,
) -> None:
    gone = site.enrolled("LNX-ACCESS-2")
    pem = site.cert(gone)
    assert site.check(pem).status_code == 200
    removed = site.cli("devices", "rm", "LNX-ACCESS-2")
    assert removed.returncode == 0, removed.stderr
    assert site.check(pem).json() == {"error": "device LNX-ACCESS-2 was removed from the inventory"}
    stranger = DeviceExtensions(str(uuid.uuid4()), "LNX-NEVER", "cred")
    assert site.check(site.cert(stranger)).json() == {
        "error": "device LNX-NEVER is unknown to the inventory"
    }

    again = site.enrolled("LNX-ACCESS-3")
    old = site.cert(again)
    assert site.check(old).status_code == 200
    devices.unenroll_device(site.db.uow(), "LNX-ACCESS-3", actor="admin")
    token = tokens.create_token(site.db.uow(), "LNX-ACCESS-3", actor="admin").token
    credential = Credential(uuid.uuid4().hex, b"key2", None, AttestationType.NONE)
    collected = CollectedData(serial_number="LNX-ACCESS-3", os_type=OSType.LINUX,
                              os_login_user="alice")  # fmt: skip
    enrollment.enroll_device(site.db.uow(), token=token, credential=credential,
                             collected=collected, user="alice")  # fmt: skip
    assert site.check(old).json()["error"] == (
        "device LNX-ACCESS-3 was enrolled again since this certificate was issued: run "
        "`devtrust device login` again"
    )
    fresh = DeviceExtensions(again.device_id, "LNX-ACCESS-3", credential.id)
    assert site.check(site.cert(fresh)).status_code == 200

    expired = site.cert(fresh, ttl=datetime.timedelta(minutes=5),
                        now=NOW - datetime.timedelta(hours=2))  # fmt: skip
    answer = site.check(expired)
    assert answer.status_code == 403
    assert answer.json()["error"].startswith("the device certificate expired at ")


def test_no_unverifiable_or_untrusted_certificate_gets_401_and_the_mode_applies(
    site: Site, tmp_path: Path
) -> None:
    device = site.enrolled("LNX-ACCESS-4")
    pem = site.cert(device)
    assert site.check().status_code == 401
    assert "no device certificate was presented" in site.check().json()["error"]
    other = DeviceCA.load_or_create(tmp_path / "other", now=NOW - datetime.timedelta(days=1))
    forged = site.cert(device, ca=other)  # the same extensions, another CA
    assert site.check(forged).json() == {
        "error": "the client certificate was not issued by this devtrust's device CA"
    }
    garbage = site.check(None, **{"X-SSL-Client-Cert": "not%20a%20cert"})
    assert garbage.status_code == 401
    assert "cannot be read" in garbage.json()["error"]

    # The certificate of a device below the cluster's minimum trust level.
    site.mode("required", min_attestation=TrustLevel.TPM_EKCERT)
    low = site.check(pem)
    assert low.status_code == 403
    assert low.json()["error"] == (
        "device LNX-ACCESS-4's trust level software_key is below the cluster's minimum tpm_ekcert"
    )
    # optional: everyone passes; only a trusted device is named.
    site.mode("optional", min_attestation=TrustLevel.TPM_EKCERT)
    passed = site.check(pem)
    assert passed.status_code == 200 and "X-Devtrust-Device-Id" not in passed.headers
    assert site.check().status_code == 200

    # required-for-humans: a bot passes with its forwarded credential, a human does not.
    site.mode("required-for-humans")
    _, bot = users.add_user(site.db.uow(), "ci-bot", (Role.BOT,), actor="admin")
    _, human = users.add_user(site.db.uow(), "hugo", (Role.ACCESS,), actor="admin")
    as_bot = site.check(None, Authorization=f"Bearer {bot}")
    assert as_bot.status_code == 200 and as_bot.headers["X-Devtrust-User"] == "ci-bot"
    assert site.check(None, Authorization=f"Bearer {human}").status_code == 401
    for n in range(30):  # made-up credentials are refused, and never kept in memory
        assert site.check(None, Authorization=f"Bearer made-up-{n}").status_code == 401
    assert len(site.gate.state._memory.get("bearers", {})) == 2  # ci-bot and hugo
    assert site.check(pem).status_code == 200


def test_every_proxys_header_and_only_trusted_proxies(site: Site, db: Database) -> None:
    device = site.enrolled("LNX-ACCESS-5")
    pem = site.cert(device)
    der_b64 = "".join(pem.strip().splitlines()[1:-1])
    traefik = {"X-Forwarded-Tls-Client-Cert": quote(der_b64)}
    xfcc = f'By=spiffe://app;Hash=abc;Cert="{quote(pem)}";Subject="CN=alice"'
    envoy = {"X-Forwarded-Client-Cert": xfcc}
    # The nginx gate reads X-SSL-Client-Cert alone: what the proxy passes on unchanged
    # from the client (the other proxies' headers) is never believed.
    for forged in (traefik, envoy):
        assert site.check(None, **forged).status_code == 401
    ca = site.ca
    for header, sent in (("x-forwarded-tls-client-cert", traefik),
                         ("x-forwarded-client-cert", envoy)):  # fmt: skip
        gate = gate_for(db, site.db_url, ca.cert, trusted_proxies=["127.0.0.0/8"],
                        proxy_secret=None, certificate_header=header)  # fmt: skip
        try:
            with serving(create_app(Settings(), {}, access=gate)) as other:
                url = f"{other}/v1/access/check"
                answer = httpx.post(f"{url}/orders/42", headers=sent)  # ext_authz's form
                assert answer.status_code == 200, answer.text
                assert answer.headers["X-Devtrust-Asset-Tag"] == "LNX-ACCESS-5"
                nginx_style = {"X-SSL-Client-Cert": quote(pem)}
                assert httpx.get(url, headers=nginx_style).status_code == 401
        finally:
            gate.close()

    # A gate that believes only 10.0.0.0/8: this test's loopback client is not a proxy.
    strict = gate_for(db, site.db_url, ca.cert, trusted_proxies=["10.0.0.0/8"],
                      proxy_secret="s3cret")  # fmt: skip
    try:
        with serving(create_app(Settings(), {}, access=strict)) as other:
            sent = {"X-SSL-Client-Cert": quote(pem)}
            refused = httpx.get(f"{other}/v1/access/check", headers=sent)
            assert refused.status_code == 401
            assert "127.0.0.1, which is not a trusted proxy" in refused.json()["error"]
            wrong = httpx.get(f"{other}/v1/access/check",
                              headers={**sent, "X-Devtrust-Proxy-Secret": "guess"})  # fmt: skip
            assert wrong.json() == {"error": "the proxy secret (X-Devtrust-Proxy-Secret) is wrong"}
            right = httpx.get(f"{other}/v1/access/check",
                              headers={**sent, "X-Devtrust-Proxy-Secret": "s3cret"})  # fmt: skip
            assert right.status_code == 200
    finally:
        strict.close()


def test_a_device_asking_devtrust_itself_over_mutual_tls_is_judged_by_its_handshake(
    site: Site, db: Database, tmp_path: Path
) -> None:
    """No proxy: `devtrust serve --tls-client-ca <device CA>`, and a device presenting its
    certificate in the handshake (which proves its key). Believed from any address (the
    gate here trusts no proxy), revoked at once like a forwarded one; without it, 401."""
    import ssl

    from ceremony.tls import ServerTLS, self_signed_pair

    device = site.enrolled("LNX-MTLS-1")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = site.ca.issue(user="alice", public_key=key.public_key(), device=device,
                         ttl=datetime.timedelta(hours=1), now=NOW)  # fmt: skip
    cert_file, key_file = tmp_path / "device.pem", tmp_path / "device.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pkcs8 = serialization.PrivateFormat.PKCS8
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption())
    )
    ca_file = tmp_path / "device-ca.pem"
    ca_file.write_bytes(site.ca.cert.public_bytes(serialization.Encoding.PEM))
    pair = self_signed_pair(tmp_path / "tls", "127.0.0.1")
    tls = ServerTLS(pair.cert_file, pair.key_file, client_ca_file=ca_file).uvicorn_options()
    no_proxy = gate_for(db, site.db_url, site.ca.cert, trusted_proxies=[], proxy_secret=None)

    def client(with_cert: bool) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(pair.cert_file))
        if with_cert:
            context.load_cert_chain(str(cert_file), str(key_file))
        return httpx.Client(verify=context, timeout=10)

    try:
        with serving(create_app(Settings(), {}, access=no_proxy), **tls) as url:
            check = f"{url}/v1/access/check"
            with client(with_cert=True) as mac:
                passed = mac.get(check)
                assert passed.status_code == 200, passed.text
                assert passed.headers["X-Devtrust-User"] == "alice"
                assert passed.headers["X-Devtrust-Asset-Tag"] == "LNX-MTLS-1"
                # A header from this client is a forwarded one: not believed (no proxy).
                forged = mac.get(check, headers={"X-SSL-Client-Cert": quote(site.cert(device))})
                assert forged.status_code == 401
                assert "not a trusted proxy" in forged.json()["error"]
                assert site.cli("devices", "unenroll", "LNX-MTLS-1").returncode == 0
                refused = mac.get(check)  # the same connection, the very next request
                assert refused.status_code == 403
                assert refused.json() == {
                    "error": "device LNX-MTLS-1 is not enrolled (it was unenrolled)"
                }
            with client(with_cert=False) as bare:
                assert bare.get(check).status_code == 401
    finally:
        no_proxy.close()
