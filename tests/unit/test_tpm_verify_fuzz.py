"""Random and mutated bytes into every TPM parser and verifier: only AttestationError comes out.

The structures below were produced once by swtpm through the device agent (an ECC P-256
AK, a quote of PCRs 0 and 7 with the nonce b"n" * 32, the P-384 and RSA-2048 EKs, the P-384
EK's certificate and its issuing CA, and a challenge made for them), so mutations start
from what a real TPM sends and reach the checks behind the parsers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ceremony.attestation.ek_cert import (
    ek_public_from_certificate,
    parse_ek_certificate,
    verify_ek_chain,
)
from ceremony.attestation.tpm_verify import (
    Challenge,
    EnrollmentRequest,
    attestation_type,
    challenge_ek,
    check_ak,
    ek_public_key,
    make_challenge,
    verify_activation,
    verify_quote,
)
from ceremony.errors import AttestationError

AK_PUBLIC = bytes.fromhex(
    "00580023000b00050072000000100018000b0003001000206606ccc93ed3e5528183a517362f049f5ecae9eb"
    "741426a9e88c102d2131963600202ce91d63f380275e802d7fd168701b44fda66764691c166722a26976dcfa"
    "71c4"
)

CREATION_DATA = bytes.fromhex(
    "0073000000000020e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85501000b00"
    "22000bcfe2cdfe7577427d469606e7ec37511f5401fc45c2123e05916029d7b2cd95cd0022000bb852e2ec05"
    "0a60b58d9814d05bd3c6aa519cef9c4c0108116ab96597824e8add0000"
)

CREATION_ATTESTATION = bytes.fromhex(
    "008bff544347801a0022000b1a32b41864e52368bcdc800a8bb9ef78e54415e7d8e5543f0ea918ef5b843f5d"
    "000000000000000001ec53d710879eb9f00d010ca353901701c9100022000bb0124b040ee8c504cbf075fd91"
    "ea333628f4b304a2aaee7f7e76b01fa43334dc0020fada9f3bcfa75a145f2fa46e1f82f61702530adef0e728"
    "63d418b568255f345d"
)

CREATION_SIGNATURE = bytes.fromhex(
    "0018000b0020c26389ac202046ca459e50784be11334c248d4606ec03038b795d5421baf60e60020aa204749"
    "1d8b3e5b6f7248ef3ace2dc7cf12c0b9b1a51735961db458feff4d23"
)

QUOTE = bytes.fromhex(
    "0091ff54434780180022000b1a32b41864e52368bcdc800a8bb9ef78e54415e7d8e5543f0ea918ef5b843f5d"
    "00206e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e00000000000001ef53d7"
    "10879eb9f00d010ca353901701c91000000001000b038100000020f5a5fd42d16a20302798ef6ed309979b43"
    "003d2320d9f0e8ea9831a92759fb4b"
)

QUOTE_SIGNATURE = bytes.fromhex(
    "0018000b0020155720d1a98c6167570731a5efb42abc8b126dc773955e88e05fba3680d397c80020948c2ff8"
    "64856ca39fae467e26e3a84216ff1b09001b8cbca3256fbbde7c2642"
)

EK_PUBLIC_ECC = bytes.fromhex(
    "00aa0023000c000300f20030b26e7d28d11a50bc53d882bcf5fd3a1a074148bb35d3b4e4cb1c0ad9bde419ca"
    "cb47ba09699646150f9fc000f3f80e120006010000430010000400100030026b7f63b869aff0e70c85c9c6f6"
    "288a591a27fbce92335940b0ab0cf44756b6df65f72d93bb8b63e9a7deb6fc625c750030c05563c34c943e46"
    "1455f54e43f19b13daa1cde7e9138b76e6083d8a06ee176cbcde6617a9ba2af780560c56d6c7f2ec"
)

EK_PUBLIC_RSA = bytes.fromhex(
    "013a0001000b000300b20020837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa"
    "00060080004300100800000000000100c1a94b828c6b7928a54ff7ff795e329496d63c034318ddccc6b783bf"
    "9999fae3b1a92fac54242d3e60a22b90d39e52450c84ae261a1a07117b43e39ea8e1ae9e6855a2a2b1073492"
    "8754a0dab5c96c6ed7ca9c5f39976fe34e9b4fd6c644aba419d7184f249a3f5c7a23ea0ab0ccdf5683a78d95"
    "ec7a264e582268a82368808605baae672dec3e3978627c0d98ad77ac0a411cf630e77beb17c0716ede02e561"
    "5414133630f3342123258817d3a8a350d927b5d91a1e8409b91ba51ac43126c81251dda92c4631c4c5ac335f"
    "e8066365a3d9caa72430b1bedc2c63a6cc2aab61c20bec944c73c493bc3c16cd56e0ed9b5d7372b4ab9c1d12"
    "ea9dc888b1762be9"
)

EK_CERT = bytes.fromhex(
    "30820346308201aea003020102020104300d06092a864886f70d01010b05003018311630140603550403130d"
    "737774706d2d6c6f63616c63613020170d3236313132363130353233385a180f393939393132333132333539"
    "35395a30123110300e06035504031307756e6b6e6f776e3076301006072a8648ce3d020106052b8104002203"
    "620004026b7f63b869aff0e70c85c9c6f6288a591a27fbce92335940b0ab0cf44756b6df65f72d93bb8b63e9"
    "a7deb6fc625c75c05563c34c943e461455f54e43f19b13daa1cde7e9138b76e6083d8a06ee176cbcde6617a9"
    "ba2af780560c56d6c7f2eca381cc3081c930100603551d25040930070605678105080130520603551d110101"
    "ff04483046a444304231163014060567810502010c0b69643a30303030313031343110300e06056781050202"
    "0c05737774706d31163014060567810502030c0b69643a3230313931303233300c0603551d130101ff040230"
    "0030220603551d09041b3019301706056781050210310e300c0c03322e30020100020200a4301f0603551d23"
    "041830168014da6246797695aad3ad70dbeac10f18ac2c099bdd300e0603551d0f0101ff040403020308300d"
    "06092a864886f70d01010b05000382018100183e21967fccf8abfeed1ec9ecc6b379c12211185b75274ce533"
    "820d690daf05c01b0afc15bb29ad208d273192d6998ebcf13e5802cf7b56c787e2258700d1ee059c0d6fceed"
    "fce5c741dd8b37a2154c0eaace0ec2f7cfab368342d52695315ca72a20d2420b5594a22f2bb3d79e7befcf8c"
    "930c74a186faaeb01142fef03fcb13cf4e1b16485d84991d23bc2592227a3ab81ce605bc6463df0bbf2c8dbf"
    "2e47a8a98b689b5bcfe22ea89d33b587ee3b760895c6ee130ce5afe0b902be7bcc1ee992514158cc9bc7ff91"
    "068c055a658c3f50890c8bc0b23a4507959e25700684c53b4767b80481bad463ae1702e68d67528346b7c85a"
    "714ab4b7b1c405662ed6dccb78a12edb9bc88f4a34d19d1866849e5f1f0903b3099fb741df9452bdc9706fcf"
    "07fd19742e38a26648eae67e3f3713d1b66239c83f2ef1af7a8ccdca7e9058050ac0825765757fabc637f403"
    "576181021877fb9b06e13333da4b58e53f3ae5b66d243adbad9c071d71c5ce4c6a605e044ee8e81e63a701ee"
    "bddc340c4c27"
)

CREDENTIAL_BLOB = bytes.fromhex(
    "005400301b05a221f400e1f9a1234fef19ab4707726e6d65f44fdc130f8a4b56ac25616ace10d88aa5730071"
    "a0780242fc797386023b7c27e062e7fe7063626d5aa26d03d9625b3407ce7702e694393db04172f445c5"
)

ENCRYPTED_SECRET = bytes.fromhex(
    "00640030e9ae8ea425b20987bf1c0299a8787b3914c62f290197ca3dbc94cbd9761e2ccb28c8e0890d5d5873"
    "cd0745fcecf9132700303cc097267aef21203b004eb24a267e910b360bfcaeba1a6171bd52be1b6751a0e728"
    "cad906541d11f10fd14b42218230"
)

ISSUER_PEM = b"""\
-----BEGIN CERTIFICATE-----
MIIEKjCCApKgAwIBAgIUcckyfaoz4fgz2hCxoXk+LgIJcegwDQYJKoZIhvcNAQEL
BQAwHzEdMBsGA1UEAxMUc3d0cG0tbG9jYWxjYS1yb290Y2EwIBcNMjYxMTI2MTA1
MjM4WhgPOTk5OTEyMzEyMzU5NTlaMBgxFjAUBgNVBAMTDXN3dHBtLWxvY2FsY2Ew
ggGiMA0GCSqGSIb3DQEBAQUAA4IBjwAwggGKAoIBgQDRoKvTM874HJoq0Wy+d/IP
qOfBNpHICo/Md9oF5X7sKPyg3K7Va0rxUWb7D94OZSoJuMpT6Rd5tI9K2xY4Ibgu
6+LCSwaaFW27yb3fdyFqoQ+eNnzPBXGBE3pTkxFrUxn7E52Vg2uld1QsTwhOx+tA
L94xrnsMjPAwVPB8HVXsU8qgVRusUIbaughjcTzz+rjIcTfzWalsl2iFuIFeWF9w
2nWp983NoIpf9sX/JE6dG5ZekHyygyU0T86lmaaAL3iJdjalpZ+nuEMDf0bXme3A
X3sFs3mgWe0k2NHjtvIRXlyLt8ZYnCwmsViL8u4kOKx3MhdhHimEX64gL+owgmig
mfViaqyQofX+W1VC7jj0/I3c6SO1zKabQqihnywFG+sJKUO7qOagzqiIxbGn4AmF
D998/2VDjjG+R8bwwX6HVtfQ/zGnee/vN/ce3mSjalI4H2nGd2Ml5Ya+Sa0DyRL+
Jp7gzVngG0TAcPrSKMy6int4ycBik/WntLrqv51AFf8CAwEAAaNjMGEwDwYDVR0T
AQH/BAUwAwEB/zAOBgNVHQ8BAf8EBAMCAgQwHQYDVR0OBBYEFNpiRnl2larTrXDb
6sEPGKwsCZvdMB8GA1UdIwQYMBaAFOLcHl3bOaCplbGwXxY6OTgsCjx5MA0GCSqG
SIb3DQEBCwUAA4IBgQBOAUEuOYIcf1JfLWY3QNyFhrMhJwApFj397KQ4TU9EhIZo
4YpCkIEXEivgsgnZ9m+NQPRzwxuB7VXVvHVyChR7jYd68hBbMjbdT0tVUC7hnOUw
hVut2wMzY4PK+PI/4c83RfMlQqjXgGsRnUVD84N7vxuqq+bt8BCGdxf7Fk12rZa9
Rld44xuIDRzTbiKDdNyx8piIGYnr5qyL8ASXLH9QG/mtV8uA5xZws+fC9IhF0mKD
54Ik64XlVa0Zssfq8Dl3qcnKoeo29zYtNjEwbd3DOBgwk5kBG0qPmmfiyJfg2e3S
9c6b5DM1zKuP3gFsV/2YN0MjROFxPXKXfDUuNv0NDUGiKAZLeMzkYCkfcB8yAkDd
URx+zyWshE4VhiKRh4jAd6Zw9qa57fjA6eOSL/RdJ8MFTNguAaY/abxRrjBxrMx3
WwZwcgG3V4b2GyFe+TeGFCwZ+YV7QCCQk3Tx9LeUJ3chggUhUp2tcFA+dnF0Fjd5
QK1rWt9wmB9PCKFvJwA=
-----END CERTIFICATE-----
"""

# Mutated certificates with a non-positive serial number make cryptography warn; they are
# still only refused or read, which is what these tests check.
pytestmark = pytest.mark.filterwarnings("ignore:Parsed a serial number:DeprecationWarning")

NONCE = b"n" * 32
PCR_VALUES = {0: bytes(32), 7: bytes(32)}
REQUEST = EnrollmentRequest(
    ek_cert=EK_CERT,
    ek_public=EK_PUBLIC_ECC,
    ak_public=AK_PUBLIC,
    creation_data=CREATION_DATA,
    creation_attestation=CREATION_ATTESTATION,
    creation_signature=CREATION_SIGNATURE,
)
SAMPLES = [getattr(REQUEST, f) for f in ("ek_cert", "ek_public", "ak_public")] + [
    CREATION_DATA, CREATION_ATTESTATION, CREATION_SIGNATURE, QUOTE, QUOTE_SIGNATURE,
    EK_PUBLIC_RSA, CREDENTIAL_BLOB, ENCRYPTED_SECRET,
]  # fmt: skip

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutated(draw: st.DrawFn, base: bytes | None = None) -> bytes:
    """A real structure with a few bytes flipped, inserted, deleted, cut or appended."""
    data = bytearray(base if base is not None else draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "cut", "append"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[at] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and data:
            del data[at : at + draw(st.integers(1, 8))]
        elif kind == "cut":
            del data[at:]
        elif kind == "append":
            data += draw(st.binary(min_size=1, max_size=5000))
    return bytes(data)


def fuzz_bytes(base: bytes | None = None) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=600), mutated(base))


def refused_or_accepted(function: Callable[..., Any], *args: Any) -> None:
    """Calls function; an AttestationError is a fine answer, any other exception fails."""
    try:
        function(*args)
    except AttestationError as exc:
        message = str(exc)
        assert message
        assert "\n" not in message


def test_the_captured_structures_verify() -> None:
    """The mutations start from structures that pass, so they probe the checks."""
    info = check_ak(REQUEST)
    assert attestation_type(REQUEST, ISSUER_PEM) == "tpm_ekcert_trusted"
    assert challenge_ek(replace(REQUEST, ek_public=None))
    verify_quote(AK_PUBLIC, NONCE, QUOTE, QUOTE_SIGNATURE, PCR_VALUES)
    challenge = make_challenge(EK_PUBLIC_ECC, info.name)
    verify_activation(challenge, challenge.secret)


@FUZZ
@given(data=fuzz_bytes(EK_CERT))
def test_ek_certificate_parsing_only_refuses_with_attestation_errors(data: bytes) -> None:
    def parse_and_check(raw: bytes) -> None:
        cert = parse_ek_certificate(raw)
        ek_public_from_certificate(cert)
        verify_ek_chain(cert, [cert], ISSUER_PEM)

    refused_or_accepted(parse_and_check, data)


@FUZZ
@given(data=fuzz_bytes(EK_PUBLIC_ECC), rsa=fuzz_bytes(EK_PUBLIC_RSA))
def test_ek_public_parsing_only_refuses_with_attestation_errors(data: bytes, rsa: bytes) -> None:
    refused_or_accepted(ek_public_key, data)
    refused_or_accepted(ek_public_key, rsa)


FIELDS = ["ek_cert", "ek_public", "ak_public", "creation_data", "creation_attestation",
          "creation_signature"]  # fmt: skip


@FUZZ
@given(field=st.sampled_from(FIELDS), data=st.data())
def test_enrollment_checks_only_refuse_with_attestation_errors(
    field: str, data: st.DataObject
) -> None:
    value = data.draw(st.one_of(fuzz_bytes(getattr(REQUEST, field)), st.none()))
    if value is None and field not in ("ek_cert", "ek_public"):
        value = b""
    request = replace(REQUEST, **{field: value})  # type: ignore[arg-type]
    refused_or_accepted(check_ak, request)
    refused_or_accepted(attestation_type, request, ISSUER_PEM)
    refused_or_accepted(attestation_type, request, None)
    refused_or_accepted(challenge_ek, request)


@FUZZ
@given(ek_public=fuzz_bytes(EK_PUBLIC_ECC), name=fuzz_bytes(b"\x00\x0b" + bytes(32)))
def test_making_a_challenge_only_refuses_with_attestation_errors(
    ek_public: bytes, name: bytes
) -> None:
    refused_or_accepted(make_challenge, ek_public, name)
    refused_or_accepted(make_challenge, EK_PUBLIC_RSA, name)


@FUZZ
@given(answer=st.binary(max_size=64))
def test_a_random_activated_secret_is_refused(answer: bytes) -> None:
    challenge = Challenge(b"", b"", NONCE, b"s" * 32)
    if answer != challenge.secret:
        with pytest.raises(AttestationError):
            verify_activation(challenge, answer)


PCR_DICTS = st.dictionaries(st.integers(-1, 40), st.binary(max_size=70), max_size=10)


@FUZZ
@given(
    which=st.integers(0, 4),
    data=st.data(),
)
def test_quote_verification_only_refuses_with_attestation_errors(
    which: int, data: st.DataObject
) -> None:
    args: list[Any] = [AK_PUBLIC, NONCE, QUOTE, QUOTE_SIGNATURE, dict(PCR_VALUES)]
    if which == 4:
        args[4] = data.draw(st.one_of(PCR_DICTS, st.just({**PCR_VALUES, 7: b"\x01" * 32})))
    else:
        args[which] = data.draw(fuzz_bytes(args[which]))
    refused_or_accepted(verify_quote, *args)
