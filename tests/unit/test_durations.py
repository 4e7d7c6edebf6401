from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inventory.durations import format_duration, parse_duration
from inventory.errors import InvalidArgument


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("1h", timedelta(hours=1)),
        ("1h30m", timedelta(minutes=90)),
        ("7d", timedelta(days=7)),
        ("45", timedelta(seconds=45)),
        (" 2h ", timedelta(hours=2)),
    ],
)
def test_parse_duration_accepts_what_users_type(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "h", "1x", "-1h", "0s", "1h-", "one hour", "1.5h"])
def test_parse_duration_refuses_with_the_option_named(text: str) -> None:
    with pytest.raises(InvalidArgument, match="--ttl"):
        parse_duration(text, what="--ttl")


@given(st.integers(min_value=1, max_value=10**7))
def test_format_then_parse_round_trips(seconds: int) -> None:
    delta = timedelta(seconds=seconds)
    assert parse_duration(format_duration(delta)) == delta
