"""What can go wrong on the device, each error with the one line its user sees.

The CLI turns every one of these into ``error: <message>`` and a non-zero exit.
"""

from __future__ import annotations


class CollectError(Exception):
    """The device's data cannot be collected; the message says what to do."""


class TPMError(Exception):
    """The TPM refused or failed an operation; the message says which."""


class TPMAccessError(TPMError):
    """The TPM device exists but this user may not open it."""


class ServiceError(Exception):
    """The request could not be made, the service refused it or could not be reached; the
    message says which (``status`` is the HTTP status when the service answered)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
