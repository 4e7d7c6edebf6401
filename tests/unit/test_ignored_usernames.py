"""The ``jamf_ignored_usernames`` setting: from the environment, a TOML file or code."""

from __future__ import annotations

from pathlib import Path

import pytest

from inventory.errors import ConfigurationError
from inventory.settings import load_settings
from jamf.config import source_from_settings


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("casper", ["casper"]),
        ("casper, itadmin ,,", ["casper", "itadmin"]),
        ('["casper", "kiosk@example.com"]', ["casper", "kiosk@example.com"]),
        ("casper,casper", ["casper"]),
        ("", []),
    ],
)
def test_the_environment_gives_names_separated_by_commas_or_a_json_list(
    monkeypatch: pytest.MonkeyPatch, text: str, names: list[str]
) -> None:
    monkeypatch.setenv("DEVTRUST_JAMF_IGNORED_USERNAMES", text)

    settings = load_settings()

    assert settings.jamf_ignored_usernames == names
    assert source_from_settings(settings).ignored_usernames == frozenset(names)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("casper, it admin", "'it admin' is not a login name: no spaces, commas or control"),
        ("[1, 2]", "1 is not a name: write each name as text"),
        ("[casper", "not a JSON list (Expecting value): write names separated by commas"),
        ('{"a": 1}', """'{"a": 1}' is not a login name"""),
    ],
)
def test_a_bad_list_is_one_line_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, text: str, message: str
) -> None:
    monkeypatch.setenv("DEVTRUST_JAMF_IGNORED_USERNAMES", text)

    with pytest.raises(ConfigurationError) as refused:
        load_settings()

    assert str(refused.value).startswith(f"invalid setting jamf_ignored_usernames: {message}")
    assert "\n" not in str(refused.value)


def test_code_must_give_a_list_or_text() -> None:
    with pytest.raises(ConfigurationError, match="expected a list of names or names separated"):
        load_settings(jamf_ignored_usernames={"casper": True})


def test_a_toml_list_is_checked_the_same_way(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "devtrust.toml"
    config.write_text('jamf_ignored_usernames = [" casper ", "itadmin"]\n')
    monkeypatch.setenv("DEVTRUST_CONFIG", str(config))
    monkeypatch.delenv("DEVTRUST_JAMF_IGNORED_USERNAMES", raising=False)

    assert load_settings().jamf_ignored_usernames == ["casper", "itadmin"]

    config.write_text('jamf_ignored_usernames = ["ok", "tab\\there"]\n')
    with pytest.raises(ConfigurationError, match="'tab\\\\there' is not a login name"):
        load_settings()
