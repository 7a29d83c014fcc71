"""A span server's cache budget: tokens of session cache it holds at most (each session reserves
its max_length when it opens, as Petals' allocation does, and gives it back when it ends), and
sessions per client peer. Pure: the server asks, this answers.

A reservation is a lease that must be used: when a newcomer does not fit, sessions that sit idle
(no step in progress) give way, those whose grace ends first first: one that has not stepped since
its open after open_grace seconds (a client steps as soon as it is opened), any other after yield_after. So
silent sessions at the largest max_length cannot keep a server's whole budget from everyone (the
span campaign's 'hog': two silent sessions of 8192 tokens held SmolLM2's 16384 for a minute at a
time, and reopened). The newcomer waits for them, at most open_grace."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Hashable

YIELD_AFTER = 10.0
OPEN_GRACE = 2.0


@dataclass
class Lease:
    peer: str
    tokens: int
    since: float          # the end of its last step (or its open)
    busy: bool = False    # a step in progress
    stepped: bool = False  # a step has run since the open


class CacheBudget:
    def __init__(self, tokens: int, sessions_per_peer: int = 8, yield_after: float = YIELD_AFTER,
                 open_grace: float = OPEN_GRACE):
        if tokens < 1 or sessions_per_peer < 1 or not 0 <= open_grace <= yield_after:
            raise ValueError("the budget and the sessions per peer must be positive, 0 <= open_grace <= yield_after")
        self.total, self.sessions_per_peer = tokens, sessions_per_peer
        self.yield_after, self.open_grace = yield_after, open_grace
        self.used = 0
        self._sessions: Counter[str] = Counter()
        self._leases: dict[Hashable, Lease] = {}

    @property
    def left(self) -> int:
        return self.total - self.used

    def admit(self, peer: str, tokens: int, key: Hashable | None = None, now: float | None = None) -> str | None:
        """Reserve tokens for a session of peer (key names its lease); None if admitted, else the
        protocol error code and why ("busy: ..." or "admission: ...")."""
        if self._sessions[peer] >= self.sessions_per_peer:
            return f"busy: {self._sessions[peer]} sessions of this peer are open"
        if tokens > self.left:
            return f"admission: {tokens} tokens asked, {self.left} of {self.total} left in the cache budget"
        self.used += tokens
        self._sessions[peer] += 1
        if key is not None:
            self._leases[key] = Lease(peer, tokens, time.monotonic() if now is None else now)
        return None

    def release(self, peer: str, tokens: int, key: Hashable | None = None) -> None:
        if key is not None:
            if key not in self._leases:
                return   # given to a newcomer already (take_over)
            del self._leases[key]
        self.used = max(0, self.used - tokens)
        self._sessions[peer] -= 1
        if self._sessions[peer] <= 0:
            del self._sessions[peer]

    def take_over(self, ended: list[Hashable], peer: str, tokens: int, key: Hashable,
                  now: float | None = None) -> str | None:
        """Give the room of the leases in `ended` (their sessions are being ended) to a newcomer
        at once, as admit does: nobody else can take it in between."""
        for old in ended:
            lease = self._leases.get(old)
            if lease is not None:
                self.release(lease.peer, lease.tokens, old)
        return self.admit(peer, tokens, key, now)

    def stepping(self, key: Hashable) -> None:
        """A step of this session is in progress: it is using its lease."""
        if key in self._leases:
            self._leases[key].busy = True

    def stepped(self, key: Hashable, now: float | None = None, step: bool = True) -> None:
        """The step (or, step=False, the open) is done; the lease is idle from now."""
        if key in self._leases:
            lease = self._leases[key]
            lease.busy, lease.since = False, time.monotonic() if now is None else now
            lease.stepped = lease.stepped or step

    def to_yield(self, tokens: int, now: float | None = None) -> tuple[list[Hashable], float]:
        """The leases to end so that tokens fit, and the time from which they all may be ended
        (now or later; each lease may be once it has idled its grace), soonest first; ([], 0)
        if tokens fit already, or if ending every idle lease would still leave too little."""
        if tokens <= self.left:
            return [], 0.0
        now = time.monotonic() if now is None else now
        due = sorted(((lease.since + (self.yield_after if lease.stepped else self.open_grace), key)
                      for key, lease in self._leases.items() if not lease.busy), key=lambda pair: pair[0])
        chosen, room, at = [], self.left, now
        for when, key in due:
            chosen.append(key)
            room += self._leases[key].tokens
            at = max(at, when)
            if room >= tokens:
                return chosen, at
        return [], 0.0
