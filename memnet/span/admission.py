"""A span server's cache budget: tokens of session cache it holds at most (each session reserves
its max_length when it opens, as Petals' allocation does, and gives it back when it ends), and
sessions per client peer. Pure: the server asks, this answers."""

from __future__ import annotations

from collections import Counter


class CacheBudget:
    def __init__(self, tokens: int, sessions_per_peer: int = 8):
        if tokens < 1 or sessions_per_peer < 1:
            raise ValueError("the budget and the sessions per peer must be positive")
        self.total, self.sessions_per_peer = tokens, sessions_per_peer
        self.used = 0
        self._sessions: Counter[str] = Counter()

    @property
    def left(self) -> int:
        return self.total - self.used

    def admit(self, peer: str, tokens: int) -> str | None:
        """Reserve tokens for a session of peer; None if admitted, else the protocol error code
        and why ("busy: ..." or "admission: ...")."""
        if self._sessions[peer] >= self.sessions_per_peer:
            return f"busy: {self._sessions[peer]} sessions of this peer are open"
        if tokens > self.left:
            return f"admission: {tokens} tokens asked, {self.left} of {self.total} left in the cache budget"
        self.used += tokens
        self._sessions[peer] += 1
        return None

    def release(self, peer: str, tokens: int) -> None:
        self.used = max(0, self.used - tokens)
        self._sessions[peer] -= 1
        if self._sessions[peer] <= 0:
            del self._sessions[peer]
