"""Device data collection: DMI trees of our own, and recorded macOS and Windows outputs."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ceremony.agent.collect import (
    choose_serial,
    collect_linux,
    macos_data,
    parse_os_release,
    real_value,
    windows_data,
)
from ceremony.agent.errors import CollectError
from inventory.domain import OSType

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

OS_RELEASE = """PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
ID=debian
# a comment
HOME_URL="https://www.debian.org/"
"""


def dmi_tree(tmp_path: Path, **fields: str) -> Path:
    root = tmp_path / "dmi"
    root.mkdir()
    for name, value in fields.items():
        (root / name).write_text(value + "\n")
    return root


def os_release(tmp_path: Path) -> Path:
    path = tmp_path / "os-release"
    path.write_text(OS_RELEASE)
    return path


@pytest.mark.parametrize(
    ("asset_tag", "system", "board", "expected"),
    [
        ("ASSET-42", "SYS123", "BRD456", "ASSET-42"),
        ("Default string", "SYS123", "BRD456", "SYS123"),
        ("To Be Filled By O.E.M.", " ", "BRD456", "BRD456"),
        ("", "0000000000", "PF2ABCDE", "PF2ABCDE"),
    ],
)
def test_the_first_real_serial_wins(asset_tag: str, system: str, board: str, expected: str) -> None:
    assert choose_serial(asset_tag, system, board) == expected


def test_placeholders_are_not_values() -> None:
    for placeholder in ("Default string", "to be filled by o.e.m.", "Not Specified", "0", "\x00"):
        assert real_value(placeholder) is None
    assert real_value("  C02XYZ  ") == "C02XYZ"


def test_linux_reads_dmi_os_release_and_user(tmp_path: Path) -> None:
    dmi = dmi_tree(
        tmp_path,
        chassis_asset_tag="Default string",
        product_serial="LNX-4C4C4544",
        board_serial="/BRD/123/",
        product_name="ThinkPad X1 Carbon",
    )
    data = collect_linux(dmi, os_release(tmp_path), user="alice", now=lambda: NOW)
    assert data.serial_number == "LNX-4C4C4544" and data.os_type is OSType.LINUX
    assert (data.reported_asset_tag, data.system_serial_number, data.base_board_serial_number) == (
        None,
        "LNX-4C4C4544",
        "/BRD/123/",
    )
    assert (data.os_id, data.os_version, data.model_identifier) == (
        "debian",
        "12",
        "ThinkPad X1 Carbon",
    )
    assert data.os_login_user == "alice" and data.collect_time == NOW


def test_a_machine_with_no_serial_gets_a_clear_error(tmp_path: Path) -> None:
    dmi = dmi_tree(tmp_path, chassis_asset_tag="Default string", product_serial="None")
    with pytest.raises(CollectError, match="reports no serial number"):
        collect_linux(dmi, os_release(tmp_path), user="alice")


def test_a_machine_without_a_dmi_directory_is_told_so_and_the_setting_named(
    tmp_path: Path,
) -> None:
    """A VM or container: no /sys/class/dmi/id at all, not "placeholders"."""
    missing = tmp_path / "no-dmi"
    with pytest.raises(CollectError) as refused:
        collect_linux(missing, os_release(tmp_path), user="alice")
    message = str(refused.value)
    assert f"the DMI directory {missing} does not exist" in message
    assert "DEVTRUST_DMI_DIR" in message
    assert "placeholders" not in message


def test_os_release_quoting() -> None:
    values = parse_os_release(OS_RELEASE + 'VARIANT=\'Server Edition\'\nBUILD_ID="a \\"b\\""\n')
    assert values["PRETTY_NAME"] == "Debian GNU/Linux 12 (bookworm)"
    assert values["VARIANT"] == "Server Edition" and values["BUILD_ID"] == 'a "b"'


IOREG = """+-o Root  <class IORegistryEntry, id 0x100000100, retain 29>
  +-o MacBookPro18,3  <class IOPlatformExpertDevice, id 0x10000020f, registered>
      {
        "IOPolledInterface" = "AppleARMWatchdogTimerHibernateHandler is not serializable"
        "model" = <"MacBookPro18,3">
        "IOPlatformUUID" = "8A0B0C0D-1E2F-3A4B-5C6D-7E8F9A0B1C2D"
        "IOPlatformSerialNumber" = "C02ZX1YJMD6T"
        "manufacturer" = <"Apple Inc.">
      }
"""
SW_VERS = "ProductName:\t\tmacOS\nProductVersion:\t\t14.4.1\nBuildVersion:\t\t23E224\n"


def test_macos_from_ioreg_sw_vers_and_jamf() -> None:
    data = macos_data(IOREG, SW_VERS, "version=11.4.1-t1712591696\n", "bob", NOW)
    assert data.serial_number == "C02ZX1YJMD6T" and data.os_type is OSType.MACOS
    assert (data.model_identifier, data.os_version, data.os_build) == (
        "MacBookPro18,3",
        "14.4.1",
        "23E224",
    )
    assert data.jamf_binary_version == "11.4.1-t1712591696" and data.os_login_user == "bob"
    with pytest.raises(CollectError, match="no IOPlatformSerialNumber"):
        macos_data(IOREG.replace("C02ZX1YJMD6T", ""), SW_VERS, None, "bob", NOW)


WINDOWS = {
    "bios": {"SerialNumber": "PF2ABCDE"},
    "enclosure": [{"SMBIOSAssetTag": "No Asset Tag"}],
    "board": {"SerialNumber": "L1HF12345"},
    "os": {"Version": "10.0.22631", "BuildNumber": "22631", "Caption": "Microsoft Windows 11 Pro"},
    "system": {"Model": "20XW0055US", "UserName": "CORP\\carol"},
}


def test_windows_from_cim_json() -> None:
    data = windows_data(json.dumps(WINDOWS), NOW)
    assert data.serial_number == "PF2ABCDE" and data.os_type is OSType.WINDOWS
    assert data.reported_asset_tag is None and data.base_board_serial_number == "L1HF12345"
    assert (data.os_version, data.os_build, data.os_login_user) == ("10.0.22631", "22631", "carol")
    with pytest.raises(CollectError, match="not JSON"):
        windows_data("<html>", NOW)
