"""The admin CLI's remote mode: every command through ``devtrust serve``'s admin API.

With ``DEVTRUST_API_URL`` and ``DEVTRUST_USER_TOKEN`` both set, the admin commands never
open the database: they send the user's credential to the API, which authorises it by
role and names that user in the audit log. The service's refusal is the one line the
command prints (it is the same service code that refuses it locally), and listings are
read a page at a time by keyset cursor, so ``devices ls`` of any fleet holds one page.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from inventory.domain import OSType
from inventory.errors import DevtrustError

if TYPE_CHECKING:
    from ceremony.client import ApiClient
    from inventory.settings import Settings


class RemoteError(DevtrustError):
    """The admin API refused the command, or could not be reached; ``status`` is the
    HTTP status when it answered."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AdminClient:
    """The admin routes (``ceremony.admin``), as the CLI calls them."""

    def __init__(self, settings: Settings) -> None:
        from ceremony.agent.errors import ServiceError
        from ceremony.client import ApiClient

        token = settings.user_token.get_secret_value().strip() if settings.user_token else ""
        self.url = settings.api_url
        try:
            self._api: ApiClient = ApiClient(settings.api_url, token, ca_file=settings.api_ca_file)
        except ServiceError as exc:
            raise RemoteError(str(exc)) from None

    def close(self) -> None:
        self._api.close()

    def call(self, method: str, path: str, body: Any = None, **params: Any) -> dict[str, Any]:
        """The answer to ``method path?params`` (None-valued params left out)."""
        from ceremony.agent.errors import ServiceError

        query = {k: v for k, v in params.items() if v is not None}
        try:
            return self._api.request(method, path, body, params=query)
        except ServiceError as exc:
            raise RemoteError(str(exc), exc.status) from None

    def device(
        self, method: str, ref: str, os_type: OSType | None, suffix: str = "", body: Any = None
    ) -> dict[str, Any]:
        """A call on one device's route; ``ref`` travels escaped whole (a "/" or "%" in an
        asset tag included)."""
        path = f"/v1/admin/devices/{quote(ref, safe='')}{suffix}"
        return self.call(method, path, body, os=os_type.value if os_type else None)

    def pages(self, path: str, key: str, *, limit: int) -> Iterator[list[dict[str, Any]]]:
        """Each page of a keyset-paged listing, read as the previous one is used."""
        after: str | None = None
        while True:
            page = self.call("GET", path, limit=limit, after=after)
            yield page[key]
            after = page.get("next")
            if not after:
                return


def follow_remote(api: AdminClient, task_id: str, *, timeout: float) -> int:
    """``jamf sync --wait`` through the API: the task's state read from
    ``GET /v1/admin/jamf/tasks/{id}`` every half second, shown as the local mode shows it."""
    from worker.cli._queue import Lost, TaskView, follow_view

    def view() -> TaskView:
        try:
            answer = api.call("GET", f"/v1/admin/jamf/tasks/{quote(task_id, safe='')}")
        except RemoteError as exc:
            if exc.status is not None and exc.status < 500:
                raise  # refused: not something waiting longer mends
            raise Lost(f"lost the devtrust service at {api.url} while waiting ({exc})") from None
        return TaskView(**answer)

    where = f"the queue the service at {api.url} uses"
    return follow_view(view, task_id, timeout=timeout, where=where)
