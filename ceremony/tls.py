"""TLS for ``devtrust serve`` and for the clients that talk to it.

The server side: the certificate and key ``--tls-cert``/``--tls-key`` name, checked
before uvicorn sees them, so that a file that cannot be read, does not parse or does not
belong with the other is one line naming it; a self-signed pair made once under
``<data_dir>/tls/`` for demos (``--tls-self-signed``); optionally a CA whose client
certificates the handshake asks for (``--tls-client-ca``; asked, not required); and the
rule that plain HTTP is served on a loopback address only, unless the settings say TLS
ends at a proxy in front.

The client side: the trust store (``DEVTRUST_API_CA_FILE``, a PEM bundle, or the
system's), and a verification failure said in one line.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import stat
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from inventory.errors import ConfigurationError

SELF_SIGNED_DIR = "tls"
CERT_FILE = "server.pem"
KEY_FILE = "server.key"
#: A self-signed demo certificate lasts this long; a later start replaces it when it has
#: less than ``RENEW_BEFORE`` left.
SELF_SIGNED_LIFETIME = datetime.timedelta(days=397)
RENEW_BEFORE = datetime.timedelta(days=7)
CLOCK_SKEW = datetime.timedelta(minutes=5)
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 (the names, not a bind)

TLS_OPTIONS = "--tls-cert FILE --tls-key FILE, or --tls-self-signed"


@dataclass(frozen=True)
class ServerTLS:
    """What uvicorn is given: the files, checked, and the notes for the operator."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    notes: list[str] = field(default_factory=list)

    def uvicorn_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "ssl_certfile": str(self.cert_file),
            "ssl_keyfile": str(self.key_file),
            "ssl_context_factory": _at_least_tls12,
        }
        if self.client_ca_file is not None:
            options["ssl_ca_certs"] = str(self.client_ca_file)
            options["ssl_cert_reqs"] = ssl.CERT_OPTIONAL
        return options


def _at_least_tls12(_config: Any, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    context = default()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


# -- where plain HTTP may be served ---------------------------------------------------


def is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1 (an IPv4-mapped ::ffff:127.x too)."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def plain_http_note(host: str, *, terminated_by_proxy: bool) -> str | None:
    """None on a loopback address, a warning when a proxy in front ends TLS, else the
    refusal (``ConfigurationError``)."""
    if is_loopback(host):
        return None
    if terminated_by_proxy:
        return (
            f"warning: serving plain HTTP on {host}: DEVTRUST_TLS_TERMINATED_BY_PROXY says "
            "TLS ends at a proxy in front; let only that proxy reach this port"
        )
    raise ConfigurationError(
        f"refusing to serve plain HTTP on {host}, which is not a loopback address: give "
        f"{TLS_OPTIONS} (or set DEVTRUST_TLS_TERMINATED_BY_PROXY=true when a proxy in "
        "front ends TLS)"
    )


# -- the server's certificate and key -------------------------------------------------


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {what} {path}: {exc.strerror}") from None


def _certificates(path: Path, what: str) -> list[x509.Certificate]:
    data = _read(path, what)
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        certificates = []
    if not certificates:
        raise ConfigurationError(f"{what} {path} holds no PEM certificate")
    return certificates


def _private_key(path: Path) -> Any:
    data = _read(path, "the TLS key")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigurationError(
            f"the TLS key {path} is encrypted: give it unencrypted (readable by this user only)"
        ) from None
    except UnsupportedAlgorithm:
        raise ConfigurationError(f"the TLS key {path} is of a kind TLS cannot use") from None
    except ValueError:
        raise ConfigurationError(f"the TLS key {path} is not a PEM private key") from None


def load_server_pair(
    cert_file: Path,
    key_file: Path,
    client_ca_file: Path | None = None,
    *,
    now: datetime.datetime | None = None,
) -> ServerTLS:
    """The pair, checked as OpenSSL will load it; ``ConfigurationError`` naming the file
    and what is wrong with it otherwise."""
    chain = _certificates(cert_file, "the TLS certificate")
    key = _private_key(key_file)
    if chain[0].public_key() != key.public_key():
        raise ConfigurationError(
            f"the TLS key {key_file} does not match the certificate {cert_file}: "
            "the certificate is another key's"
        )
    notes = []
    moment = now or datetime.datetime.now(datetime.UTC)
    if chain[0].not_valid_after_utc <= moment:
        expired = f"{chain[0].not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        notes.append(
            f"warning: the TLS certificate {cert_file} expired on {expired}: clients refuse it"
        )
    try:
        mode = key_file.stat().st_mode
    except OSError:  # read a moment ago
        mode = 0
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        notes.append(
            f"warning: the TLS key {key_file} is open to other users "
            f"(mode {stat.S_IMODE(mode):04o}): chmod 600 {key_file}"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigurationError(
            f"the TLS certificate {cert_file} and key {key_file} are refused: {_reason(exc)}"
        ) from None
    if client_ca_file is not None:
        check_client_ca(client_ca_file)
    return ServerTLS(cert_file, key_file, client_ca_file, notes)


def check_client_ca(path: Path) -> None:
    """The CA file ``--tls-client-ca`` names, as OpenSSL will load it."""
    _certificates(path, "the TLS client CA")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigurationError(f"the TLS client CA {path} is refused: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).replace("_", " ").lower()
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__


# -- the self-signed pair, for demos --------------------------------------------------


def subject_names(host: str) -> list[x509.GeneralName]:
    """localhost, 127.0.0.1, ::1, and ``host`` when it names one address or name."""
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    name = host.strip().strip("[]").rstrip(".").lower()
    if name in WILDCARD_HOSTS:
        return names
    entry: x509.GeneralName
    try:
        entry = x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        try:
            name.encode("ascii")
        except UnicodeEncodeError:
            raise ConfigurationError(
                f"--host {host} cannot be named in a certificate: give its ASCII (xn--) form"
            ) from None
        entry = x509.DNSName(name)
    if entry not in names:
        names.append(entry)
    return names


def _name_list(names: list[x509.GeneralName]) -> str:
    return ", ".join(str(n.value) for n in names)


def self_signed_pair(
    directory: Path, host: str, *, now: datetime.datetime | None = None
) -> ServerTLS:
    """The pair in ``directory``, made there on first use (the key mode 0600) and made
    again only when it no longer names ``host`` or is about to expire."""
    moment = now or datetime.datetime.now(datetime.UTC)
    directory = directory.absolute()
    cert_path, key_path = directory / CERT_FILE, directory / KEY_FILE
    names = subject_names(host)
    hint = f"clients trust it with DEVTRUST_API_CA_FILE={cert_path}"
    if cert_path.exists() or key_path.exists():
        existing = load_server_pair(cert_path, key_path, now=moment)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        try:
            covered = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            named = list(covered.value)
        except x509.ExtensionNotFound:
            named = []
        missing = [n for n in names if n not in named]
        expiring = cert.not_valid_after_utc - moment < RENEW_BEFORE
        if not missing and not expiring:
            existing.notes.append(f"TLS: the self-signed certificate {cert_path}; {hint}")
            return existing
        why = f"did not name {_name_list(missing)}" if missing else "was about to expire"
        note = f"TLS: made a new self-signed certificate {cert_path} (the old one {why}); {hint}"
    else:
        note = f"TLS: made a self-signed certificate {cert_path} for {_name_list(names)}; {hint}"
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create {directory} for the self-signed TLS certificate: {exc.strerror}"
        ) from None
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _self_signed(key, names, host, moment)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        _replace(key_path, key_pem, 0o600)
        _replace(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot write the self-signed TLS pair in {directory}: {exc.strerror}"
        ) from None
    made = load_server_pair(cert_path, key_path, now=moment)
    made.notes.append(note)
    return made


def _self_signed(
    key: ec.EllipticCurvePrivateKey,
    names: list[x509.GeneralName],
    host: str,
    now: datetime.datetime,
) -> x509.Certificate:
    label = host if host.strip() not in WILDCARD_HOSTS else "localhost"
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "devtrust"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"devtrust self-signed {label}"[:64]),
    ])  # fmt: skip
    identifier = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + SELF_SIGNED_LIFETIME)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(identifier, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(identifier),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )


def _replace(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` through a new file of ``mode``, renamed over it."""
    temporary = path.with_name(f".{path.name}.new")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(temporary, path)


# -- what ``devtrust serve`` is given --------------------------------------------------


def server_tls(
    host: str,
    *,
    cert_file: Path | None,
    key_file: Path | None,
    self_signed: bool,
    client_ca_file: Path | None,
    terminated_by_proxy: bool,
    data_dir: Path,
) -> tuple[ServerTLS | None, list[str]]:
    """The TLS ``devtrust serve`` runs with (None: plain HTTP) and the lines to print;
    ``ConfigurationError`` for a combination or a file that cannot be used."""
    if (cert_file is None) != (key_file is None):
        raise ConfigurationError(
            "give both --tls-cert and --tls-key (DEVTRUST_TLS_CERT_FILE, DEVTRUST_TLS_KEY_FILE)"
        )
    if cert_file is not None and key_file is not None:
        if self_signed:
            raise ConfigurationError(
                "give either --tls-cert/--tls-key or --tls-self-signed, not both"
            )
        tls = load_server_pair(cert_file, key_file, client_ca_file)
        return tls, tls.notes
    if self_signed:
        if client_ca_file is not None:
            check_client_ca(client_ca_file)
        tls = replace(
            self_signed_pair(data_dir / SELF_SIGNED_DIR, host), client_ca_file=client_ca_file
        )
        return tls, tls.notes
    if client_ca_file is not None:
        raise ConfigurationError(f"--tls-client-ca needs TLS: give {TLS_OPTIONS} too")
    note = plain_http_note(host, terminated_by_proxy=terminated_by_proxy)
    return None, [note] if note else []


# -- the clients' side ----------------------------------------------------------------


def client_context(ca_file: Path | None) -> ssl.SSLContext:
    """The trust store the clients verify the service with: the PEM bundle ``ca_file``
    (DEVTRUST_API_CA_FILE) alone when given, the system's otherwise."""
    if ca_file is None:
        return ssl.create_default_context()
    certificates = _certificates(ca_file, "DEVTRUST_API_CA_FILE")
    pem = "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certificates)
    try:
        return ssl.create_default_context(cadata=pem)
    except ssl.SSLError as exc:
        raise ConfigurationError(f"DEVTRUST_API_CA_FILE {ca_file}: {_reason(exc)}") from None


# X509_V_ERR_*: the certificate is signed by no CA the client trusts.
_UNTRUSTED = frozenset({18, 19, 20, 21})
_HOSTNAME_MISMATCH = 62


def verification_failure(exc: BaseException, ca_file: Path | None) -> str | None:
    """What failed when ``exc`` (an httpx error) comes of the server's certificate failing
    verification, with a hint; None for any other error."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            failure = str(current.verify_message or current.reason or "verification failed")
            failure = failure.rstrip(".")
            if current.verify_code in _UNTRUSTED:
                trusted = (
                    f"DEVTRUST_API_CA_FILE {ca_file} holds"
                    if ca_file is not None
                    else "the system's trust store holds"
                )
                return (
                    f"certificate verify failed: {failure} ({trusted} no CA that signed it; "
                    "set DEVTRUST_API_CA_FILE to the PEM file of the CA that did)"
                )
            if current.verify_code == _HOSTNAME_MISMATCH:
                return f"certificate verify failed: {failure} (use a host name it names)"
            return f"certificate verify failed: {failure}"
        current = current.__cause__ or current.__context__
    return None
