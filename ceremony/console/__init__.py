"""The admin web console (``/ui/`` on ``devtrust serve``): devices, a device's drift and
posture, syncs, the audit log and the device-trust preference, as server-rendered pages.

Built on what the admin API uses, never beside it: the services in
``inventory.services``, the serializers in ``inventory.serialize`` and the role checks of
``ceremony.admin`` (``require_admin``, ``readable``); a "Resync now" queues the task
``devtrust jamf sync`` queues (``AdminApi.send_sync``). Jinja2 templates and a few lines
of plain JavaScript shipped in this package: no build step, and no page asks anything of
any server but this one (the Content-Security-Policy says so too).

A device admin sees and does everything; any other user sees only their own devices
(their owner, or assigned to them), read-only. Sessions: ``ceremony.console.sessions``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from ceremony.console.sessions import DEFAULT_TTL, Signer, load_or_create_key, read_key

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ceremony.admin import AdminApi


@dataclass
class AdminConsole:
    """What the console's pages need: the admin API's inventory, settings and queue, and
    how long a session lasts. The session key is read on first use: the file
    ``console_session_key_file`` names (every replica the same), else one made under the
    settings' data directory."""

    admin: AdminApi
    session_ttl: timedelta = DEFAULT_TTL
    key: bytes | None = None
    _signer: Signer | None = field(default=None, init=False, repr=False)

    def signer(self) -> Signer:
        if self._signer is None:
            key = self.key
            configured = self.admin.settings.console_session_key_file
            if key is None:
                try:
                    if configured is not None:  # shared by every replica (a secret)
                        key = read_key(configured)
                    else:
                        key = load_or_create_key(self.admin.settings.data_dir)
                except (OSError, ValueError) as exc:
                    from ceremony.admin import Misconfigured

                    raise Misconfigured(f"the console's session key: {exc}") from None
            self._signer = Signer(key, self.session_ttl)
        return self._signer

    def register(self, app: FastAPI) -> None:
        from ceremony.console.routes import console_routes

        console_routes(app, self)
