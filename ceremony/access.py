"""Whether a caller may reach a resource, given the cluster's device-trust mode.

``check_access`` is the whole rule, as the reference system states it:

- ``off`` and ``optional``: everyone may (``optional`` only records the device);
- ``required``: only a caller whose certificate is bound to a trusted device;
- ``required-for-humans``: the same for humans; bots are exempt;
- any other mode refuses: a mode this code does not know must not open the door.

The certificate counts only when the device CA signed it and it is in its validity:
there is no way to call this without the CA (a self-signed certificate can carry copied
extensions). ``ceremony.gate`` is the check the proxies ask, which also reads the
device's state (enrolled, the same credential, the trust level) on every request.
"""

from __future__ import annotations

import datetime

from cryptography import x509

from ceremony.device_ca import DeviceExtensions, device_extensions, issued_by
from inventory.errors import AccessDenied

REQUIRES_TRUSTED_DEVICE = "access to resource requires a trusted device"


def check_access(
    cert: x509.Certificate | None,
    mode: str,
    *,
    is_bot: bool,
    ca: x509.Certificate,
    now: datetime.datetime | None = None,
) -> DeviceExtensions | None:
    """Allow (returning the caller's device, if any) or raise AccessDenied."""
    device = _trusted_device(cert, ca, now)
    mode = str(mode)
    if mode in ("off", "optional"):
        return device
    if mode == "required-for-humans" and is_bot:
        return device
    if mode in ("required", "required-for-humans"):
        if device is None:
            raise AccessDenied(REQUIRES_TRUSTED_DEVICE)
        return device
    raise AccessDenied(f"{REQUIRES_TRUSTED_DEVICE} (unknown device_trust.mode {mode!r})")


def _trusted_device(
    cert: x509.Certificate | None, ca: x509.Certificate, now: datetime.datetime | None
) -> DeviceExtensions | None:
    if cert is None:
        return None
    if not issued_by(cert, ca, now or datetime.datetime.now(datetime.UTC)):
        return None
    return device_extensions(cert)
