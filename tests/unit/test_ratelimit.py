"""The in-process rate limiter, on a clock the tests move by hand."""

from __future__ import annotations

import contextlib
import copy
import threading
from datetime import timedelta

import pytest

from ceremony.errors import RateLimited
from ceremony.ratelimit import (
    LocalRateLimiter,
    RedisRateLimiter,
    rate_limiter_for,
)
from inventory.errors import ConfigurationError, DevtrustError

WHAT = "auto-enrollment attempts"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def limiter(clock: FakeClock, limit: int = 3, window: float = 60) -> LocalRateLimiter:
    return LocalRateLimiter(limit, timedelta(seconds=window), WHAT, clock=clock)


def test_the_attempt_over_the_limit_is_refused_with_a_429_saying_when_to_retry(
    clock: FakeClock,
) -> None:
    limits = limiter(clock)
    limits.hit("alice")
    clock.advance(23)
    limits.hit("alice")
    limits.hit("alice")
    with pytest.raises(RateLimited) as raised:
        limits.hit("alice")
    refused = raised.value
    assert isinstance(refused, DevtrustError)
    assert refused.http_status == 429
    assert refused.retry_after == 37  # the first attempt leaves the window in 37 s
    assert refused.key == "alice"
    assert str(refused) == "too many auto-enrollment attempts for alice: try again in 37 s"


def test_a_refused_attempt_is_not_counted_so_waiting_retry_after_is_enough(
    clock: FakeClock,
) -> None:
    limits = limiter(clock, limit=2, window=10)
    limits.hit("alice")
    limits.hit("alice")
    for _ in range(5):
        clock.advance(1)
        with pytest.raises(RateLimited):
            limits.hit("alice")
    with pytest.raises(RateLimited) as raised:
        limits.hit("alice")
    assert raised.value.retry_after == 5
    clock.advance(raised.value.retry_after)
    limits.hit("alice")


def test_attempts_are_allowed_again_once_the_window_has_passed(clock: FakeClock) -> None:
    limits = limiter(clock, limit=2, window=60)
    limits.hit("alice")
    limits.hit("alice")
    clock.advance(59.9)
    with pytest.raises(RateLimited) as raised:
        limits.hit("alice")
    assert raised.value.retry_after == 1  # never 0, even with 0.1 s to go
    clock.advance(0.1)
    limits.hit("alice")
    limits.hit("alice")
    with pytest.raises(RateLimited):
        limits.hit("alice")


def test_the_window_slides_each_attempt_counting_for_one_window(clock: FakeClock) -> None:
    limits = limiter(clock, limit=2, window=60)
    limits.hit("alice")  # t=0
    clock.advance(40)
    limits.hit("alice")  # t=40
    clock.advance(20)
    limits.hit("alice")  # t=60: the first has left the window, the second has not
    with pytest.raises(RateLimited) as raised:
        limits.hit("alice")
    assert raised.value.retry_after == 40


def test_keys_are_counted_independently(clock: FakeClock) -> None:
    limits = limiter(clock, limit=1)
    limits.hit("alice")
    with pytest.raises(RateLimited):
        limits.hit("alice")
    limits.hit("bob")
    limits.hit("alice@example.com")
    with pytest.raises(RateLimited) as raised:
        limits.hit("bob")
    assert raised.value.key == "bob"


def test_memory_holds_only_keys_seen_within_the_last_windows(clock: FakeClock) -> None:
    limits = limiter(clock, limit=5, window=10)
    for i in range(1000):
        limits.hit(f"user-{i}")
    assert len(limits) == 1000
    clock.advance(10)
    limits.hit("carol")
    assert len(limits) == 1  # everyone else's attempts left the window: forgotten
    for i in range(1000):  # a steady stream of new keys never piles up
        clock.advance(0.1)
        limits.hit(f"late-{i}")
        assert len(limits) <= 201
    for _ in range(50):  # one key hammered keeps at most `limit` attempt times
        with contextlib.suppress(RateLimited):
            limits.hit("late-999")
    assert len(limits._attempts["late-999"]) == 5


def test_a_key_still_in_its_window_survives_the_sweep(clock: FakeClock) -> None:
    limits = limiter(clock, limit=1, window=10)
    limits.hit("alice")
    clock.advance(5)
    limits.hit("bob")
    clock.advance(5)
    with pytest.raises(RateLimited) as raised:  # the sweep runs here and keeps bob
        limits.hit("bob")
    assert raised.value.retry_after == 5
    assert len(limits) == 1
    limits.hit("alice")


def test_concurrent_attempts_never_get_past_the_limit(clock: FakeClock) -> None:
    limits = limiter(clock, limit=50)
    allowed: list[int] = []
    start = threading.Barrier(8)

    def attempts() -> None:
        start.wait()
        for _ in range(100):
            try:
                limits.hit("alice")
            except RateLimited:
                continue
            allowed.append(1)

    threads = [threading.Thread(target=attempts) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(allowed) == 50


def test_a_key_with_a_newline_still_gives_a_one_line_message(clock: FakeClock) -> None:
    limits = limiter(clock, limit=1)
    limits.hit("alice\nbob")
    with pytest.raises(RateLimited) as raised:
        limits.hit("alice\nbob")
    assert str(raised.value).splitlines() == [
        "too many auto-enrollment attempts for 'alice\\nbob': try again in 60 s"
    ]


def test_rate_limited_can_be_copied() -> None:
    copied = copy.copy(RateLimited(WHAT, "alice", 37))
    assert (str(copied), copied.key, copied.retry_after) == (
        "too many auto-enrollment attempts for alice: try again in 37 s",
        "alice",
        37,
    )


@pytest.mark.parametrize(
    ("limit", "window"),
    [(0, timedelta(seconds=1)), (-1, timedelta(seconds=1)), (1, timedelta(0)), (1, -timedelta(1))],
)
def test_a_limit_that_allows_nothing_is_refused(limit: int, window: timedelta) -> None:
    with pytest.raises(ValueError):
        LocalRateLimiter(limit, window, WHAT)
    with pytest.raises(ValueError):
        RedisRateLimiter("redis://127.0.0.1:1", limit, window, WHAT)


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("redis://ratelimit.internal:6379/2", "redis://ratelimit.internal:6379/2"),
        ("rediss://:s3cret@ratelimit.internal:6380/0", "rediss://:***@ratelimit.internal:6380/0"),
        ("redis://svc:pw@ratelimit.internal/1?password=x", "redis://svc:***@ratelimit.internal/1"),
        ("REDIS://:s3cret@ratelimit.internal/1", "redis://:***@ratelimit.internal/1"),
    ],
)
def test_rate_limiter_for_a_redis_url_counts_on_that_server(url: str, where: str) -> None:
    limits = rate_limiter_for(url, 5, timedelta(minutes=1), WHAT)
    try:
        assert isinstance(limits, RedisRateLimiter)
        assert limits.where == where
        assert limits.prefix == "devtrust:ratelimit:"
    finally:
        limits.close()


@pytest.mark.parametrize(
    "url", ["redis://:s3cret@[ratelimit.internal:6379/1", "redis://[ratelimit.internal:6379/1"]
)
def test_a_redis_url_redis_cannot_use_is_a_configuration_error_not_a_local_count(
    url: str,
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        rate_limiter_for(url, 5, timedelta(minutes=1), WHAT)
    assert "s3cret" not in str(raised.value)
    assert len(str(raised.value).splitlines()) == 1


@pytest.mark.parametrize("url", [None, "", "amqp://guest@rabbit.internal//", "filesystem://"])
def test_rate_limiter_for_anything_else_counts_in_this_process(url: str | None) -> None:
    limits = rate_limiter_for(url, 1, timedelta(minutes=1), WHAT)
    assert isinstance(limits, LocalRateLimiter)
    limits.hit("alice")
    with pytest.raises(RateLimited):
        limits.hit("alice")
