"""The rate limiter on the real Redis, as several ceremony service instances share it.

Tests use database 15 (``DEVTRUST_TEST_REDIS_URL``) and a key prefix of their own,
deleted afterwards. A Redis that is down fails them with a message saying how to start
it; nothing is skipped. A private redis-server, stopped mid-test, stands for a Redis
that goes away.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from redis import Redis

from ceremony.errors import RateLimited, RateLimiterUnavailable
from ceremony.ratelimit import (
    RedisRateLimiter,
    rate_limiter_for,
)
from inventory.errors import DevtrustError
from tests.processes import RedisServer

WHAT = "auto-enrollment attempts"

pytestmark = pytest.mark.redis


@pytest.fixture
def client(redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def prefix(client: Redis) -> Iterator[str]:
    """A key prefix no other test uses; its keys are deleted afterwards."""
    prefix = f"devtrust:test:{uuid.uuid4().hex[:12]}:ratelimit:"
    yield prefix
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)


Make = Callable[..., RedisRateLimiter]


@pytest.fixture
def limiter(redis_url: str, prefix: str) -> Iterator[Make]:
    """``limiter(limit, seconds)`` is one service instance's limiter on the shared Redis."""
    made: list[RedisRateLimiter] = []

    def make(limit: int = 3, seconds: float = 60) -> RedisRateLimiter:
        made.append(RedisRateLimiter(redis_url, limit, timedelta(seconds=seconds), WHAT, prefix))
        return made[-1]

    yield make
    for limits in made:
        limits.close()


def test_the_attempt_over_the_limit_is_refused_with_a_429_saying_when_to_retry(
    limiter: Make,
) -> None:
    limits = limiter(limit=3, seconds=60)
    for _ in range(3):
        limits.hit("alice")
    with pytest.raises(RateLimited) as raised:
        limits.hit("alice")
    refused = raised.value
    assert isinstance(refused, DevtrustError)
    assert refused.http_status == 429
    assert refused.key == "alice"
    assert refused.retry_after in (59, 60)
    assert str(refused) == (
        f"too many auto-enrollment attempts for alice: try again in {refused.retry_after} s"
    )


def test_attempts_are_allowed_again_once_the_window_has_passed_and_keys_expire(
    limiter: Make, client: Redis, prefix: str
) -> None:
    limits = limiter(limit=2, seconds=1)
    limits.hit("alice")
    limits.hit("alice")
    with pytest.raises(RateLimited) as raised:
        limits.hit("alice")
    assert raised.value.retry_after == 1
    assert 0 < client.pttl(prefix + "alice") <= 1000
    assert client.zcard(prefix + "alice") == 2  # the refused attempt was not recorded

    time.sleep(1.05)
    assert client.exists(prefix + "alice") == 0  # the key expired by itself
    limits.hit("alice")
    limits.hit("alice")
    with pytest.raises(RateLimited):
        limits.hit("alice")


def test_keys_are_counted_independently(limiter: Make) -> None:
    limits = limiter(limit=1)
    limits.hit("alice")
    with pytest.raises(RateLimited):
        limits.hit("alice")
    limits.hit("bob")
    limits.hit("alice@example.com")
    with pytest.raises(RateLimited) as raised:
        limits.hit("bob")
    assert raised.value.key == "bob"


def test_a_hammered_key_holds_at_most_limit_attempts(
    limiter: Make, client: Redis, prefix: str
) -> None:
    limits = limiter(limit=5)
    refused = 0
    for _ in range(100):
        try:
            limits.hit("mallory")
        except RateLimited:
            refused += 1
    assert refused == 95
    assert client.zcard(prefix + "mallory") == 5
    assert [k.decode() for k in client.scan_iter(match=prefix + "*")] == [prefix + "mallory"]


def test_two_service_instances_share_one_count(limiter: Make) -> None:
    one, two = limiter(limit=3), limiter(limit=3)
    one.hit("alice")
    two.hit("alice")
    one.hit("alice")
    with pytest.raises(RateLimited):
        two.hit("alice")
    with pytest.raises(RateLimited):
        one.hit("alice")


def test_concurrent_attempts_from_two_instances_never_get_past_the_limit(
    limiter: Make,
) -> None:
    instances = [limiter(limit=20), limiter(limit=20)]
    allowed: list[int] = []
    start = threading.Barrier(8)

    def attempts(limits: RedisRateLimiter) -> None:
        start.wait()
        for _ in range(25):
            try:
                limits.hit("alice")
            except RateLimited:
                continue
            allowed.append(1)

    threads = [threading.Thread(target=attempts, args=(instances[i % 2],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(allowed) == 20


def test_a_client_given_by_its_owner_is_shared_and_left_open(
    limiter: Make, client: Redis, prefix: str
) -> None:
    by_url = limiter(limit=2)
    by_client = RedisRateLimiter(client, 2, timedelta(seconds=60), WHAT, prefix=prefix)
    by_url.hit("alice")
    by_client.hit("alice")
    with pytest.raises(RateLimited):
        by_client.hit("alice")
    by_client.close()
    assert client.ping()


def test_rate_limiter_for_a_redis_url_counts_on_that_server(redis_url: str, client: Redis) -> None:
    limits = rate_limiter_for(redis_url, 1, timedelta(seconds=60), WHAT)
    key = f"devtrust-test-{uuid.uuid4().hex}"
    try:
        assert isinstance(limits, RedisRateLimiter)
        limits.hit(key)
        assert client.zcard(f"devtrust:ratelimit:{key}") == 1
        with pytest.raises(RateLimited):
            limits.hit(key)
    finally:
        limits.close()
        client.delete(f"devtrust:ratelimit:{key}")


def assert_unavailable(limits: RedisRateLimiter, where: str) -> str:
    with pytest.raises(RateLimiterUnavailable) as raised:
        limits.hit("alice")
    error = raised.value
    message = str(error)
    assert isinstance(error, DevtrustError)
    assert error.http_status == 503
    assert error.__suppress_context__  # no redis traceback chained on
    assert len(message.splitlines()) == 1
    assert message.startswith(f"cannot count {WHAT}: the rate-limit server at {where} ")
    return message


def test_an_unreachable_redis_is_a_one_line_503_without_its_password() -> None:
    limits = RedisRateLimiter("redis://:hunter2@127.0.0.1:1/3", 3, timedelta(seconds=60), WHAT)
    try:
        message = assert_unavailable(limits, "redis://:***@127.0.0.1:1/3")
        assert "hunter2" not in message
    finally:
        limits.close()


def test_a_redis_that_goes_away_gives_503s_until_it_is_back(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    try:
        limits = RedisRateLimiter(server.url, 2, timedelta(seconds=60), WHAT)
        limits.hit("alice")
        server.stop()
        assert_unavailable(limits, server.url)
        assert_unavailable(limits, server.url)
        server.start()  # empty: no counts, and no cached script either
        limits.hit("alice")
        limits.hit("alice")
        with pytest.raises(RateLimited):
            limits.hit("alice")
        limits.close()
    finally:
        server.stop()
