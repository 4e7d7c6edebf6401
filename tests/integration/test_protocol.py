"""The protocol as others speak it: the OpenAPI document names every base64 field's structure,
framing and size; the README's tpm2-tools walkthrough enrolls a device against swtpm and
``devtrust serve``; go-attestation's bare structures enroll; a size-prefix mistake, a
creation attestation of a wrong magic or type are refused saying so; and an EK certificate
marked RSAES-OAEP enrolls.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa as rsa_keys

from ceremony.agent.tpm import DeviceTPM
from ceremony.attestation.ek_cert import MAX_CERTIFICATE
from ceremony.attestation.framing import MAX_STRUCTURE
from ceremony.attestation.macos import MAX_KEY_BYTES, MAX_SIGNATURE_BYTES
from ceremony.attestation.tpm_verify import ek_public_key
from ceremony.fields import MAX_BLOB_BYTES, MAX_DIGEST, base64_chars
from inventory.db import Database
from inventory.domain import AttestationType, EnrollStatus, OSType, Role
from inventory.services import devices, tokens, users
from tests.ceremony import World
from tests.integration.test_ceremony_refusals import (
    COMPLETE,
    INIT,
    Agent,
    allow_cas,
    answer,
    assert_audited,
    assert_enrolled_with,
    assert_not_enrolled,
    begin,
    enroll,
    init_body,
    linux,  # noqa: F401 - the fixture
    post,
    refused,
    rsa,  # noqa: F401 - the fixture
)
from tests.processes import DEVTRUST, free_port, started
from tests.unit.test_framing import ca, oaep_ek_certificate

pytestmark = pytest.mark.swtpm

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "tpm2-tools-enroll.sh"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- devtrust serve, as users run it ----------------------------------------------------


@dataclass(frozen=True)
class Served:
    url: str
    db: Database


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp("serve")
    db_url = f"sqlite:///{directory / 'devtrust.db'}"
    db = Database.connect(db_url)  # migrated before the service opens it
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DEVTRUST_")}
    env = {**clean, "DEVTRUST_DATA_DIR": str(directory), "DEVTRUST_DATABASE_URL": db_url}
    try:
        with started([DEVTRUST, "serve", "--port", str(port)], env, "serve") as server:
            server.wait_for("Uvicorn running", timeout=30)
            yield Served(f"http://127.0.0.1:{port}", db)
    finally:
        db.close()


# What each base64 field carries, by its place in the document.
EXPECTED = {
    "AuthInit.user_public_key": ("SubjectPublicKeyInfo", MAX_BLOB_BYTES),
    "MacOSChallenge.challenge": ("random bytes", MAX_DIGEST),
    "MacOSKey.public_key": ("SubjectPublicKeyInfo", MAX_KEY_BYTES),
    "MacOSResponse.signature": ("ECDSA-Sig-Value", MAX_SIGNATURE_BYTES),
    "Quote.attestation": ("TPM2B_ATTEST", MAX_STRUCTURE),
    "Quote.signature": ("TPMT_SIGNATURE", MAX_STRUCTURE),
    "Quote.pcr_values{}": ("TPM2B_DIGEST contents", MAX_DIGEST),
    "QuoteChallenge.nonce": ("TPM2B_DATA contents", MAX_DIGEST),
    "TPMAttestation.ek_cert": ("EK certificate (X.509 DER)", MAX_CERTIFICATE),
    "TPMAttestation.ek_public": ("TPM2B_PUBLIC", MAX_STRUCTURE),
    "TPMAttestation.ek_intermediates[]": ("X.509 certificate", MAX_CERTIFICATE),
    "TPMAttestation.ak_public": ("TPM2B_PUBLIC", MAX_STRUCTURE),
    "TPMAttestation.creation_data": ("TPM2B_CREATION_DATA", MAX_STRUCTURE),
    "TPMAttestation.creation_attestation": ("TPM2B_ATTEST", MAX_STRUCTURE),
    "TPMAttestation.creation_signature": ("TPMT_SIGNATURE", MAX_STRUCTURE),
    "TPMChallenge.credential_blob": ("TPM2B_ID_OBJECT", MAX_STRUCTURE),
    "TPMChallenge.encrypted_secret": ("TPM2B_ENCRYPTED_SECRET", MAX_STRUCTURE),
    "TPMChallenge.nonce": ("TPM2B_DATA contents", MAX_DIGEST),
    "TPMResponse.activated_secret": ("TPM2B_DIGEST contents", MAX_DIGEST),
}
BARE = {"TPM2B_PUBLIC": "TPMT_PUBLIC", "TPM2B_CREATION_DATA": "TPMS_CREATION_DATA",
        "TPM2B_ATTEST": "TPMS_ATTEST"}  # fmt: skip


def base64_fields(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every string schema with contentEncoding base64, by model.property (``[]`` for an
    array's items, ``{}`` for an object's values), wherever it sits in the document."""
    found: dict[str, dict[str, Any]] = {}

    def walk(node: Any, place: str) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item, place)
        if not isinstance(node, dict):
            return
        if node.get("contentEncoding") == "base64":
            assert place not in found, f"two base64 schemas at {place}"
            found[place] = node
            return
        for key, value in node.items():
            if key == "properties":
                for name, schema in value.items():
                    walk(schema, f"{place}.{name}")
            elif key == "items":
                walk(value, f"{place}[]")
            elif key in ("patternProperties", "additionalProperties") and isinstance(value, dict):
                for schema in value.values() if key == "patternProperties" else [value]:
                    walk(schema, f"{place}{{}}")
            else:
                walk(value, place)

    for name, schema in spec["components"]["schemas"].items():
        walk(schema, name)
    for path, operations in spec["paths"].items():
        walk(operations, path)  # inline schemas too, should any appear
    return found


def test_openapi_names_every_base64_fields_structure_framing_and_size(served: Served) -> None:
    spec = httpx.get(f"{served.url}/openapi.json", timeout=10).json()
    fields = base64_fields(spec)
    assert set(fields) == set(EXPECTED)
    for place, schema in fields.items():
        structure, limit = EXPECTED[place]
        assert schema["x-tpm-structure"] == structure, place
        assert schema["x-max-bytes"] == limit, place
        assert schema["maxLength"] == base64_chars(limit), place
        assert schema["x-framing"], place
        assert f"{structure}, {schema['x-framing']}; at most {limit} bytes" == schema[
            "description"
        ], place
        if structure in BARE:
            assert f"size-prefixed ({structure}" in schema["x-framing"], place
            assert f"bare ({BARE[structure]}" in schema["x-framing"], place


def test_a_field_over_its_size_limit_is_refused_as_the_document_says(served: Served) -> None:
    body = {"challenge_id": "x", "tpm": {"activated_secret": _b64(bytes(MAX_DIGEST + 1)),
            "quotes": []}}  # fmt: skip
    response = httpx.post(
        f"{served.url}{COMPLETE}", json=body, headers={"Authorization": "Bearer x"}, timeout=10
    )
    assert (response.status_code, response.json()) == (
        400, {"error": f"tpm.activated_secret: is more than {MAX_DIGEST} bytes"}
    )  # fmt: skip


# -- the README's tpm2-tools walkthrough ------------------------------------------------


def test_the_readme_shows_the_walkthrough_script_as_it_is() -> None:
    readme = (ROOT / "README.md").read_text()
    assert f"```sh\n{SCRIPT.read_text()}```\n" in readme
    protocol = readme.split("\n## Protocol\n", 1)[1].split("\n## ", 1)[0]
    assert SCRIPT.read_text() in protocol


def test_the_readme_walkthrough_enrolls_a_device_with_tpm2_tools(
    served: Served,
    rsa: Agent,  # noqa: F811 - the fixture
) -> None:
    for tool in ("tpm2_createek", "tpm2_certifycreation", "tpm2_quote", "jq", "curl"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run `make system`", pytrace=False)
    db, tag = served.db, "LNX-TOOLS-0001"
    _, credential = users.add_user(db.uow(), "tess", (Role.ACCESS,), actor="admin")
    devices.register_device(db.uow(), os_type=OSType.LINUX, asset_tag=tag, actor="admin")
    token = tokens.create_token(db.uow(), tag, actor="admin").token
    allow_cas(db, rsa.tpm.ca_cert_pem.decode())
    env = {**os.environ, "DEVTRUST_API_URL": served.url, "DEVTRUST_USER_TOKEN": credential,
           "ENROLL_TOKEN": token, "ASSET_TAG": tag, "TPM2TOOLS_TCTI": rsa.tpm.tcti}  # fmt: skip
    result = subprocess.run(
        ["sh", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    printed = json.loads(result.stdout)
    assert (printed["asset_tag"], printed["enroll_status"], printed["owner"]) == (
        tag, "enrolled", "tess"
    )  # fmt: skip
    device = devices.get_device(db.uow(), tag, os_type=OSType.LINUX)
    assert device.enroll_status is EnrollStatus.ENROLLED
    assert device.credential is not None
    assert device.credential.attestation_type is AttestationType.TPM_EKCERT_TRUSTED
    # The AK's public area tpm2-tools wrote, kept as sent: a TPM2B_PUBLIC.
    public = device.credential.public_key
    assert public is not None and int.from_bytes(public[:2], "big") == len(public) - 2


# -- go-attestation's framing, size-prefix mistakes, wrong creation attestations -------


def test_an_enrollment_with_go_attestations_bare_structures_succeeds(
    linux: World,  # noqa: F811 - the fixture
    rsa: Agent,  # noqa: F811 - the fixture
) -> None:
    ak = rsa.ak
    challenge = begin(
        linux,
        rsa,
        ek_public=rsa.ek_public[2:],
        ak_public=ak.public[2:],
        creation_data=ak.creation_data[2:],
        creation_attestation=ak.creation_attestation[2:],
    )
    body = answer(rsa, challenge)
    for quote in body["tpm"]["quotes"]:
        quote["attestation"] = _b64(base64.b64decode(quote["attestation"])[2:])
    response = post(linux, COMPLETE, body)
    assert response.status_code == 200, response.text
    assert response.json()["device"]["enroll_status"] == "enrolled"
    assert_enrolled_with(linux, ak.public)  # kept size-prefixed, as the agent sends it


def test_a_size_prefix_mistake_is_refused_saying_a_prefix_was_expected(
    linux: World,  # noqa: F811 - the fixture
    rsa: Agent,  # noqa: F811 - the fixture
) -> None:
    attest = rsa.ak.creation_attestation[2:]
    little_endian = len(attest).to_bytes(2, "little") + attest
    response = post(linux, INIT, init_body(linux, rsa, creation_attestation=little_endian))
    said = int.from_bytes(little_endian[:2], "big")
    reason = refused(response, 403, re.escape(
        "the AK creation attestation is truncated or not size-prefixed: expected a 2-byte size "
        f"prefix (TPM2B_ATTEST) or a bare TPMS_ATTEST; its first 2 bytes say {said} bytes "
        f"follow, {len(attest)} do"
    ))  # fmt: skip
    assert_not_enrolled(linux)
    assert_audited(linux, re.escape(reason))
    enroll(linux, rsa)


def test_a_creation_attestation_a_tpm_did_not_make_is_refused(
    linux: World,  # noqa: F811 - the fixture
    rsa: Agent,  # noqa: F811 - the fixture
) -> None:
    forged = bytearray(rsa.ak.creation_attestation)
    forged[2:6] = b"\x00\x54\x43\x47"
    response = post(linux, INIT, init_body(linux, rsa, creation_attestation=bytes(forged)))
    refused(response, 403, r"^the AK creation attestation was not generated by a TPM "
            r"\(magic 0x544347\)$")  # fmt: skip
    assert_not_enrolled(linux)
    assert_audited(linux, "not generated by a TPM")


def test_a_quote_passed_off_as_the_creation_attestation_is_refused(
    linux: World,  # noqa: F811 - the fixture
    rsa: Agent,  # noqa: F811 - the fixture
) -> None:
    # Signed by the AK itself, by the TPM: only its type (TPM_ST_ATTEST_QUOTE) is wrong.
    with DeviceTPM(rsa.tpm.tcti, ek=rsa.tpm.ek) as device:
        quote = device.quote(rsa.ak, b"q" * 32, [0])
    body = init_body(
        linux, rsa, creation_attestation=quote.attestation, creation_signature=quote.signature
    )
    refused(post(linux, INIT, body), 403,
            "^the AK creation attestation is not a creation certification$")  # fmt: skip
    assert_not_enrolled(linux)
    assert_audited(linux, "is not a creation certification")


# -- an EK certificate marked RSAES-OAEP ------------------------------------------------


def test_an_ek_certificate_marked_rsaes_oaep_enrolls_trusted(
    linux: World,  # noqa: F811 - the fixture
    rsa: Agent,  # noqa: F811 - the fixture
) -> None:
    # swtpm's own RSA EK, certified by a test CA the way Infineon marks its EK keys.
    ek = ek_public_key(rsa.ek_public)
    assert isinstance(ek, rsa_keys.RSAPublicKey)
    issuer_key, issuer = ca()
    cert = oaep_ek_certificate(ek, issuer_key, issuer)
    allow_cas(linux.db, issuer.public_bytes(serialization.Encoding.PEM).decode())
    device = enroll(linux, rsa, ek_cert=cert)
    assert device["credential"]["attestation_type"] == "tpm_ekcert_trusted"
    assert device["credential"]["ek_cert_serial"] == "ec0a3"
