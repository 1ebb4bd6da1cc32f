"""The transfer rate limiter: a token bucket shared through real Redis, and the local fallback."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from payments.throttle import LocalTokenBucket, RedisTokenBucket, Throttle, transfer_throttle


@pytest.fixture
def bucket_key(redis_client: redis.Redis, redis_prefix: str) -> Iterator[str]:
    key = f"{redis_prefix}payouts:throttle:{uuid.uuid4().hex[:8]}"
    yield key
    redis_client.delete(key)


class ManualClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_local_bucket_allows_a_burst_then_refills_at_the_rate() -> None:
    clock = ManualClock()
    bucket = LocalTokenBucket(rate=10, capacity=3, clock=clock)

    assert [bucket.try_take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.try_take() == pytest.approx(0.1)
    clock.now += 0.25  # 2.5 tokens back
    assert [bucket.try_take() for _ in range(2)] == [0.0, 0.0]
    assert bucket.try_take() == pytest.approx(0.05)


def test_the_redis_bucket_is_one_budget_for_every_process(
    redis_client: redis.Redis, redis_url: str, bucket_key: str
) -> None:
    other_process = redis.Redis.from_url(redis_url)
    first = RedisTokenBucket(redis_client, key=bucket_key, rate=5, capacity=4)
    second = RedisTokenBucket(other_process, key=bucket_key, rate=5, capacity=4)

    taken = [first.try_take(), second.try_take(), first.try_take(), second.try_take()]
    refused = second.try_take()
    other_process.close()

    assert taken == [0.0, 0.0, 0.0, 0.0]
    assert 0.1 < refused <= 0.2  # one token at 5/s: at most 0.2 s away
    assert redis_client.ttl(bucket_key) > 0  # an idle bucket disappears by itself


def test_throttled_workers_stay_under_the_rate_together(redis_url: str, bucket_key: str) -> None:
    rate, capacity, calls = 40.0, 4, 24
    stamps: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        client = redis.Redis.from_url(redis_url)
        throttle = Throttle(
            RedisTokenBucket(client, key=bucket_key, rate=rate, capacity=capacity), max_wait=10
        )
        for _ in range(calls // 3):
            throttle.acquire()
            with lock:
                stamps.append(time.monotonic())
        client.close()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(stamps) == calls
    elapsed = max(stamps) - started
    # the first `capacity` calls are a burst, every other one waits for a refill at `rate` per second
    assert elapsed >= (calls - capacity) / rate * 0.9
    for i in range(len(stamps)):
        window = [s for s in stamps if stamps[i] <= s < stamps[i] + 0.5]
        assert len(window) <= capacity + rate * 0.5 + 1


def test_without_redis_each_process_falls_back_to_its_own_bucket() -> None:
    down = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    bucket = RedisTokenBucket(down, key="unused", rate=0.5, capacity=2)

    assert [bucket.try_take(), bucket.try_take()] == [0.0, 0.0]
    assert bucket.try_take() > 0
    assert isinstance(transfer_throttle(rate=10, client=None, key="k").bucket, LocalTokenBucket)


def test_a_throttle_waits_for_tokens_and_gives_up_after_its_longest_wait() -> None:
    clock = ManualClock()
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.now += seconds

    steady = Throttle(
        LocalTokenBucket(rate=1, capacity=1, clock=clock), max_wait=2.5, sleep=sleep, clock=clock
    )
    slow = Throttle(
        LocalTokenBucket(rate=0.1, capacity=1, clock=clock), max_wait=2.5, sleep=sleep, clock=clock
    )

    assert [steady.acquire(), steady.acquire(), steady.acquire()] == [
        0.0,
        pytest.approx(1.0),
        pytest.approx(1.0),
    ]
    assert slow.acquire() == 0.0
    with pytest.raises(TimeoutError):
        slow.acquire()  # the next token is 10 s away
    assert sleeps == [pytest.approx(1.0), pytest.approx(1.0)]
