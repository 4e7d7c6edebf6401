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


@pytest.mark.parametrize(
    "text",
    [
        "99999999999999999999d",  # overflowed timedelta: "unexpected OverflowError"
        "999999999d",  # fits a timedelta, overflowed `now - since`
        "36501d",
    ],
)
def test_parse_duration_bounds_every_value_it_parses(text: str) -> None:
    with pytest.raises(InvalidArgument, match=r"--since .*at most 36500d"):
        parse_duration(text, what="--since")


def test_parse_duration_names_both_bounds_it_was_given() -> None:
    day, minute = timedelta(days=7), timedelta(minutes=1)
    for text in ("1ms", "59s", "8d", "99999d"):
        with pytest.raises(
            InvalidArgument, match=rf"invalid --ttl '{text}': must be at least 1m and at most 7d"
        ):
            parse_duration(text, what="--ttl", at_least=minute, at_most=day)
    assert parse_duration("1m", what="--ttl", at_least=minute, at_most=day) == minute
    assert parse_duration("7d", what="--ttl", at_least=minute, at_most=day) == day


def test_a_duration_too_long_to_be_typed_is_refused_before_int_sees_it() -> None:
    with pytest.raises(InvalidArgument, match="--since .*: use a number with a unit"):
        parse_duration("1" + "0" * 5000 + "s", what="--since")  # beyond int()'s digit limit


def test_parse_duration_quotes_at_most_a_bounded_part_of_what_it_refuses() -> None:
    with pytest.raises(InvalidArgument) as refused:
        parse_duration("x" * 10_000, what="--ttl")
    assert len(str(refused.value)) < 200
    assert "(10,000 characters)" in str(refused.value)
