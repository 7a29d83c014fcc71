"""Per-peer volume quotas over a rolling window (pure: the caller passes the clock).

A rate limit (ratelimit.TokenBucket) bounds speed; a quota bounds how much one peer takes from
this node in any window (e.g. 4 GiB an hour), however slowly it asks. Each peer's volume is kept
in `slots` time slots, so the window rolls in steps of window/slots and memory per peer is
bounded; peers with nothing left in the window are pruned.
"""

from __future__ import annotations

from collections import deque


class RollingQuota:
    """At most about `limit` units per peer in any `window` seconds; limit 0 means unlimited."""

    def __init__(self, limit: float, window: float = 3600.0, slots: int = 60):
        if window <= 0 or slots < 1:
            raise ValueError("window and slots must be positive")
        self.limit, self.window, self.slots = float(limit), float(window), slots
        self._step = window / slots
        self._peers: dict[str, tuple[deque[list[float]], list[float]]] = {}  # peer -> (slots, [total])

    def _slot(self, now: float) -> int:
        return int(now // self._step)

    def _expire(self, peer: str, now: float) -> float:
        entry = self._peers.get(peer)
        if entry is None:
            return 0.0
        slots, total = entry
        oldest = self._slot(now) - self.slots + 1
        while slots and slots[0][0] < oldest:
            total[0] -= slots.popleft()[1]
        if not slots:
            del self._peers[peer]
            return 0.0
        return total[0]

    def used(self, peer: str, now: float) -> float:
        """What peer has taken in the window ending now."""
        return self._expire(peer, now)

    def exceeded(self, peer: str, now: float) -> bool:
        """Whether peer has used up its quota (then it gets nothing until old slots roll out)."""
        return bool(self.limit) and self._expire(peer, now) >= self.limit

    def add(self, peer: str, amount: float, now: float) -> None:
        if not self.limit:
            return
        self._expire(peer, now)
        slots, total = self._peers.setdefault(peer, (deque(), [0.0]))
        slot = self._slot(now)
        if slots and slots[-1][0] == slot:
            slots[-1][1] += amount
        else:
            slots.append([slot, amount])
        total[0] += amount

    def prune(self, now: float) -> int:
        """Forget peers with nothing in the window; returns how many were dropped."""
        before = len(self._peers)
        for peer in list(self._peers):
            self._expire(peer, now)
        return before - len(self._peers)

    def __len__(self) -> int:
        return len(self._peers)
