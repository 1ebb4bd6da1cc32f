"""A token bucket that keeps our calls to the gateway under its rate limit, shared by every worker via Redis.

Stripe allows about 25 requests per second per endpoint in test mode (100 in live mode) and answers 429
beyond. Every payout worker takes a token before each transfer call; the bucket lives in Redis so that all
workers on all machines share one budget, and the refill-and-take runs as one Lua script (atomic on the
server, using the server's clock so that workers' clocks do not matter). Redis is an accelerator only:
without it, or while it is down, each process falls back to a bucket of its own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

import redis

log = logging.getLogger(__name__)

# KEYS[1]: the bucket; ARGV: rate per second, capacity, tokens wanted. Returns the wait in seconds as a string
# (0 when taken): Lua numbers would be truncated to integers on their way back to the client.
_TAKE_SCRIPT = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = capacity
  at = now
end
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= wanted then
  tokens = tokens - wanted
else
  wait = (wanted - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
return tostring(wait)
"""


class TokenBucket(Protocol):
    """Take a token now, or learn how long until one is available."""

    def try_take(self) -> float:
        """0.0 if a token was taken, else the seconds to wait before trying again."""
        ...


class LocalTokenBucket:
    """A bucket for this process alone (no Redis, or Redis down)."""

    def __init__(
        self, *, rate: float, capacity: float | None = None, clock: Callable[[], float] = time.monotonic
    ):
        if rate <= 0:
            raise ValueError("the rate must be positive")
        self.rate = rate
        self.capacity = capacity if capacity is not None else max(1.0, rate)
        self._clock = clock
        self._tokens = self.capacity
        self._at = clock()
        self._lock = threading.Lock()

    def try_take(self) -> float:
        """Take a token if one is there."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + max(0.0, now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return 0.0
            return (1 - self._tokens) / self.rate


class RedisTokenBucket:
    """A bucket in Redis shared by every process that uses the same key."""

    def __init__(self, client: redis.Redis, *, key: str, rate: float, capacity: float | None = None):
        if rate <= 0:
            raise ValueError("the rate must be positive")
        self.client = client
        self.key = key
        self.rate = rate
        self.capacity = capacity if capacity is not None else max(1.0, rate)
        self._script = client.register_script(_TAKE_SCRIPT)
        self._fallback = LocalTokenBucket(rate=rate, capacity=self.capacity)
        self._degraded = False

    def try_take(self) -> float:
        """Take a token from the shared bucket; from this process's own bucket while Redis is unreachable."""
        try:
            result = self._script(keys=[self.key], args=[self.rate, self.capacity, 1])
        except redis.RedisError as exc:
            if not self._degraded:  # say it once per outage, not once per transfer
                log.warning("rate limiter: Redis unavailable (%s); limiting this process alone", exc)
                self._degraded = True
            return self._fallback.try_take()
        if self._degraded:
            log.info("rate limiter: Redis is back; limiting with the shared bucket again")
            self._degraded = False
        text = result.decode() if isinstance(result, bytes) else str(result)
        return float(text)


class Throttle:
    """Block until the bucket gives a token (or `max_wait` passes)."""

    def __init__(
        self,
        bucket: TokenBucket,
        *,
        max_wait: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.bucket = bucket
        self.max_wait = max_wait
        self._sleep = sleep
        self._clock = clock

    def acquire(self) -> float:
        """Wait for a token; returns the seconds waited. TimeoutError after `max_wait`."""
        start = self._clock()
        while True:
            wait = self.bucket.try_take()
            if wait <= 0:
                return self._clock() - start
            if self._clock() - start + wait > self.max_wait:
                raise TimeoutError(f"no rate-limit token within {self.max_wait} s")
            self._sleep(wait)


def transfer_throttle(
    *, rate: float, client: redis.Redis | None, key: str, max_wait: float = 60.0
) -> Throttle:
    """The throttle for transfer calls: shared through Redis when a client is given, per process otherwise."""
    bucket: TokenBucket = (
        RedisTokenBucket(client, key=key, rate=rate) if client is not None else LocalTokenBucket(rate=rate)
    )
    return Throttle(bucket, max_wait=max_wait)
