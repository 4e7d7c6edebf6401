"""``devtrust device enroll`` end to end: the real CLI against ``devtrust serve``, with swtpm.

Everything runs as a user would run it, in subprocesses: the admin adds a user and a
device and mints a token; the device agent, with its own data directory, DMI tree and
TPM, enrolls; the admin then sees the device enrolled. Refusals are one line on stderr.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.processes import DEVTRUST, free_port, started
from tests.tpm import SwTPM, swtpm

pytestmark = pytest.mark.swtpm

TOKEN_LINE = re.compile(r"devtrust device enroll --token=(\S+)")


@dataclass
class Site:
    server_env: dict[str, str]
    agent_env: dict[str, str]
    dmi: Path

    def admin(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return _run(argv, self.server_env)

    def agent(self, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
        return _run(argv, {**self.agent_env, **env})

    def device_serial(self, serial: str) -> None:
        (self.dmi / "product_serial").write_text(f"{serial}\n")

    def new_user(self, name: str, roles: str) -> str:
        added = self.admin("users", "add", name, "--roles", roles, "--format", "json")
        assert added.returncode == 0, added.stderr
        return str(json.loads(added.stdout)["token"])

    def new_device(self, serial: str) -> str:
        added = self.admin("devices", "add", "--os", "linux", "--asset-tag", serial, "--enroll")
        assert added.returncode == 0, added.stderr
        match = TOKEN_LINE.search(added.stdout)
        assert match, added.stdout
        return match.group(1)

    def device(self, serial: str) -> dict[str, object]:
        shown = self.admin("devices", "get", serial, "--format", "json")
        assert shown.returncode == 0, shown.stderr
        return json.loads(shown.stdout)  # type: ignore[no-any-return]


def _run(argv: tuple[str, ...], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DEVTRUST, *argv], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def tpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwTPM]:
    with swtpm(tmp_path_factory.mktemp("tpm")) as running:
        yield running


@pytest.fixture
def site(tmp_path: Path, tpm: SwTPM) -> Iterator[Site]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DEVTRUST_")}
    server_env = {**clean, "DEVTRUST_DATA_DIR": str(tmp_path / "server")}
    port = free_port()
    dmi = tmp_path / "dmi"
    dmi.mkdir()
    (dmi / "product_name").write_text("ThinkPad X1 Carbon\n")
    agent_env = {
        **clean,
        "DEVTRUST_DATA_DIR": str(tmp_path / "agent"),
        "DEVTRUST_API_URL": f"http://127.0.0.1:{port}",
        "DEVTRUST_TPM_TCTI": tpm.tcti,
        "DEVTRUST_DMI_DIR": str(dmi),
    }
    argv = [DEVTRUST, "serve", "--port", str(port)]
    with started(argv, server_env, "serve") as server:
        server.wait_for("Uvicorn running", timeout=30)
        yield Site(server_env, agent_env, dmi)


def test_a_device_enrolls_with_an_admin_token_and_the_token_is_then_spent(site: Site) -> None:
    credential = site.new_user("alice", "access")
    token = site.new_device("LNX-E2E-0001")
    site.device_serial("LNX-E2E-0001")

    enrolled = site.agent("device", "enroll", "--token", token, DEVTRUST_USER_TOKEN=credential)
    assert enrolled.returncode == 0, enrolled.stderr
    assert enrolled.stdout == "Device LNX-E2E-0001/Linux enrolled\n"
    device = site.device("LNX-E2E-0001")
    assert device["enroll_status"] == "enrolled" and device["owner"] == "alice"
    assert device["credential"]["attestation_type"] == "tpm_ekcert"  # type: ignore[index]

    again = site.agent("device", "enroll", "--token", token, DEVTRUST_USER_TOKEN=credential)
    assert _one_error_line(again) == "error: enrollment token was already used"


def test_an_editor_enrolls_the_current_device_and_an_access_user_may_not(site: Site) -> None:
    editor = site.new_user("erin", "editor")
    viewer = site.new_user("victor", "access")
    site.device_serial("LNX-E2E-0002")

    refused = site.agent("device", "enroll", "--current-device", DEVTRUST_USER_TOKEN=viewer)
    assert "requires the editor or device-admin role" in _one_error_line(refused)
    assert site.admin("devices", "get", "LNX-E2E-0002").returncode != 0  # not registered

    enrolled = site.agent("device", "enroll", "--current-device", DEVTRUST_USER_TOKEN=editor)
    assert enrolled.returncode == 0, enrolled.stderr
    assert enrolled.stdout == "Device LNX-E2E-0002/Linux enrolled\n"
    assert site.device("LNX-E2E-0002")["owner"] == "erin"


def test_a_token_for_another_device_is_refused_and_stays_usable(site: Site) -> None:
    credential = site.new_user("alice", "access")
    token = site.new_device("LNX-E2E-0003")
    site.device_serial("LNX-E2E-9999")

    refused = site.agent("device", "enroll", "--token", token, DEVTRUST_USER_TOKEN=credential)
    assert _one_error_line(refused) == (
        "error: the enrollment token is for device LNX-E2E-0003/Linux, "
        "but this device reports LNX-E2E-9999/Linux"
    )
    site.device_serial("LNX-E2E-0003")
    enrolled = site.agent("device", "enroll", "--token", token, DEVTRUST_USER_TOKEN=credential)
    assert enrolled.returncode == 0, enrolled.stderr


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ((), {}, "give either --token or --current-device"),
        (("--token", "t", "--current-device"), {}, "give either --token or --current-device"),
        (("--token", "t"), {"DEVTRUST_USER_TOKEN": ""}, "set DEVTRUST_USER_TOKEN"),
        (("--token", "t"), {"DEVTRUST_USER_TOKEN": "nope"}, "invalid user credential"),
        (
            ("--token", "t"),
            {"DEVTRUST_USER_TOKEN": "x", "DEVTRUST_API_URL": f"http://127.0.0.1:{free_port()}"},
            "cannot reach the devtrust service at http://127.0.0.1:",
        ),
    ],
)
def test_bad_invocations_get_one_line(
    site: Site, argv: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    site.device_serial("LNX-E2E-0004")
    result = site.agent("device", "enroll", *argv, **env)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr


# Opening the TPM: what the agent says before anything reaches the service


def _agent_without_server(tmp_path: Path, tcti: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DEVTRUST_")}
    dmi = tmp_path / "dmi"
    dmi.mkdir()
    (dmi / "product_serial").write_text("LNX-E2E-0005\n")
    return {
        **clean,
        "DEVTRUST_DATA_DIR": str(tmp_path / "agent"),
        "DEVTRUST_API_URL": f"http://127.0.0.1:{free_port()}",
        "DEVTRUST_TPM_TCTI": tcti,
        "DEVTRUST_DMI_DIR": str(dmi),
        "DEVTRUST_USER_TOKEN": "x",
    }


def test_a_machine_without_the_tpm_device_is_told_so(tmp_path: Path) -> None:
    missing = tmp_path / "tpmrm0"
    result = _run(
        ("device", "enroll", "--token", "t"), _agent_without_server(tmp_path, f"device:{missing}")
    )
    assert _one_error_line(result) == (
        f"error: no TPM at {missing}: this machine has no TPM 2.0, or it is turned off in the "
        "firmware; DEVTRUST_TPM_TCTI names another (e.g. swtpm:port=2321)"
    )


def test_a_tpm_device_the_user_may_not_open_points_at_the_tss_group(tmp_path: Path) -> None:
    device = tmp_path / "tpmrm0"
    device.write_bytes(b"")
    device.chmod(0)
    argv = [DEVTRUST, "device", "enroll", "--token", "t"]
    if os.geteuid() == 0:
        # root opens anything: run the agent as root without the capabilities that let it,
        # as a user outside the tss group is
        argv = ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--", *argv]
    env = _agent_without_server(tmp_path, f"device:{device}")
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert _one_error_line(result) == (
        f"error: permission denied opening {device}: add your user to the `tss` group "
        "(or install udev rules that grant access to the TPM) and log in again"
    )
