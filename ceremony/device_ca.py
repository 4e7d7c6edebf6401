"""The service's device CA: short-lived certificates that say which trusted device a user is on.

After a device authenticates, the service signs a certificate for the user's public key
carrying three extensions under devtrust's own OID arc (a UUID arc under 2.25, which
needs no registration): the device id, its asset tag and its enrolled credential id. The
CA is made on first start, its key kept on disk with mode 0600, or supplied as files.
"""

from __future__ import annotations

import datetime
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ceremony.errors import DeviceCAError
from ceremony.keyfile import write_private_key

# 2.25.<a random UUID as an integer> is devtrust's arc (ITU-T X.667); .1.<n> are extensions.
ARC = "2.25.178379302657003767003252538744001165442"
DEVICE_ID = x509.ObjectIdentifier(f"{ARC}.1.1")
DEVICE_ASSET_TAG = x509.ObjectIdentifier(f"{ARC}.1.2")
DEVICE_CREDENTIAL_ID = x509.ObjectIdentifier(f"{ARC}.1.3")
EXTENSION_NAMES = {
    DEVICE_ASSET_TAG: "device-asset-tag",
    DEVICE_CREDENTIAL_ID: "device-credential-id",
    DEVICE_ID: "device-id",
}
KEY_FILE = "device-ca.key"
CERT_FILE = "device-ca.pem"
CA_LIFETIME = datetime.timedelta(days=3650)
MAX_CERT_TTL = datetime.timedelta(hours=24)
CLOCK_SKEW = datetime.timedelta(minutes=1)

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


@dataclass(frozen=True)
class DeviceExtensions:
    device_id: str
    asset_tag: str
    credential_id: str


def _utf8(value: str) -> bytes:
    """DER UTF8String: the extension values are short, so the length is one byte or 0x81."""
    raw = value.encode("utf-8")
    if len(raw) < 0x80:
        return b"\x0c" + bytes([len(raw)]) + raw
    if len(raw) < 0x100:
        return b"\x0c\x81" + bytes([len(raw)]) + raw
    raise ValueError("extension value too long")


def _from_utf8(der: bytes) -> str:
    if len(der) >= 2 and der[0] == 0x0C:
        if der[1] < 0x80 and len(der) == 2 + der[1]:
            return der[2:].decode("utf-8")
        if der[1] == 0x81 and len(der) >= 3 and len(der) == 3 + der[2]:
            return der[3:].decode("utf-8")
    raise ValueError("not a DER UTF8String")


class DeviceCA:
    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self.key = key
        self.cert = cert

    @classmethod
    def load_or_create(
        cls,
        directory: Path,
        *,
        key_file: Path | None = None,
        cert_file: Path | None = None,
        now: datetime.datetime | None = None,
    ) -> DeviceCA:
        """The CA from ``key_file``/``cert_file`` when given, else from ``directory``,
        made there on first use."""
        if (key_file is None) != (cert_file is None):
            raise DeviceCAError("give both the device CA's key file and its certificate file")
        if key_file is not None and cert_file is not None:
            return cls._load(key_file, cert_file)
        key_path, cert_path = directory / KEY_FILE, directory / CERT_FILE
        if key_path.exists() or cert_path.exists():
            return cls._load(key_path, cert_path)
        return cls._create(key_path, cert_path, now or datetime.datetime.now(datetime.UTC))

    @classmethod
    def _load(cls, key_path: Path, cert_path: Path) -> DeviceCA:
        try:
            mode = key_path.stat().st_mode
            key_pem, cert_pem = key_path.read_bytes(), cert_path.read_bytes()
        except OSError as exc:
            raise DeviceCAError(
                f"cannot read the device CA: {exc.filename}: {exc.strerror}"
            ) from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise DeviceCAError(
                f"the device CA key {key_path} is open to other users "
                f"(mode {stat.S_IMODE(mode):04o}): chmod 600 {key_path}"
            )
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
            cert = x509.load_pem_x509_certificate(cert_pem)
        except (ValueError, TypeError) as exc:
            raise DeviceCAError(f"the device CA files do not parse: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise DeviceCAError(f"{key_path} is not an EC private key")
        if cert.public_key() != key.public_key():
            raise DeviceCAError(f"{cert_path} is not the certificate of the key in {key_path}")
        return cls(key, cert)

    @classmethod
    def _create(cls, key_path: Path, cert_path: Path, now: datetime.datetime) -> DeviceCA:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "devtrust"),
            x509.NameAttribute(NameOID.COMMON_NAME, "devtrust device CA"),
        ])  # fmt: skip
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        write_private_key(key_path, key)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(key, cert)

    def issue(
        self,
        *,
        user: str,
        public_key: PublicKey,
        device: DeviceExtensions,
        ttl: datetime.timedelta,
        now: datetime.datetime,
    ) -> x509.Certificate:
        """A client certificate for ``user``'s key, bound to ``device``, valid for ``ttl``."""
        if not datetime.timedelta(0) < ttl <= MAX_CERT_TTL:
            raise ValueError(f"a device certificate lives more than 0 and at most {MAX_CERT_TTL}")
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, user)]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(uuid.uuid4().int)
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + ttl)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        )
        for oid, value in (
            (DEVICE_ID, device.device_id),
            (DEVICE_ASSET_TAG, device.asset_tag),
            (DEVICE_CREDENTIAL_ID, device.credential_id),
        ):
            extension = x509.UnrecognizedExtension(oid, _utf8(value))
            builder = builder.add_extension(extension, critical=False)
        return builder.sign(self.key, hashes.SHA256())


def device_extensions(cert: x509.Certificate) -> DeviceExtensions | None:
    """The device a certificate is bound to, or None when it carries none of devtrust's
    device extensions (a partial or malformed set is None too)."""
    values: dict[x509.ObjectIdentifier, str] = {}
    for extension in cert.extensions:
        if extension.oid in EXTENSION_NAMES:
            if not isinstance(extension.value, x509.UnrecognizedExtension):
                return None
            try:
                values[extension.oid] = _from_utf8(extension.value.value)
            except (ValueError, UnicodeDecodeError):
                return None
    if len(values) != len(EXTENSION_NAMES):
        return None
    return DeviceExtensions(
        device_id=values[DEVICE_ID],
        asset_tag=values[DEVICE_ASSET_TAG],
        credential_id=values[DEVICE_CREDENTIAL_ID],
    )


def issued_by(cert: x509.Certificate, ca: x509.Certificate, now: datetime.datetime) -> bool:
    """Whether ``ca`` signed ``cert`` and ``cert`` is valid at ``now``."""
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
