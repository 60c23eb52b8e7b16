"""API keys (hashed, scoped) and per-key rate limits.

Keys are compared by their SHA-256 only: the serving config can sit in a repository or a config map
without being a secret, and a leaked config does not leak a key. A high-entropy random key needs no slow
password hash; SHA-256 is the standard for API tokens. Rate limits are per key so that one team's retry
storm throttles that team, not the fraud checks of everybody else; they count work (a batch of 50 is 50
scorings, a depth-2 connections read costs what it reads), not calls.

``python -m identigraph.serving.auth < keyfile`` prints the digest to put in the serving configuration (``api_keys``)
(read from stdin so the key stays out of shell history).
"""

from __future__ import annotations

import hashlib
import sys
import threading
import time
from collections.abc import Callable

from identigraph.errors import Forbidden, RateLimited, TooCostly, Unauthorized
from identigraph.serving.config import ApiKey, RateLimit, ServingConfig


def key_digest(key: str) -> str:
    """Keys are stored and compared by SHA-256 only, so the serving config never holds a secret."""
    return hashlib.sha256(key.strip().encode()).hexdigest()


class TokenBucket:
    """``per_second`` tokens a second up to ``burst``; thread-safe (requests run on a thread pool)."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = limit.per_second
        self.capacity = float(limit.burst)
        self.tokens = self.capacity
        self.clock = clock
        self.stamp = clock()
        self._lock = threading.Lock()

    def take(self, n: float = 1.0) -> float:
        """0 if ``n`` tokens were taken (all or none), else the seconds until they will be there."""
        with self._lock:
            now = self.clock()
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= n:
                self.tokens -= n
                return 0.0
            return (n - self.tokens) / self.rate


class Authenticator:
    """Identifies callers by key digest and holds each key's rate-limit bucket."""
    def __init__(self, config: ServingConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.keys = config.key_by_digest()
        self.buckets = {k.id: TokenBucket(k.rate_limit, clock) for k in config.api_keys}

    def identify(self, presented: str | None) -> ApiKey:
        if not presented:
            raise Unauthorized("missing API key (X-API-Key header or Authorization: Bearer)")
        key = self.keys.get(key_digest(presented))
        if key is None:
            raise Unauthorized("unknown API key")
        return key

    def check(self, presented: str | None, scope: str, cost: float = 1.0) -> ApiKey:
        """The caller's key if it may use ``scope`` now; raises Unauthorized, Forbidden or RateLimited."""
        key = self.identify(presented)
        if scope not in key.scopes:
            raise Forbidden(f"key {key.id!r} lacks the scope {scope!r}")
        self.charge(key, cost)
        return key

    def charge(self, key: ApiKey, cost: float) -> None:
        """Take ``cost`` tokens from the key's bucket, all or none."""
        if cost <= 0:
            return
        bucket = self.buckets[key.id]
        if cost > bucket.capacity:
            raise TooCostly(f"this call costs {cost:g} rate-limit tokens, more than key {key.id!r} can ever "
                            f"hold ({bucket.capacity:g}): split it")
        wait = bucket.take(cost)
        if wait > 0:
            raise RateLimited(wait)




if __name__ == "__main__":
    print(key_digest(sys.stdin.read()))
