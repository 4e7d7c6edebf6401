"""``devtrust device login`` end to end: Jamf simulator, worker and service in subprocesses,
a private Redis, the agent's login path, and swtpm for the TPM device.

A Jamf-synced Mac logs in for the first time: it is auto-enrolled (the check runs on the
worker), enrolled, authenticated, and ends with a certificate carrying the three device
extensions. The refusals the issue names are checked on the same stack.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509

from ceremony.agent.enroll import CeremonyClient
from ceremony.agent.errors import ServiceError
from ceremony.agent.login import LoggedIn, Prover, login
from ceremony.agent.softkey import SoftwareEnclaveKey
from ceremony.device_ca import CERT_FILE, DeviceExtensions, device_extensions
from inventory.db import Database
from inventory.domain import CollectedData, Device, Role
from inventory.preference import DeviceTrust, DeviceTrustMode
from inventory.services import audit, devices, preference, users
from tests.processes import (
    DEVTRUST,
    RedisServer,
    free_port,
    simulator,
    started,
    worker,
)
from tests.tpm import swtpm

pytestmark = pytest.mark.swtpm


@dataclass
class Site:
    url: str
    jamf: str
    env: dict[str, str]
    db: Database
    data_dir: Path

    def admin(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [DEVTRUST, *argv], env=self.env, capture_output=True, text=True, timeout=120,
            check=False,
        )  # fmt: skip

    def user(self, name: str, of: Device | None = None) -> str:
        """A user with the access role; with ``of``, one of that Mac's users (their
        login is its MDM user of record)."""
        logins = (of.profile.os_usernames[0],) if of is not None and of.profile else ()
        return users.add_user(self.db.uow(), name, (Role.ACCESS,), actor="admin", logins=logins)[1]

    def synced_macs(self) -> list[Device]:
        listed = devices.list_devices(self.db.uow(), limit=100).items
        return [d for d in listed if d.profile is not None and d.os_type.value == "macos"]

    def login(self, credential: str, user: str, collected: CollectedData, home: Path) -> LoggedIn:
        prover = Prover(home, key=SoftwareEnclaveKey.load_or_create(home))
        with CeremonyClient(self.url, credential) as client:
            return login(client, user, collected, prover)


def as_collected(device: Device, **changes: str) -> CollectedData:
    """What the Mac itself reports, matching its MDM profile unless changed."""
    profile = device.profile
    assert profile is not None
    fields: dict[str, Any] = {
        "model_identifier": profile.model_identifier,
        "os_version": profile.os_version,
        "os_build": profile.os_build,
        "os_login_user": profile.os_usernames[0] if profile.os_usernames else None,
        "jamf_binary_version": profile.jamf_binary_version,
        **changes,
    }
    return CollectedData(serial_number=device.asset_tag, os_type=device.os_type, **fields)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("site")
    redis_server = RedisServer(tmp)
    redis_server.start()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DEVTRUST_")}
    database_url = f"sqlite:///{tmp / 'devtrust.db'}"
    port = free_port()
    try:
        with simulator(20, "--seed", "7") as jamf:
            env = {
                **clean,
                "DEVTRUST_DATA_DIR": str(tmp / "data"),
                "DEVTRUST_DATABASE_URL": database_url,
                "DEVTRUST_BROKER_URL": f"{redis_server.url}/0",
                "DEVTRUST_RESULT_BACKEND": f"{redis_server.url}/1",
                "DEVTRUST_JAMF_URL": jamf,
                "DEVTRUST_JAMF_CLIENT_ID": "devtrust",
                "DEVTRUST_JAMF_CLIENT_SECRET": "devtrust-secret",
                "DEVTRUST_JAMF_SYNC_START_DELAY": "0",
            }
            db = Database.connect(database_url)
            argv = [DEVTRUST, "serve", "--port", str(port)]
            # The service first, so that it starts while the worker does (both find the
            # database migrated, above).
            with started(argv, env, "serve") as server, worker(env, "login") as checks:
                server.wait_for("Uvicorn running", timeout=30)
                site = Site(f"http://127.0.0.1:{port}", jamf, env, db, tmp / "data")
                synced = site.admin("jamf", "sync", "--full", "--wait")
                assert synced.returncode == 0, synced.stderr
                trust = DeviceTrust(auto_enroll=True)
                preference.update_preference(db.uow(), trust, actor="admin")
                try:
                    yield site
                finally:
                    # No test looks at how the worker stops, and a warm shutdown takes
                    # seconds: it is killed instead.
                    checks.kill()
            db.close()
    finally:
        redis_server.stop()


def test_a_jamf_synced_mac_logs_in_and_ends_trusted_then_a_second_user_is_refused(
    site: Site, tmp_path: Path
) -> None:
    mac = site.synced_macs()[0]
    alice, bob = site.user("alice", of=mac), site.user("bob")

    done = site.login(alice, "alice", as_collected(mac), tmp_path / "alice")
    assert done.enrolled_now
    cert = x509.load_pem_x509_certificate(done.certificate_file.read_bytes())
    enrolled = devices.get_device(site.db.uow(), mac.id)
    assert enrolled.owner == "alice" and enrolled.credential is not None
    assert device_extensions(cert) == DeviceExtensions(
        mac.id, mac.asset_tag, enrolled.credential.id
    )
    assert done.certificate.extensions == ["device-asset-tag", "device-credential-id", "device-id"]
    ca = x509.load_pem_x509_certificate((site.data_dir / "device-ca" / CERT_FILE).read_bytes())
    cert.verify_directly_issued_by(ca)
    assert cert.subject.rfc4514_string() == "CN=alice"

    again = site.login(alice, "alice", as_collected(mac), tmp_path / "alice")
    assert not again.enrolled_now  # enrolled already: authenticated straight away
    events = audit.list_events(site.db.uow(), type=audit.DEVICE_AUTHENTICATE)
    assert [(e.actor, e.success) for e in events][-2:] == [("alice", True), ("alice", True)]

    with pytest.raises(ServiceError, match="^device is already enrolled$"):
        site.login(bob, "bob", as_collected(mac), tmp_path / "bob")


def test_an_updated_os_is_refused_until_the_mdm_syncs_it(site: Site, tmp_path: Path) -> None:
    mac = site.synced_macs()[1]
    carol = site.user("carol", of=mac)
    new = {"version": "99.1", "build": "99A1", "supplementalBuildVersion": None}
    jamf_id = mac.profile.external_id if mac.profile else None
    changed = httpx.patch(f"{site.jamf}/_sim/devices/{jamf_id}", json={"operatingSystem": new})
    assert changed.status_code == 200, changed.text
    updated = as_collected(mac, os_version="99.1", os_build="99A1")

    assert mac.profile is not None
    with pytest.raises(ServiceError) as refused:
        site.login(carol, "carol", updated, tmp_path)
    assert str(refused.value) == (
        "device does not match its MDM profile: os_version differs; os_build differs: the "
        "device changed since the MDM last reported it: wait for the next MDM sync or run "
        "`devtrust jamf sync`"
    )
    diff = site.admin("devices", "diff", mac.asset_tag)
    assert diff.returncode == 1 and "run `devtrust jamf sync`" in diff.stdout

    synced = site.admin("jamf", "sync", "--full", "--wait")
    assert synced.returncode == 0, synced.stderr
    assert site.login(carol, "carol", updated, tmp_path).enrolled_now


def test_an_unregistered_device_and_auto_enrollment_off_are_refused(
    site: Site, tmp_path: Path
) -> None:
    dave = site.user("dave")
    mac = site.synced_macs()[2]
    stranger = as_collected(mac)
    stranger = CollectedData(**{**stranger.__dict__, "serial_number": "C02NOTINJAMF"})
    with pytest.raises(ServiceError, match="is not registered"):
        site.login(dave, "dave", stranger, tmp_path)

    preference.update_preference(site.db.uow(), DeviceTrust(auto_enroll=False), actor="admin")
    try:
        with pytest.raises(ServiceError, match="^auto-enrollment is disabled"):
            site.login(dave, "dave", as_collected(mac), tmp_path)
    finally:
        preference.update_preference(site.db.uow(), DeviceTrust(auto_enroll=True), actor="admin")


def test_a_tpm_device_logs_in_with_a_quote_through_the_cli(site: Site, tmp_path: Path) -> None:
    erin = site.user("erin")
    added = site.admin("devices", "add", "--os", "linux", "--asset-tag", "LNX-LOGIN-1", "--enroll")
    token = added.stdout.split("--token=")[1].split()[0]
    dmi = tmp_path / "dmi"
    dmi.mkdir()
    (dmi / "product_serial").write_text("LNX-LOGIN-1\n")
    with swtpm(tmp_path) as tpm:
        agent = {
            **site.env,
            "DEVTRUST_DATA_DIR": str(tmp_path / "agent"),
            "DEVTRUST_API_URL": site.url,
            "DEVTRUST_TPM_TCTI": tpm.tcti,
            "DEVTRUST_DMI_DIR": str(dmi),
            "DEVTRUST_USER_TOKEN": erin,
        }

        def device(*argv: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [DEVTRUST, "device", *argv], env=agent, capture_output=True, text=True,
                timeout=60, check=False,
            )  # fmt: skip

        assert device("enroll", "--token", token).returncode == 0
        logged_in = device("login", "--user", "erin")
        assert logged_in.returncode == 0, logged_in.stderr
        lines = logged_in.stdout.splitlines()
        assert lines[0] == "Device LNX-LOGIN-1/Linux authenticated as erin"
        assert lines[-1] == "  Extensions:  device-asset-tag, device-credential-id, device-id"
        cert_file = tmp_path / "agent" / "agent" / "erin-device-cert.pem"
        assert lines[1] == f"  Certificate: {cert_file}"
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        extensions = device_extensions(cert)
        assert extensions is not None and extensions.asset_tag == "LNX-LOGIN-1"

        wrong = device("login", "--user", "frank")
        assert wrong.returncode != 0 and "Traceback" not in wrong.stderr
        assert wrong.stderr.strip() == (
            "error: DEVTRUST_USER_TOKEN is the credential of erin, not of frank"
        )
    shown = json.loads(site.admin("devices", "get", "LNX-LOGIN-1", "--format", "json").stdout)
    assert shown["owner"] == "erin"


def test_nginx_lets_a_logged_in_device_through_and_refuses_it_once_unenrolled(
    site: Site, tmp_path: Path
) -> None:
    """The README's nginx configuration in front of an app: auth_request to devtrust,
    devtrust's device CA as the client CA, the certificate from `devtrust device login`."""
    from tests.nginx import running_nginx

    mac = site.synced_macs()[3]
    frank = site.user("frank", of=mac)
    home = tmp_path / "frank"
    done = site.login(frank, "frank", as_collected(mac), home)
    cert, key = done.certificate_file, home / "frank-key.pem"
    assert key.exists(), sorted(home.iterdir())
    device_ca = site.data_dir / "device-ca" / CERT_FILE
    preference.update_preference(
        site.db.uow(), DeviceTrust(mode=DeviceTrustMode.REQUIRED, auto_enroll=True), actor="admin"
    )
    try:
        with running_nginx(tmp_path / "nginx", site.url.removeprefix("http://"), device_ca) as web:
            with httpx.Client(verify=tls(web.server_ca, cert, key)) as device:
                through = device.get(f"{web.url}/orders")
                assert through.status_code == 200, through.text
                assert through.text == f"app: user=frank device={mac.asset_tag}\n"
            with httpx.Client(verify=tls(web.server_ca)) as bare:
                assert bare.get(f"{web.url}/orders").status_code == 401
                # A certificate in a header, without the TLS handshake, is not believed:
                # nginx overwrites the header with what it verified (here: nothing).
                forged = {"X-SSL-Client-Cert": cert.read_text().replace("\n", "%0A")}
                assert bare.get(f"{web.url}/orders", headers=forged).status_code == 401
                # nor in another proxy's header, which nginx passes on as it came.
                body = "".join(cert.read_text().strip().splitlines()[1:-1])
                traefik = {"X-Forwarded-Tls-Client-Cert": body}
                assert bare.get(f"{web.url}/orders", headers=traefik).status_code == 401

            unenrolled = site.admin("devices", "unenroll", mac.asset_tag)
            assert unenrolled.returncode == 0, unenrolled.stderr
            with httpx.Client(verify=tls(web.server_ca, cert, key)) as device:
                assert device.get(f"{web.url}/orders").status_code == 403  # the very next one
    finally:
        preference.update_preference(site.db.uow(), DeviceTrust(auto_enroll=True), actor="admin")


def tls(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """A client's TLS: trusting ``ca``, presenting ``cert`` (with ``key``) when given."""
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key) if key else None)
    return context
