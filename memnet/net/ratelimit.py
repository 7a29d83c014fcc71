"""Token buckets for per-peer limits (pure: the caller passes the clock, so simulations and tests
drive it without sleeping)."""

from __future__ import annotations


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up. rate 0 means unlimited."""

    def __init__(self, rate: float, burst: float, now: float):
        self.rate, self.burst = float(rate), float(burst)
        self._tokens, self._at = float(burst), now

    def _refill(self, now: float) -> None:
        if now > self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now

    def try_take(self, amount: float, now: float) -> bool:
        """Take amount if it is there now (for requests: refuse rather than queue)."""
        if not self.rate:
            return True
        self._refill(now)
        if self._tokens >= amount:
            self._tokens -= amount
            return True
        return False

    def reserve(self, amount: float, now: float) -> float:
        """Take amount, going into debt if needed; return how long to wait before using it (for
        bytes: pace the sender instead of refusing)."""
        if not self.rate:
            return 0.0
        self._refill(now)
        self._tokens -= amount
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def idle(self, now: float) -> bool:
        """Refilled to its burst: the same as a new bucket, so its owner may forget it."""
        if not self.rate:
            return True
        self._refill(now)
        return self._tokens >= self.burst
