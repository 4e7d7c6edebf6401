"""The ceremony service on a real socket, and the inventory state a ceremony needs.

``serving`` runs the FastAPI app in uvicorn (as ``devtrust serve`` does: h11, bounded
headers) on a free loopback port in a thread, so tests
drive it over HTTP while still holding its database (and its clock) in hand.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI

from ceremony.agent.enroll import CeremonyClient
from ceremony.enroll import CeremonyConfig, EnrollmentCeremony
from ceremony.limits import SERVER_OPTIONS
from ceremony.service import create_app
from inventory.db import Database
from inventory.domain import CollectedData, OSType, Role
from inventory.services import devices, tokens, users
from inventory.settings import Settings
from tests.processes import free_port, wait_until


class PendingQueue:
    """Auto-enrollment's queue with no worker behind it: every check stays pending."""

    def submit(
        self, check_id: str, user: str, logins: Sequence[str], collected: dict[str, Any]
    ) -> None:
        pass

    def verdict(self, check_id: str, wait: float) -> dict[str, Any] | None:
        return None

    def forget(self, check_id: str) -> None:
        pass


@contextmanager
def serving(app: FastAPI, **tls: Any) -> Iterator[str]:
    """``app`` served by uvicorn on 127.0.0.1 (over TLS given uvicorn's ``ssl_*`` options,
    as ``ceremony.tls.ServerTLS.uvicorn_options`` makes them); yields its base URL."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, lifespan="off", **SERVER_OPTIONS,
        **tls,
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), 10, "uvicorn did not start")
        assert thread.is_alive(), "uvicorn exited at startup"
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def ceremony_service(db: Database, config: CeremonyConfig | None = None) -> Iterator[str]:
    app = create_app(Settings(), {}, EnrollmentCeremony(db, config))
    with serving(app) as url:
        yield url


@dataclass
class World:
    """A user with a credential, and a device with a token minted for it."""

    db: Database
    url: str
    user: str
    credential: str
    asset_tag: str
    os_type: OSType
    token: str

    def client(self, credential: str | None = None) -> CeremonyClient:
        return CeremonyClient(self.url, credential or self.credential)

    def collected(self, serial: str | None = None, os_type: OSType | None = None) -> CollectedData:
        return CollectedData(
            serial_number=serial or self.asset_tag,
            os_type=os_type or self.os_type,
            os_login_user=self.user,
            os_version="13",
        )

    def new_token(self, ref: str | None = None) -> str:
        return tokens.create_token(self.db.uow(), ref or self.asset_tag, actor="admin").token

    def add_user(self, name: str, *roles: Role) -> str:
        _, credential = users.add_user(self.db.uow(), name, roles or (Role.ACCESS,), actor="admin")
        return credential


def world(
    db: Database, url: str, *, asset_tag: str = "LNX-0001", os_type: OSType = OSType.LINUX
) -> World:
    _, credential = users.add_user(db.uow(), "alice", (Role.ACCESS,), actor="admin")
    devices.register_device(db.uow(), os_type=os_type, asset_tag=asset_tag, actor="admin")
    token = tokens.create_token(db.uow(), asset_tag, actor="admin").token
    return World(db, url, "alice", credential, asset_tag, os_type, token)
