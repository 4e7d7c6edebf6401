import pytest
from hypothesis import given
from hypothesis import strategies as st

from inventory.credentials import hash_secret, new_secret, secret_matches
from inventory.domain import (
    MAX_ASSET_TAG_LENGTH,
    OSType,
    Role,
    is_placeholder_serial,
    normalize_asset_tag,
    normalize_user_name,
)
from inventory.errors import InvalidArgument


def test_os_type_parses_any_case_and_displays_like_the_reference() -> None:
    assert OSType.parse("macOS") is OSType.MACOS
    assert OSType.parse(" linux ") is OSType.LINUX
    assert OSType.MACOS.display == "macOS"


def test_unknown_os_is_refused_with_the_choices() -> None:
    with pytest.raises(InvalidArgument, match="unknown OS 'beos': use one of macos, windows"):
        OSType.parse("beos")


def test_asset_tag_is_stripped() -> None:
    assert normalize_asset_tag(" C00AA0AAAA0A ") == "C00AA0AAAA0A"


def test_spaces_inside_a_serial_are_kept() -> None:
    # What VMware and Parallels virtual machines report as their serial number.
    vm = "VMware-56 4d 0e 9c 3f 5b 9c 3f-8e 64 7c 49 b2 c9 de 1a"
    assert normalize_asset_tag(f"  {vm}\t") == vm


@pytest.mark.parametrize("text", ["Not Available", " to be filled by o.e.m. ", "0000", "--", "N/A"])
def test_placeholders_are_not_serials(text: str) -> None:
    assert is_placeholder_serial(text)


@pytest.mark.parametrize("text", ["C02ABC123", "VMware-56 4d 0e", "0A"])
def test_real_serials_are_not_placeholders(text: str) -> None:
    assert not is_placeholder_serial(text)


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ("", "asset tag is empty"),
        ("   ", "asset tag is empty"),
        ("A" * (MAX_ASSET_TAG_LENGTH + 1), "the limit is 128"),
        ("C00\tAA", "printable ASCII \\(no tabs or control characters\\)"),
        ("C00\x00AA", "printable ASCII"),
        ("séríal", "printable ASCII"),
    ],
)
def test_bad_asset_tags_are_refused(tag: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        normalize_asset_tag(tag)


@given(
    st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=128
    )
)
def test_every_printable_ascii_tag_within_the_limit_is_kept(tag: str) -> None:
    assert normalize_asset_tag(tag) == tag


def test_roles_parse_comma_lists_and_repeats_without_duplicates() -> None:
    assert Role.parse_many(["access,editor", "access", "bot"]) == (
        Role.ACCESS,
        Role.EDITOR,
        Role.BOT,
    )


def test_unknown_or_missing_roles_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="unknown role 'root'"):
        Role.parse_many(["access,root"])
    with pytest.raises(InvalidArgument, match="at least one role"):
        Role.parse_many([" , "])


@pytest.mark.parametrize("name", ["", "-alice", "a b", "x" * 65, "al/ice"])
def test_bad_user_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidArgument):
        normalize_user_name(name)


def test_secrets_carry_at_least_128_bits_and_are_kept_as_sha256() -> None:
    secret = new_secret()
    assert len(secret) * 6 >= 128  # urlsafe base64: six bits a character
    assert new_secret() != secret
    stored = hash_secret(secret)
    assert len(stored) == 64 and secret not in stored
    assert secret_matches(secret, stored)
    assert not secret_matches(secret + "x", stored)


def test_a_posture_is_reported_when_any_field_is_even_a_false_one() -> None:
    from dataclasses import fields as dataclass_fields

    from inventory.domain import POSTURE_FIELDS, Posture

    assert not Posture().reported
    assert Posture(firewall=False).reported and Posture(sip=False).reported
    assert tuple(f.name for f in dataclass_fields(Posture)) == POSTURE_FIELDS
