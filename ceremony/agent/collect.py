"""What a device reports about itself: its serial numbers, OS and login user.

Linux reads DMI from ``DEVTRUST_DMI_DIR`` (default ``/sys/class/dmi/id``) and
``/etc/os-release``; macOS and Windows run the platform's own commands, and their
outputs go through the pure parsers below, which are tested on recorded outputs.

The serial number a device enrolls under is the first real value of: the chassis asset
tag, the system (product) serial, the baseboard serial. Firmware fills unset fields with
placeholders ("Default string", "To Be Filled By O.E.M." ...); those do not count.
"""

from __future__ import annotations

import getpass
import json
import os
import platform
import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from ceremony.agent.errors import CollectError
from inventory.domain import CollectedData, OSType, is_placeholder_serial

DEFAULT_DMI_DIR = Path("/sys/class/dmi/id")
OS_RELEASE = Path("/etc/os-release")


def real_value(value: str | None) -> str | None:
    """``value`` stripped, or None when it is empty or a firmware placeholder."""
    if value is None:
        return None
    text = value.strip().strip("\x00").strip()
    return None if is_placeholder_serial(text) else text


def choose_serial(asset_tag: str | None, system: str | None, board: str | None) -> str:
    for candidate in (asset_tag, system, board):
        if (value := real_value(candidate)) is not None:
            return value
    raise CollectError(
        "this device reports no serial number: the chassis asset tag, system serial and "
        "baseboard serial are all empty or placeholders"
    )


# -- Linux ------------------------------------------------------------------------------


def read_dmi(dmi_dir: Path) -> dict[str, str | None]:
    """The DMI fields we use; unreadable ones (product_serial is root-only) are None."""
    out: dict[str, str | None] = {}
    unreadable: list[str] = []
    for name in ("chassis_asset_tag", "product_serial", "board_serial", "product_name"):
        try:
            out[name] = (dmi_dir / name).read_text(encoding="utf-8", errors="replace")
        except PermissionError:
            out[name] = None
            unreadable.append(name)
        except OSError:
            out[name] = None
    out["_unreadable"] = ",".join(unreadable) or None
    return out


def parse_os_release(text: str) -> dict[str, str]:
    """``/etc/os-release`` (shell-style KEY=value lines, values maybe quoted)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        raw = raw.strip()
        if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
            raw = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        values[key.strip()] = raw
    return values


def collect_linux(
    dmi_dir: Path = DEFAULT_DMI_DIR,
    os_release: Path = OS_RELEASE,
    user: str | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> CollectedData:
    if not dmi_dir.is_dir():
        # A VM or a container often has no DMI at all: say so, not "all placeholders".
        raise CollectError(
            f"this device reports no serial number: the DMI directory {dmi_dir} does not "
            "exist (a VM or container?); set DEVTRUST_DMI_DIR to a directory holding "
            "chassis_asset_tag, product_serial or board_serial"
        )
    dmi = read_dmi(dmi_dir)
    try:
        serial = choose_serial(dmi["chassis_asset_tag"], dmi["product_serial"], dmi["board_serial"])
    except CollectError as exc:
        if dmi["_unreadable"]:
            raise CollectError(
                f"{exc}; {dmi['_unreadable']} in {dmi_dir} could not be read: run as root "
                "(Linux keeps the serial numbers root-only)"
            ) from None
        raise
    try:
        release = parse_os_release(os_release.read_text(encoding="utf-8"))
    except OSError:
        release = {}
    return CollectedData(
        serial_number=serial,
        os_type=OSType.LINUX,
        model_identifier=real_value(dmi["product_name"]),
        os_version=release.get("VERSION_ID"),
        os_build=release.get("BUILD_ID") or platform.release(),
        os_id=release.get("ID"),
        os_login_user=user or _login_user(),
        reported_asset_tag=real_value(dmi["chassis_asset_tag"]),
        system_serial_number=real_value(dmi["product_serial"]),
        base_board_serial_number=real_value(dmi["board_serial"]),
        collect_time=now(),
    )


def _login_user() -> str | None:
    for name in ("SUDO_USER", "LOGNAME", "USER"):
        if value := os.environ.get(name):
            return value
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


# -- macOS: ioreg, sw_vers, jamf ----------------------------------------------------------

_IOREG_STRING = re.compile(r'"(?P<key>[^"]+)"\s*=\s*"(?P<value>[^"]*)"')
_IOREG_DATA = re.compile(r'"(?P<key>[^"]+)"\s*=\s*<"(?P<value>[^"]*)">')


def parse_ioreg(text: str) -> dict[str, str]:
    """``ioreg -c IOPlatformExpertDevice -d 2``: string and data-string properties."""
    values: dict[str, str] = {}
    for pattern in (_IOREG_STRING, _IOREG_DATA):
        for match in pattern.finditer(text):
            values.setdefault(match["key"], match["value"])
    return values


def parse_sw_vers(text: str) -> dict[str, str]:
    """``sw_vers``: ``ProductName:\\tmacOS`` lines."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            values[key.strip()] = value.strip()
    return values


def parse_jamf_version(text: str) -> str | None:
    """``jamf version`` prints ``version=11.4.1-t1712591696``."""
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "version" and value.strip():
            return value.strip()
    return None


def macos_data(
    ioreg: str, sw_vers: str, jamf_version: str | None, user: str | None, now: datetime
) -> CollectedData:
    platform_info = parse_ioreg(ioreg)
    versions = parse_sw_vers(sw_vers)
    serial = real_value(platform_info.get("IOPlatformSerialNumber"))
    if serial is None:
        raise CollectError("ioreg reports no IOPlatformSerialNumber for this Mac")
    return CollectedData(
        serial_number=serial,
        os_type=OSType.MACOS,
        model_identifier=platform_info.get("model"),
        os_version=versions.get("ProductVersion"),
        os_build=versions.get("BuildVersion"),
        os_id=versions.get("ProductName"),
        os_login_user=user,
        jamf_binary_version=parse_jamf_version(jamf_version) if jamf_version else None,
        system_serial_number=serial,
        collect_time=now,
    )


# -- Windows: one PowerShell call, CIM classes as JSON -----------------------------------

WINDOWS_QUERY = (
    "@{bios=(Get-CimInstance Win32_BIOS | Select SerialNumber);"
    "enclosure=(Get-CimInstance Win32_SystemEnclosure | Select SMBIOSAssetTag);"
    "board=(Get-CimInstance Win32_BaseBoard | Select SerialNumber);"
    "os=(Get-CimInstance Win32_OperatingSystem | Select Version,BuildNumber,Caption);"
    "system=(Get-CimInstance Win32_ComputerSystem | Select Model,UserName)} | ConvertTo-Json"
)


def windows_data(cim_json: str, now: datetime) -> CollectedData:
    try:
        cim = json.loads(cim_json)
    except ValueError:
        raise CollectError("PowerShell's CIM output is not JSON") from None
    if not isinstance(cim, dict):
        raise CollectError("PowerShell's CIM output is not a JSON object")

    def field(section: str, key: str) -> str | None:
        value = cim.get(section)
        if isinstance(value, list):  # one entry per enclosure or board
            value = value[0] if value else None
        raw = value.get(key) if isinstance(value, Mapping) else None
        return raw if isinstance(raw, str) else None

    asset_tag = field("enclosure", "SMBIOSAssetTag")
    system = field("bios", "SerialNumber")
    board = field("board", "SerialNumber")
    user = field("system", "UserName")
    return CollectedData(
        serial_number=choose_serial(asset_tag, system, board),
        os_type=OSType.WINDOWS,
        model_identifier=real_value(field("system", "Model")),
        os_version=field("os", "Version"),
        os_build=field("os", "BuildNumber"),
        os_id=field("os", "Caption"),
        os_login_user=user.split("\\")[-1] if user else None,
        reported_asset_tag=real_value(asset_tag),
        system_serial_number=real_value(system),
        base_board_serial_number=real_value(board),
        collect_time=now,
    )


# -- this machine -------------------------------------------------------------------------


def _run(argv: Sequence[str]) -> str:
    try:
        return subprocess.run(
            list(argv), capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except FileNotFoundError:
        raise CollectError(f"{argv[0]} is not installed on this device") from None
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise CollectError(f"{argv[0]} failed: {exc}") from None


def collect(dmi_dir: Path | None = None) -> CollectedData:
    """Collect this device's data on Linux, macOS or Windows."""
    now = datetime.now(UTC)
    system = platform.system()
    if system == "Linux":
        return collect_linux(dmi_dir or DEFAULT_DMI_DIR)
    if system == "Darwin":
        jamf = Path("/usr/local/jamf/bin/jamf")
        return macos_data(
            _run(["ioreg", "-c", "IOPlatformExpertDevice", "-d", "2"]),
            _run(["sw_vers"]),
            _run([str(jamf), "version"]) if jamf.exists() else None,
            _login_user(),
            now,
        )
    if system == "Windows":
        return windows_data(_run(["powershell", "-NoProfile", "-Command", WINDOWS_QUERY]), now)
    raise CollectError(f"devtrust cannot collect device data on {system}")
