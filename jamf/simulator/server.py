"""Running the simulator on uvicorn: in the foreground for the CLI, in a thread for tests."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from inventory.errors import InvalidArgument

from .app import create_app
from .config import SimulatorConfig

_DROPPED = "ASGI callable returned without completing response."


class _HideDroppedConnections(logging.Filter):
    """The dropped-connection fault is on purpose; uvicorn need not report it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != _DROPPED


def _quiet_dropped_connections() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _HideDroppedConnections) for f in logger.filters):
        logger.addFilter(_HideDroppedConnections())


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or ``InvalidArgument`` saying why there cannot be one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise InvalidArgument(f"cannot listen on {host}:{port}: {reason.lower()}") from None
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _server(app: Any, **options: Any) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        lifespan="off",
        access_log=False,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=2,
        **options,
    )
    return uvicorn.Server(config)


@contextmanager
def running_simulator(config: SimulatorConfig, app: Any = None) -> Iterator[str]:
    """Serve on 127.0.0.1 at a free port in a background thread; yield the base URL.

    Pass ``app`` (from ``create_app``) to keep a handle on its ``state.simulator``.
    """
    _quiet_dropped_connections()
    sock = bind("127.0.0.1", 0)
    server = _server(app or create_app(config), log_config=None, log_level="warning")
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="jamf-simulator", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the Jamf Pro simulator did not start")
        time.sleep(0.01)
    try:
        yield _url(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def serve(config: SimulatorConfig, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve in the foreground until interrupted; ``on_ready`` gets the base URL."""
    sock = bind(config.host, config.port)
    _quiet_dropped_connections()
    server = _server(create_app(config), log_level="warning")
    if on_ready is not None:
        on_ready(_url(sock))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
