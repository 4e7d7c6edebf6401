"""What an admin sees of trust levels: ``devices ls``/``get`` (text, JSON, YAML) show each
enrolled device's level, and ``device_trust.min_attestation`` is set and validated through
``config set`` and ``config edit``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ceremony.agent.enroll import wire_collected
from ceremony.agent.softkey import SoftwareEnclaveKey
from ceremony.enroll import EnrollmentCeremony
from ceremony.protocol import EnrollComplete, EnrollInit, MacOSKey, MacOSResponse
from inventory.db import Database
from inventory.domain import CollectedData, OSType, Role
from inventory.services import devices, tokens, users
from tests.cli import TAG, Cli, both_ways, ok, preference, table
from tests.integration.test_cli_users_config import editor, replace_in_file


def enroll_a_mac(db: Database, key_dir: Path) -> None:
    """``TAG``, a Mac, enrolled with its software key: the software_key level."""
    _, credential = users.add_user(db.uow(), "alice", (Role.ACCESS,), actor="admin")
    devices.register_device(db.uow(), os_type=OSType.MACOS, asset_tag=TAG, actor="admin")
    token = tokens.create_token(db.uow(), TAG, actor="admin").token
    key = SoftwareEnclaveKey.load_or_create(key_dir)
    ceremony = EnrollmentCeremony(db)
    sent = CollectedData(serial_number=TAG, os_type=OSType.MACOS, os_login_user="alice")
    request = EnrollInit(
        token=token, collected=wire_collected(sent), macos=MacOSKey(public_key=key.public_key_der())
    )
    challenge = ceremony.begin(credential, request)
    assert challenge.macos is not None
    signature = key.sign(challenge.macos.challenge)
    ceremony.complete(
        credential,
        EnrollComplete(
            challenge_id=challenge.challenge_id, macos=MacOSResponse(signature=signature)
        ),
    )


@both_ways
def test_devices_ls_and_get_show_the_trust_level_of_enrolled_devices(
    cli: Cli, db: Database, tmp_path: Path
) -> None:
    enroll_a_mac(db, tmp_path)
    devices.register_device(db.uow(), os_type=OSType.LINUX, asset_tag="LNX-NEW", actor="admin")

    _, rows = table(ok(cli("devices", "ls")).out)
    levels = {row["Asset Tag"]: row["Trust Level"] for row in rows}
    assert levels == {TAG: "software_key", "LNX-NEW": "-"}
    listed = {
        d["asset_tag"]: d for d in json.loads(ok(cli("devices", "ls", "--format", "json")).out)
    }
    # Stored as attestation type none, as before; shown as its level.
    assert listed[TAG]["credential"]["attestation_type"] == "none"
    assert listed[TAG]["credential"]["trust_level"] == "software_key"
    assert listed["LNX-NEW"]["credential"] is None

    got = json.loads(ok(cli("devices", "get", TAG, "--format", "json")).out)
    assert got["credential"]["trust_level"] == "software_key"
    assert "trust_level: software_key" in ok(cli("devices", "get", TAG)).out
    assert (
        "credential.trust_level: software_key"
        in ok(cli("devices", "get", TAG, "--format", "text")).out
    )


@both_ways
def test_config_sets_min_attestation_and_refuses_a_bad_value_in_one_line(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert preference(cli)["spec"]["device_trust"]["min_attestation"] == "any"
    set_ = ok(cli("config", "set", "device_trust.min_attestation", "tpm_ekcert"))
    assert set_.out == "cluster_auth_preference updated: device_trust.min_attestation\n"
    assert preference(cli)["spec"]["device_trust"]["min_attestation"] == "tpm_ekcert"

    before = ok(cli("config", "show")).out
    refused = cli("config", "set", "device_trust.min_attestation", "hardware")
    assert refused.code != 0
    assert refused.error_line == (
        "error: invalid device_trust.min_attestation: 'hardware' is not one of any, "
        "software_key, tpm_ekpub, tpm_ekcert, tpm_ekcert_trusted"
    )
    editor(
        tmp_path,
        monkeypatch,
        replace_in_file("min_attestation: tpm_ekcert", "min_attestation: none"),
    )
    edit_refused = cli("config", "edit")
    assert edit_refused.code != 0
    assert (
        "invalid spec.device_trust.min_attestation: 'none' is not one of" in edit_refused.error_line
    )
    assert ok(cli("config", "show")).out == before

    editor(
        tmp_path,
        monkeypatch,
        replace_in_file("min_attestation: tpm_ekcert", "min_attestation: any"),
    )
    assert (
        ok(cli("config", "edit")).out
        == "cluster_auth_preference updated: device_trust.min_attestation\n"
    )
    assert preference(cli)["spec"]["device_trust"]["min_attestation"] == "any"
