"""The access check the proxies in front of a company's apps ask on every request.

``GET /v1/access/check`` is a forward-auth endpoint: nginx ``auth_request``, Traefik
``ForwardAuth``, Caddy ``forward_auth``, Envoy ``ext_authz`` (HTTP). The proxy ends the
user's TLS with devtrust's device CA as its client CA and forwards the certificate in a
header: nginx's ``$ssl_client_escaped_cert`` as ``X-SSL-Client-Cert``, Traefik's
``X-Forwarded-Tls-Client-Cert``, Envoy's ``X-Forwarded-Client-Cert``. The answer:

- 200, with ``X-Devtrust-User``, ``-Device-Id``, ``-Asset-Tag`` and ``-Trust-Level`` for
  a trusted device (the proxy passes them on to the app);
- 401 with no certificate, or one that cannot be read or that the device CA did not sign;
- 403 naming the reason: expired, unknown or removed device, unenrolled, enrolled again
  since the certificate was issued, below the cluster's trust level, a user that is gone,
  a certificate bound to no device.

The cluster's mode decides as ``ceremony.access.check_access`` says: ``off`` and
``optional`` let everyone through (with the device's headers when it is trusted),
``required-for-humans`` lets bots through (a bot is known by the user credential the
proxy forwards, ``Authorization: Bearer``, or by its certificate's user).

Only the one header ``access_certificate_header`` names is read (default nginx's): a
proxy overwrites the header it sets, but passes the others on from the client, so a
client could put someone else's certificate in one of those. A certificate is public,
so the header proves something only when the proxy checked the TLS handshake: it is
believed only from ``access_trusted_proxies`` (default: the
loopback addresses), or with ``X-Devtrust-Proxy-Secret`` equal to
``access_proxy_secret`` (compared in constant time). From anyone else it is refused.

A device may also ask devtrust itself, with no proxy, over mutual TLS (``devtrust serve
--tls-client-ca <the device CA's certificate>``): the certificate it presented in the
handshake, which proved that it holds the key, is believed from any address. A forwarded
header, when there is one, comes first: a proxy's own client certificate is not a device's.

The check is on the hot path of every request a proxy lets through, so it reads from
memory: verified certificates by their header's text, devices by id, users, the
preference. Whatever changes one of those, in any process, makes the database say so
(migration 0008's triggers): PostgreSQL notifies every listening instance; on SQLite
``PRAGMA data_version`` tells, without I/O, when another connection committed, and only
then is the change counter read. A certificate of a device unenrolled or removed a
moment ago is refused on the very next check. While an instance cannot listen (its
PostgreSQL connection is down) it reads the database on every check instead.
"""

from __future__ import annotations

import base64
import contextvars
import datetime
import hmac
import ipaddress
import logging
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.engine import make_url
from starlette.concurrency import run_in_threadpool

from ceremony.access import REQUIRES_TRUSTED_DEVICE
from ceremony.device_ca import DeviceExtensions, device_extensions
from inventory.db import Database
from inventory.domain import AttestationType, EnrollStatus, Role, TrustLevel
from inventory.errors import Unauthenticated
from inventory.models import AuditEventRow, DeviceRow, UserRow
from inventory.services import audit
from inventory.services.preference import get_preference
from inventory.services.users import credential_hash

log = logging.getLogger("devtrust.access")

CERT_HEADERS = ("x-ssl-client-cert", "x-forwarded-tls-client-cert", "x-forwarded-client-cert")
# Where a certificate came from when the client presented it to devtrust itself (mTLS).
TLS_PEER = "the TLS handshake"
SECRET_HEADER = "x-devtrust-proxy-secret"  # noqa: S105 - a header name
MAX_CERT_HEADER = 16 * 1024
LOOPBACK = ("127.0.0.0/8", "::1/128")
VERIFIED_CACHE = 8192
CHANNEL = "devtrust_access"
NO_DEVICE = "none"  # X-Devtrust-Trust-Level when the caller is let through without one


class ErrorBody(BaseModel):
    error: str


@dataclass(frozen=True)
class Verdict:
    status: int  # 200, 401 or 403
    reason: str | None = None
    user: str | None = None
    device: DeviceExtensions | None = None
    trust_level: str = NO_DEVICE

    def headers(self) -> dict[str, str]:
        if self.status != 200:
            return {}
        out = {"X-Devtrust-Trust-Level": self.trust_level}
        if self.user:
            out["X-Devtrust-User"] = self.user
        if self.device is not None:
            out["X-Devtrust-Device-Id"] = self.device.device_id
            out["X-Devtrust-Asset-Tag"] = self.device.asset_tag
        return out


# -- the certificate a proxy forwards ------------------------------------------------


class Unreadable(ValueError):
    """A forwarded certificate header that holds no certificate."""


def forwarded_der(header: str, value: str) -> bytes:
    """The client certificate (DER) in one proxy's header.

    ``x-ssl-client-cert``: nginx's ``$ssl_client_escaped_cert``, a URL-escaped PEM (a PEM
    with its newlines folded into spaces is taken too). ``x-forwarded-tls-client-cert``:
    Traefik's, the base64 of the DER (a PEM without its delimiters), URL-escaped, the
    client's certificate first. ``x-forwarded-client-cert``: Envoy's XFCC, whose last
    element (the nearest proxy's) carries ``Cert="<URL-escaped PEM>"``."""
    if len(value) > MAX_CERT_HEADER:
        raise Unreadable(f"it is longer than {MAX_CERT_HEADER} bytes")
    if header == "x-forwarded-client-cert":
        value = _xfcc_cert(value)
    text = unquote(value).strip()
    if not text:
        raise Unreadable("it is empty")
    if "-----BEGIN CERTIFICATE-----" in text:
        return _pem_der(text)
    first = text.split(",")[0].strip()
    try:
        return base64.b64decode(first, validate=True)
    except ValueError:
        raise Unreadable("it is neither a PEM certificate nor base64") from None


def _pem_der(text: str) -> bytes:
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    body = text.split(begin, 1)[1].split(end, 1)[0]
    try:
        return base64.b64decode("".join(body.split()), validate=True)
    except ValueError:
        raise Unreadable("its PEM body is not base64") from None


def _xfcc_cert(value: str) -> str:
    """``Cert`` of the last element of an XFCC header (elements by commas, pairs by
    semicolons, values maybe in double quotes, which may hold either)."""
    elements: list[list[str]] = [[]]
    pair: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in ",;":
            elements[-1].append("".join(pair))
            pair = []
            if char == ",":
                elements.append([])
        else:
            pair.append(char)
    elements[-1].append("".join(pair))
    for item in elements[-1]:
        key, _, val = item.strip().partition("=")
        if key.lower() == "cert":
            return val
    raise Unreadable("its last element has no Cert")


@dataclass(frozen=True)
class Verified:
    """A forwarded certificate the device CA signed: whose, which device, and when."""

    user: str
    device: DeviceExtensions | None
    not_before: datetime.datetime
    not_after: datetime.datetime


# -- what the check remembers, and how it learns that it changed ----------------------


@dataclass(frozen=True)
class DeviceState:
    asset_tag: str
    enroll_status: str
    credential_id: str | None
    trust_level: TrustLevel | None
    owner: str | None


class Watcher:
    """Tells the cache when what it holds may have changed."""

    def changed(self) -> bool:
        """Whether anything changed since the last call (and so the cache is stale)."""
        raise NotImplementedError

    @property
    def listening(self) -> bool:
        """Whether a change would be seen; when not, nothing may be served from memory."""
        return True

    def close(self) -> None:
        pass


class SqliteWatcher(Watcher):
    """``PRAGMA data_version`` on a connection of its own: it moves when another
    connection commits; then the change counter the triggers keep says whether the
    commit touched what the check reads."""

    def __init__(self, path: str) -> None:
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._version: int | None = None
        self._epoch: int | None = None

    def changed(self) -> bool:
        with self._lock:
            (version,) = self._conn.execute("PRAGMA data_version").fetchone()
            if version == self._version:
                return False
            self._version = version
            row = self._conn.execute("SELECT epoch FROM access_epoch WHERE id = 1").fetchone()
            epoch = row[0] if row else 0
            if epoch == self._epoch:
                return False
            self._epoch = epoch
            return True

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class PostgresWatcher(Watcher):
    """``LISTEN devtrust_access`` in a thread of its own; every notification, and every
    reconnection (notifications may have been missed meanwhile), is a change."""

    def __init__(self, url: str, *, retry: float = 1.0) -> None:
        self._url = url
        self._retry = retry
        self._generation = 0
        self._seen = -1
        self._listening = False
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="access-listen", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    @property
    def listening(self) -> bool:
        return self._listening

    def changed(self) -> bool:
        generation = self._generation
        if generation == self._seen:
            return False
        self._seen = generation
        return True

    def _listen(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._generation += 1  # whatever happened while not listening
                    self._listening = True
                    self._ready.set()
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=0.5):
                            self._generation += 1
            except Exception as exc:  # the connection dropped: read the database meanwhile
                if self._listening:
                    log.warning("access cache: not listening to PostgreSQL (%s)", exc)
                self._listening = False
                self._generation += 1
                self._ready.set()
                self._stop.wait(self._retry)
        self._listening = False

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def watcher_for(database_url: str) -> Watcher:
    url = make_url(database_url)
    if url.get_backend_name() == "postgresql":
        plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
        return PostgresWatcher(plain)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return SqliteWatcher(url.database)
    raise ValueError(f"the access check cannot watch {url.get_backend_name()} for changes")


class AccessState:
    """The devices, users and preference the check reads, from memory while the
    watcher says nothing changed. A value read while a change came in is not kept."""

    def __init__(self, db: Database, watcher: Watcher) -> None:
        self.db = db
        self.watcher = watcher
        self._memory: dict[str, dict[Any, Any]] = {}
        self._lock = threading.Lock()
        self._generation = 0
        self.misses = 0  # database reads, for tests and the benchmark

    def _look(self) -> None:
        """Forget everything on a change (under the lock)."""
        if self.watcher.changed():
            self._memory = {}
            self._generation += 1

    def _remembered(
        self, kind: str, key: Any, read: Callable[[], Any], *, keep_none: bool = True
    ) -> Any:
        """``read()``'s value for ``key``, from memory when it may be. ``keep_none``: also
        remember that there is none (not for keys a client makes up, which would grow
        the memory without bound)."""
        with self._lock:
            self._look()
            usable = self.watcher.listening
            table = self._memory.get(kind, {})
            if usable and key in table:
                return table[key]
            generation = self._generation
        if OFFLINE.get():
            raise NeedsDatabase
        value = read()
        with self._lock:
            self.misses += 1
            self._look()
            if usable and generation == self._generation and (keep_none or value is not None):
                self._memory.setdefault(kind, {})[key] = value
        return value

    def preference(self) -> tuple[str, TrustLevel | None]:
        def read() -> tuple[str, TrustLevel | None]:
            trust = get_preference(self.db.uow()).device_trust
            return str(trust.mode), trust.min_attestation

        return self._remembered("preference", None, read)  # type: ignore[no-any-return]

    def device(self, device_id: str) -> DeviceState | None:
        return self._remembered(  # type: ignore[no-any-return]
            "devices", device_id, lambda: self._read_device(device_id)
        )

    def user_roles(self, name: str) -> frozenset[str] | None:
        return self._remembered(  # type: ignore[no-any-return]
            "users", name, lambda: self._read_user(name)
        )

    def bearer(self, credential: str) -> tuple[str, frozenset[str]] | None:
        try:
            digest = credential_hash(credential)
        except Unauthenticated:
            return None
        # Any string a client sends: an unknown one is read again, never kept.
        return self._remembered(  # type: ignore[no-any-return]
            "bearers", digest, lambda: self._read_bearer(digest), keep_none=False
        )

    def _read_device(self, device_id: str) -> DeviceState | None:
        columns = (DeviceRow.asset_tag, DeviceRow.enroll_status, DeviceRow.credential_id,
                   DeviceRow.credential_attestation_type, DeviceRow.owner)  # fmt: skip
        with self.db.uow().read() as uow:
            row = uow.session.execute(select(*columns).where(DeviceRow.id == device_id)).first()
        if row is None:
            return None
        tag, status, credential, attestation, owner = row
        level = AttestationType(attestation).level if attestation else None
        return DeviceState(tag, status, credential, level, owner)

    def _read_user(self, name: str) -> frozenset[str] | None:
        with self.db.uow().read() as uow:
            roles = uow.session.scalar(select(UserRow.roles).where(UserRow.name == name))
        return None if roles is None else frozenset(roles)

    def _read_bearer(self, digest: str) -> tuple[str, frozenset[str]] | None:
        query = select(UserRow.name, UserRow.roles).where(UserRow.token_hash == digest)
        with self.db.uow().read() as uow:
            row = uow.session.execute(query).first()
        return None if row is None else (row[0], frozenset(row[1]))

    def was_removed(self, device_id: str) -> bool:
        """Whether the audit log has the device's removal (only asked when refusing; kept,
        so that a removed device's certificate sent again costs no query)."""
        return self._remembered(  # type: ignore[no-any-return]
            "removed", device_id, lambda: self._read_removed(device_id)
        )

    def _read_removed(self, device_id: str) -> bool:
        query = (
            select(AuditEventRow.id)
            .where(AuditEventRow.type == audit.DEVICE_DELETE, AuditEventRow.device_id == device_id)
            .limit(1)
        )
        with self.db.uow().read() as uow:
            return uow.session.scalar(query) is not None

    def close(self) -> None:
        self.watcher.close()


# -- the check -----------------------------------------------------------------------


def trusted_networks(
    texts: Sequence[str],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(t.strip(), strict=False) for t in texts)


class AccessGate:
    """``check`` is the verdict for one forwarded request."""

    def __init__(
        self,
        state: AccessState,
        ca: x509.Certificate,
        *,
        trusted_proxies: Sequence[str] = LOOPBACK,
        proxy_secret: str | None = None,
        certificate_header: str = CERT_HEADERS[0],
        clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        if certificate_header not in CERT_HEADERS:
            raise ValueError(f"unknown client certificate header {certificate_header!r}")
        self.state = state
        self.header = certificate_header
        self.ca = ca
        self.networks = trusted_networks(trusted_proxies)
        self.secret = proxy_secret.encode() if proxy_secret else None
        self.clock = clock
        self._verified = lru_cache(maxsize=VERIFIED_CACHE)(self._verify)

    def close(self) -> None:
        self.state.close()

    def _from_proxy(self, peer: str | None, headers: Mapping[str, str]) -> str | None:
        """None when the forwarded certificate may be believed, else why not."""
        sent = headers.get(SECRET_HEADER)
        if sent is not None:
            if self.secret is not None and hmac.compare_digest(sent.encode(), self.secret):
                return None
            return "the proxy secret (X-Devtrust-Proxy-Secret) is wrong"
        try:
            address = ipaddress.ip_address(peer or "")
        except ValueError:
            address = None
        if address is not None and any(address in net for net in self.networks):
            return None
        return (
            f"a client certificate header came from {peer or 'an unknown address'}, which is "
            "not a trusted proxy (access_trusted_proxies) and sent no proxy secret"
        )

    def _verify(self, header: str, value: str) -> Verified | str:
        """The certificate in one header (or the TLS handshake's), verified; or why it
        cannot be (a 401)."""
        try:
            der = _pem_der(value) if header == TLS_PEER else forwarded_der(header, value)
            cert = x509.load_der_x509_certificate(der)
        except Unreadable as exc:
            return f"the client certificate in {header} cannot be read: {exc}"
        except ValueError:
            return f"the client certificate in {header} is not an X.509 certificate"
        try:
            cert.verify_directly_issued_by(self.ca)
        except (ValueError, TypeError, InvalidSignature):
            return "the client certificate was not issued by this devtrust's device CA"
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not names:
            return "the client certificate names no user"
        user = str(names[0].value)
        return Verified(user, device_extensions(cert), cert.not_valid_before_utc,
                        cert.not_valid_after_utc)  # fmt: skip

    def check(
        self, headers: Mapping[str, str], peer: str | None, tls_peer: str | None = None
    ) -> Verdict:
        """The verdict on the device certificate the proxy forwarded in its header, or
        else on ``tls_peer``: the PEM certificate the client itself presented in the TLS
        handshake with devtrust (``devtrust serve --tls-client-ca``), which proved that it
        holds the key, so it is believed from any address."""
        # Only the header this deployment's proxy sets: the proxy overwrites that one, and
        # passes the others on from the client as they came.
        value = headers.get(self.header)
        found = (self.header, value) if value else None
        if found is not None:
            distrust = self._from_proxy(peer, headers)
            if distrust is not None:
                return Verdict(401, distrust)
        elif tls_peer is not None:
            found = (TLS_PEER, tls_peer)
        mode, minimum = self.state.preference()
        if mode not in ("off", "optional", "required", "required-for-humans"):
            return Verdict(403, f"{REQUIRES_TRUSTED_DEVICE} (unknown device_trust.mode {mode!r})")
        if found is None:
            return self._without_certificate(mode, headers)
        verified = self._verified(*found)
        if isinstance(verified, str):
            return Verdict(401, verified)
        now = self.clock()
        if now > verified.not_after:
            stamp = verified.not_after.strftime("%Y-%m-%d %H:%M:%S UTC")
            return Verdict(403, f"the device certificate expired at {stamp}: run "
                                "`devtrust device login` again")  # fmt: skip
        if now < verified.not_before:
            return Verdict(403, "the device certificate is not valid yet (check the clocks)")
        roles = self.state.user_roles(verified.user)
        if roles is None:
            return Verdict(403, f"user {verified.user!r} no longer exists")
        refusal, level = self._device_refusal(verified, minimum)
        if refusal is None:
            return Verdict(200, user=verified.user, device=verified.device, trust_level=level)
        if mode in ("off", "optional") or (
            mode == "required-for-humans" and Role.BOT.value in roles
        ):
            return Verdict(200, user=verified.user)
        return Verdict(403, refusal)

    def _without_certificate(self, mode: str, headers: Mapping[str, str]) -> Verdict:
        if mode in ("off", "optional"):
            return Verdict(200)
        scheme, _, credential = headers.get("authorization", "").partition(" ")
        if mode == "required-for-humans" and scheme.lower() == "bearer" and credential.strip():
            found = self.state.bearer(credential)
            if found is not None and Role.BOT.value in found[1]:
                return Verdict(200, user=found[0])
        return Verdict(401, f"{REQUIRES_TRUSTED_DEVICE}: no device certificate was presented "
                            "(run `devtrust device login`)")  # fmt: skip

    def _device_refusal(
        self, verified: Verified, minimum: TrustLevel | None
    ) -> tuple[str | None, str]:
        """(None, the trust level) for a trusted device, else (the refusal, "")."""
        bound = verified.device
        if bound is None:
            return "the certificate is bound to no device", ""
        device = self.state.device(bound.device_id)
        name = f"device {bound.asset_tag}"
        if device is None:
            if self.state.was_removed(bound.device_id):
                return f"{name} was removed from the inventory", ""
            return f"{name} is unknown to the inventory", ""
        if device.asset_tag != bound.asset_tag:
            return f"{name} is {device.asset_tag} in the inventory now", ""
        if device.enroll_status != EnrollStatus.ENROLLED.value:
            return f"{name} is not enrolled (it was unenrolled)", ""
        if device.credential_id != bound.credential_id:
            return (f"{name} was enrolled again since this certificate was issued: run "
                    "`devtrust device login` again", "")  # fmt: skip
        if device.owner != verified.user:
            return f"{name} is not {verified.user}'s device", ""
        level = device.trust_level
        if minimum is not None and (level is None or not level.at_least(minimum)):
            shown = level.value if level else "unknown"
            return (f"{name}'s trust level {shown} is below the cluster's minimum "
                    f"{minimum.value}", "")  # fmt: skip
        return None, level.value if level else NO_DEVICE


def gate_for(
    db: Database,
    database_url: str,
    ca: x509.Certificate,
    *,
    trusted_proxies: Sequence[str],
    proxy_secret: str | None,
    certificate_header: str = CERT_HEADERS[0],
) -> AccessGate:
    state = AccessState(db, watcher_for(database_url))
    return AccessGate(state, ca, trusted_proxies=trusted_proxies, proxy_secret=proxy_secret,
                      certificate_header=certificate_header)  # fmt: skip


# -- the route -----------------------------------------------------------------------

#: Envoy's ext_authz (HTTP) sends the request's own method and appends its path.
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
OFFLINE: contextvars.ContextVar[bool] = contextvars.ContextVar("access_offline", default=False)


class NeedsDatabase(Exception):
    """A check answered from memory alone needed a database read."""


def access_routes(app: FastAPI, gate: AccessGate) -> None:
    async def check(request: Request) -> Response:
        headers, peer = request.headers, request.client.host if request.client else None
        chain = request.scope.get("extensions", {}).get("tls", {}).get("client_cert_chain")
        tls_peer = chain[0] if chain else None  # ceremony.limits.BoundedH11Protocol's
        verdict = _from_memory(gate, headers, peer, tls_peer)
        if verdict is None:  # a miss: the database, off the event loop
            verdict = await run_in_threadpool(gate.check, headers, peer, tls_peer)
        if verdict.status == 200:
            return Response(status_code=200, headers=verdict.headers())
        response = JSONResponse({"error": verdict.reason}, status_code=verdict.status)
        response.headers["X-Devtrust-Reason"] = (verdict.reason or "")[:300]
        return response

    doc = {
        "response_class": Response,  # the 200 has no body: the proxy reads its headers
        "summary": "Whether the device behind a forwarded client certificate may pass",
        "description": (__doc__ or "").split("\n\n")[1],
        "responses": {
            200: {
                "description": "Let through; X-Devtrust-* headers name user and device",
                "content": {},
            },
            401: {"model": ErrorBody, "description": "No certificate, or not one to believe"},
            403: {"model": ErrorBody, "description": "Refused, with the reason"},
        },
    }
    app.add_api_route("/v1/access/check", check, methods=METHODS, **doc)  # type: ignore[arg-type]
    app.add_api_route(
        "/v1/access/check/{path:path}", check, methods=METHODS, include_in_schema=False
    )


def _from_memory(
    gate: AccessGate, headers: Mapping[str, str], peer: str | None, tls_peer: str | None
) -> Verdict | None:
    token = OFFLINE.set(True)
    try:
        return gate.check(headers, peer, tls_peer)
    except NeedsDatabase:
        return None
    finally:
        OFFLINE.reset(token)
