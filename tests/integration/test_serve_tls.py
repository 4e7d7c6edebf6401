"""``devtrust serve`` with TLS, over real sockets: a certificate of the operator's CA, the
self-signed demo pair, the refusal of plain HTTP off loopback, and the clients'
verification of the server (the device agent's client and ``devtrust device login``)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ceremony.agent.enroll import CeremonyClient
from ceremony.agent.errors import ServiceError
from ceremony.tls import client_context, is_loopback, plain_http_note, subject_names
from inventory.errors import ConfigurationError
from tests.processes import DEVTRUST, free_port, started

NOW = datetime.datetime.now(datetime.UTC)
SERVER_NAMES = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]


@dataclass
class Issued:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        cert_file, key_file = directory / f"{name}.pem", directory / f"{name}.key"
        cert_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_file.chmod(0o600)
        return cert_file, key_file


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(minutes=5))
        .not_valid_after(NOW + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(key, cert)


def issue(ca: Issued, common_name: str, *, server: bool) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(minutes=5))
        .not_valid_after(NOW + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(SERVER_NAMES), critical=False)
    return Issued(key, builder.sign(ca.key, hashes.SHA256()))


def clean_env(data_dir: Path, **extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DEVTRUST_")}
    return {**clean, "DEVTRUST_DATA_DIR": str(data_dir), **extra}


def serve_once(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    """``devtrust serve`` run to its end: for the refusals that end it at once."""
    return subprocess.run(
        [DEVTRUST, "serve", *argv], env=env, capture_output=True, text=True, timeout=60, check=False
    )


@dataclass
class Site:
    url: str
    port: int
    ca_file: Path
    client_ca: Issued
    directory: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One server for the module: a certificate of the test's CA, and client certificates
    of another CA asked for (``--tls-client-ca``)."""
    directory = tmp_path_factory.mktemp("tls")
    ca = make_ca("test server CA")
    ca_file, _ = ca.write(directory, "ca")
    cert_file, key_file = issue(ca, "devtrust test", server=True).write(directory, "server")
    client_ca = make_ca("test device CA")
    client_ca_file, _ = client_ca.write(directory, "client-ca")
    port = free_port()
    argv = [DEVTRUST, "serve", "--port", str(port), "--tls-cert", str(cert_file)]
    argv += ["--tls-key", str(key_file), "--tls-client-ca", str(client_ca_file)]
    with started(argv, clean_env(directory / "data"), "serve") as server:
        server.wait_for(r"Uvicorn running on https://", timeout=30)
        yield Site(f"https://127.0.0.1:{port}", port, ca_file, client_ca, directory)


def test_a_client_trusting_the_ca_verifies_the_server(site: Site) -> None:
    with httpx.Client(verify=client_context(site.ca_file)) as client:
        answer = client.get(f"{site.url}/healthz")
    assert answer.status_code == 200 and answer.json()["status"] == "ok"
    # The device agent's own client, as `devtrust device` builds it.
    with CeremonyClient(site.url, "no-credential", ca_file=site.ca_file) as agent:
        assert agent.get("/healthz")["database"] == "ok"
    # By name too: the certificate names localhost.
    with httpx.Client(verify=client_context(site.ca_file)) as client:
        assert client.get(f"https://localhost:{site.port}/healthz").status_code == 200


def test_plain_http_to_the_tls_port_is_not_served(site: Site) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{site.port}/healthz", timeout=5)


def test_a_client_without_the_ca_fails_in_one_line(site: Site, tmp_path: Path) -> None:
    with CeremonyClient(site.url, "no-credential") as agent, pytest.raises(ServiceError) as failed:
        agent.get("/healthz")
    assert str(failed.value) == (
        f"cannot verify the devtrust service at {site.url}: certificate verify failed: "
        "unable to get local issuer certificate (the system's trust store holds no CA that "
        "signed it; set DEVTRUST_API_CA_FILE to the PEM file of the CA that did)"
    )
    # Trusting another CA is no better.
    other, _ = make_ca("another CA").write(tmp_path, "other")
    with CeremonyClient(site.url, "x", ca_file=other) as agent, pytest.raises(ServiceError) as bad:
        agent.get("/healthz")
    assert f"DEVTRUST_API_CA_FILE {other} holds no CA that signed it" in str(bad.value)

    # The CLI: one line, exit 1, no traceback.
    dmi = tmp_path / "dmi"
    dmi.mkdir()
    (dmi / "product_serial").write_text("TLS-TEST-1\n")
    env = clean_env(
        tmp_path / "data",
        DEVTRUST_API_URL=site.url,
        DEVTRUST_USER_TOKEN="no-credential",
        DEVTRUST_DMI_DIR=str(dmi),
        DEVTRUST_API_CA_FILE=str(other),
    )
    result = subprocess.run(
        [DEVTRUST, "device", "login", "--user", "alice"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(
        f"error: cannot verify the devtrust service at {site.url}: certificate verify failed: "
    )
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr

    # An unreadable CA file is one line as well.
    env["DEVTRUST_API_CA_FILE"] = str(tmp_path / "missing.pem")
    result = subprocess.run(
        [DEVTRUST, "device", "login", "--user", "alice"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (
        1,
        f"error: cannot read DEVTRUST_API_CA_FILE {tmp_path / 'missing.pem'}: "
        "No such file or directory\n",
    )


def _handshake(site: Site, client: Issued | None, tmp_path: Path) -> bytes:
    """The status line of /healthz over a connection with ``client``'s certificate;
    b"" when the server ends the connection (under TLS 1.3 the client's handshake is
    over before the server has checked the client's certificate)."""
    context = client_context(site.ca_file)
    if client is not None:
        cert_file, key_file = client.write(tmp_path, "client")
        context.load_cert_chain(cert_file, key_file)
    with (
        socket.create_connection(("127.0.0.1", site.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as conn,
    ):
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answer = b""
        try:
            while chunk := conn.recv(65536):
                answer += chunk
        except (ssl.SSLError, ConnectionResetError):
            return b""
    return answer.partition(b"\r\n")[0]


def test_client_certificates_are_asked_for_not_required(site: Site, tmp_path: Path) -> None:
    device = issue(site.client_ca, "alice", server=False)
    assert _handshake(site, device, tmp_path) == b"HTTP/1.1 200 OK"
    assert _handshake(site, None, tmp_path) == b"HTTP/1.1 200 OK"
    stranger = issue(make_ca("not the device CA"), "mallory", server=False)
    assert _handshake(site, stranger, tmp_path) == b""


def test_a_self_signed_pair_is_made_once_and_reused(tmp_path: Path) -> None:
    port = free_port()
    # 127.0.0.2: a loopback address the certificate must name besides 127.0.0.1.
    argv = [DEVTRUST, "serve", "--host", "127.0.0.2", "--port", str(port)]
    tls_dir = tmp_path / "tls"
    cert_file = tls_dir / "server.pem"
    with started([*argv, "--tls-self-signed"], clean_env(tmp_path), "serve") as server:
        made = server.wait_for(r"^TLS: made a self-signed certificate (\S+) for (.*);")
        assert made.group(1) == str(cert_file)
        assert made.group(2) == "localhost, 127.0.0.1, ::1, 127.0.0.2"
        assert f"DEVTRUST_API_CA_FILE={cert_file}" in made.string
        server.wait_for(r"Uvicorn running on https://127\.0\.0\.2:")
        with CeremonyClient(f"https://127.0.0.2:{port}", "x", ca_file=cert_file) as agent:
            assert agent.get("/healthz")["status"] == "ok"
    first = cert_file.read_bytes()
    assert (tls_dir / "server.key").stat().st_mode & 0o777 == 0o600

    # The setting instead of the flag: the same pair again.
    env = clean_env(tmp_path, DEVTRUST_TLS_SELF_SIGNED="true")
    with started(argv, env, "serve") as server:
        server.wait_for(rf"^TLS: the self-signed certificate {cert_file}; clients trust it")
        server.wait_for(r"Uvicorn running on https://127\.0\.0\.2:")
        with httpx.Client(verify=client_context(cert_file)) as client:
            assert client.get(f"https://127.0.0.2:{port}/healthz").status_code == 200
        assert "made" not in server.output()
    assert cert_file.read_bytes() == first


def test_plain_http_off_loopback_is_refused_in_one_line(tmp_path: Path) -> None:
    result = serve_once(clean_env(tmp_path), "--host", "0.0.0.0", "--port", str(free_port()))  # noqa: S104
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        "error: refusing to serve plain HTTP on 0.0.0.0, which is not a loopback address: "
        "give --tls-cert FILE --tls-key FILE, or --tls-self-signed (or set "
        "DEVTRUST_TLS_TERMINATED_BY_PROXY=true when a proxy in front ends TLS)\n"
    )


def test_plain_http_off_loopback_starts_when_a_proxy_ends_tls(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(tmp_path, DEVTRUST_TLS_TERMINATED_BY_PROXY="true")
    argv = [DEVTRUST, "serve", "--host", "0.0.0.0", "--port", str(port)]  # noqa: S104
    with started(argv, env, "serve") as server:
        server.wait_for(r"^warning: serving plain HTTP on 0\.0\.0\.0: DEVTRUST_TLS_TERMINATED")
        server.wait_for(r"Uvicorn running on http://0\.0\.0\.0:")
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200


def test_unusable_tls_files_are_refused_in_one_line(tmp_path: Path) -> None:
    ca = make_ca("test CA")
    cert_file, key_file = issue(ca, "server", server=True).write(tmp_path, "server")
    _, other_key = issue(ca, "other", server=True).write(tmp_path, "other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not PEM at all\n")
    missing = tmp_path / "missing.pem"
    env = clean_env(tmp_path / "data", DEVTRUST_TLS_CERT_FILE=str(cert_file))
    port = str(free_port())
    cases = [
        # The key of another certificate: the flag over the setting's certificate.
        (["--tls-key", str(other_key)],
         f"the TLS key {other_key} does not match the certificate {cert_file}: "
         "the certificate is another key's"),
        (["--tls-key", str(garbage)], f"the TLS key {garbage} is not a PEM private key"),
        (["--tls-cert", str(missing), "--tls-key", str(key_file)],
         f"cannot read the TLS certificate {missing}: No such file or directory"),
        (["--tls-cert", str(garbage), "--tls-key", str(key_file)],
         f"the TLS certificate {garbage} holds no PEM certificate"),
        (["--tls-cert", str(tmp_path), "--tls-key", str(key_file)],
         f"cannot read the TLS certificate {tmp_path}: Is a directory"),
    ]  # fmt: skip
    for argv, message in cases:
        result = serve_once(env, "--port", port, *argv)
        assert (result.returncode, result.stdout, result.stderr) == (1, "", f"error: {message}\n")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("localhost", True), ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True),
     ("[::1]", True), ("::ffff:127.0.0.1", True), ("0.0.0.0", False), ("::", False),  # noqa: S104
     ("10.0.0.1", False), ("devtrust.example", False), ("localhost.example", False)],
)  # fmt: skip
def test_which_hosts_are_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    if loopback:
        assert plain_http_note(host, terminated_by_proxy=False) is None
    else:
        with pytest.raises(ConfigurationError, match=r"^refusing to serve plain HTTP on "):
            plain_http_note(host, terminated_by_proxy=False)
        assert str(plain_http_note(host, terminated_by_proxy=True)).startswith("warning: ")


def test_the_self_signed_certificate_names_the_host_unless_it_is_a_wildcard() -> None:
    base = ["localhost", "127.0.0.1", "::1"]
    assert [str(n.value) for n in subject_names("0.0.0.0")] == base  # noqa: S104
    assert [str(n.value) for n in subject_names("::")] == base
    assert [str(n.value) for n in subject_names("127.0.0.1")] == base
    assert [str(n.value) for n in subject_names("Devtrust.Example.")] == [*base, "devtrust.example"]
    assert [str(n.value) for n in subject_names("[fd00::1]")] == [*base, "fd00::1"]
