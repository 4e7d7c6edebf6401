"""The console's session cookies and CSRF tokens, and its query strings: pure logic."""

from __future__ import annotations

import os
import re
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ceremony.console import filters
from ceremony.console.sessions import KEY_FILE, Signer, load_or_create_key
from inventory.domain import EnrollStatus, OSType, TrustLevel
from inventory.errors import InvalidArgument

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
KEY = b"k" * 32
HASH = "a" * 64  # the user's current credential hash


def test_a_session_is_valid_until_it_expires_for_the_credential_it_was_signed_for() -> None:
    signer = Signer(KEY, timedelta(hours=1))
    session = signer.parse(signer.issue("alice", HASH, NOW))
    assert session is not None and session.user == "alice"
    assert signer.valid(session, HASH, NOW + timedelta(minutes=59))
    assert not signer.valid(session, HASH, NOW + timedelta(hours=1))  # expired
    assert not signer.valid(session, "b" * 64, NOW)  # the credential was reset
    assert not signer.valid(session, None, NOW)  # the user was removed
    assert not Signer(b"x" * 32).valid(session, HASH, NOW)  # another key


def test_a_tampered_or_malformed_cookie_is_no_session() -> None:
    signer = Signer(KEY)
    cookie = signer.issue("alice", HASH, NOW)
    version, _, signature = cookie.split(".")
    forged = signer.issue("mallory", HASH, NOW).split(".")[1]
    session = signer.parse(f"{version}.{forged}.{signature}")
    assert session is not None and not signer.valid(session, HASH, NOW)
    for bad in ("", "v1", "v2.x.y", "v1.!!!.x", "v1.bnVsbA.x", "v1.e30.x", "a" * 2000):
        assert signer.parse(bad) is None, bad
    assert "alice" not in signature and HASH not in cookie


def test_csrf_tokens_belong_to_one_session_and_login_tokens_to_one_nonce() -> None:
    signer = Signer(KEY)
    one = signer.parse(signer.issue("alice", HASH, NOW))
    two = signer.parse(signer.issue("alice", HASH, NOW))
    assert one is not None and two is not None
    assert signer.csrf_ok(one, signer.csrf(one))
    assert not signer.csrf_ok(one, signer.csrf(two))
    assert not signer.csrf_ok(one, None) and not signer.csrf_ok(one, "")
    nonce = signer.login_nonce()
    assert signer.login_csrf_ok(nonce, signer.login_csrf(nonce))
    assert not signer.login_csrf_ok(signer.login_nonce(), signer.login_csrf(nonce))
    assert not signer.login_csrf_ok(None, signer.login_csrf(nonce))


def test_the_key_is_made_once_with_mode_0600_and_read_back(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path / "data")
    assert len(key) == 32 and load_or_create_key(tmp_path / "data") == key
    path = tmp_path / "data" / KEY_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == [KEY_FILE]
    path.write_bytes(b"short")
    with pytest.raises(ValueError, match="not a 32-byte key"):
        load_or_create_key(tmp_path / "data")


def test_device_filters_are_read_and_bad_ones_named() -> None:
    where, after = filters.device_filter(
        {"q": " C02 ", "os": "macos", "status": "enrolled", "trust": "tpm_ekpub",
         "source": "-", "owner": "alice", "after": "WyJ4IiwibWFjb3MiXQ"},
        user="erin",
    )  # fmt: skip
    assert (where.tag_prefix, where.os_type, where.enroll_status, where.trust_level) == (
        "C02", OSType.MACOS, EnrollStatus.ENROLLED, TrustLevel.TPM_EKPUB
    )  # fmt: skip
    assert (where.source, where.owner, where.user) == ("-", "alice", "erin")
    assert after == "WyJ4IiwibWFjb3MiXQ"
    assert filters.device_filter({"os": ""}, user=None)[0].os_type is None
    for params, words in [
        ({"os": "plan9"}, "os: 'plan9' is not one of macos"),
        ({"after": "not/a/cursor"}, "after: not a page cursor"),
        ({"owner": "x" * 65}, "owner: at most 64 characters"),
        ({"q": "tab\there"}, "q: 'tab\\there' may only hold printable ASCII"),
        ({"colour": "red"}, "unknown parameter 'colour'"),
    ]:
        with pytest.raises(InvalidArgument, match=re.escape(words)):
            filters.device_filter(params, user=None)


def test_audit_filters_read_a_time_range_and_refuse_a_backwards_one() -> None:
    where, before = filters.audit_filter(
        {"type": "device.enroll", "result": "failed", "since": "2026-01-01T09:30",
         "until": "2026-01-02T00:00+01:00", "after": "42", "actor": "root"}
    )  # fmt: skip
    assert (where.type, where.success, where.actor, before) == ("device.enroll", False, "root", 42)
    assert where.since == datetime(2026, 1, 1, 9, 30, tzinfo=UTC)
    assert where.until == datetime(2026, 1, 1, 23, 0, tzinfo=UTC)
    assert filters.audit_filter({"result": "any"})[0].success is None
    assert filters.audit_filter({"result": "success"})[0].success is True
    for params, words in [
        ({"type": "nope"}, "type: 'nope' is not one of"),
        ({"since": "yesterday"}, "since: 'yesterday' is not a time"),
        ({"since": "2026-01-02T00:00", "until": "2026-01-01T00:00"}, "until: must be later"),
        ({"after": "0"}, "after: not a page cursor"),
        ({"result": "maybe"}, "result: 'maybe' is not one of any, success, failed"),
    ]:
        with pytest.raises(InvalidArgument, match=re.escape(words)):
            filters.audit_filter(params)


def test_replicas_reading_one_session_key_file_accept_each_others_sessions(
    tmp_path: Path,
) -> None:
    """Two `devtrust serve` replicas, each with a data directory of its own: with the
    shared key file (DEVTRUST_CONSOLE_SESSION_KEY_FILE) a session one signed is good on
    the other; with none, each made its own key and refuses the other's."""
    from types import SimpleNamespace
    from typing import cast

    from ceremony.admin import AdminApi, Misconfigured
    from ceremony.console import AdminConsole
    from inventory.settings import Settings

    def replica(name: str, key_file: Path | None) -> Signer:
        settings = Settings(data_dir=tmp_path / name, console_session_key_file=key_file)
        return AdminConsole(cast(AdminApi, SimpleNamespace(settings=settings))).signer()

    shared = tmp_path / "console_session_key"
    shared.write_bytes(os.urandom(32))
    one, other = replica("a", shared), replica("b", shared)
    session = other.parse(one.issue("alice", HASH, datetime.now(UTC)))
    assert session is not None and other.valid(session, HASH, datetime.now(UTC))
    assert not (tmp_path / "a" / KEY_FILE).exists()  # the file named, none made

    alone, apart = replica("c", None), replica("d", None)
    session = apart.parse(alone.issue("alice", HASH, datetime.now(UTC)))
    assert session is not None and not apart.valid(session, HASH, datetime.now(UTC))

    short = tmp_path / "short"
    short.write_bytes(b"x" * 8)
    with pytest.raises(Misconfigured, match="holds 8 bytes, not a 32-byte key"):
        replica("e", short)
