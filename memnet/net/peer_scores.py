"""What this node has seen of each peer while fetching: bytes delivered raise its score, lies and
stalls lower it (a ban at BAN_SCORE), and how fast it delivers (a moving average of bytes/s) sets
how long an answer from it may take before it counts as a stall. Pure: no I/O, no clock.

Bounded: a daemon open to strangers meets peers without end (and an attacker can mint
identities), so it remembers the MAX_PEERS it dealt with most recently, and its bans apart, the
MAX_BANS most recent, so that a flood of new identities cannot push a liar's ban out of memory
before MAX_BANS further bans have been earned."""

from __future__ import annotations

from collections import OrderedDict

from libp2p.peer.peerinfo import PeerInfo


BAN_SCORE = -100  # one bad chunk or forged manifest: not asked again by this daemon
STALL_SCORE = -25  # four stalls (answering nothing in time) also add up to a ban
STALL_TIMEOUT = 2.0  # s for an answer to start from a provider not yet measured
STALL_FLOOR, STALL_CEILING = 0.5, 30.0  # bounds of a measured provider's deadline (30 s: a request's timeout)
STALL_BATCHES = 4  # a measured provider's deadline: this many batches' time at its rate
RATE_WEIGHT = 0.3  # of a new rate sample in a provider's moving average
MAX_PEERS = 10_000  # scores and rates kept, the least recently touched dropped first
MAX_BANS = 10_000


class PeerScores:
    """What this node has seen of each peer: bytes delivered up, lies and stalls down, and how
    fast it delivers (a moving average of bytes/s), which sets its stall deadline."""

    def __init__(self) -> None:
        self.score: OrderedDict[str, int] = OrderedDict()   # least recently touched first
        self.rate: dict[str, float] = {}
        self.bans: OrderedDict[str, None] = OrderedDict()

    def _add(self, peer: str, points: int) -> None:
        self.score[peer] = self.score.pop(peer, 0) + points
        if self.score[peer] <= BAN_SCORE:
            self.bans.pop(peer, None)
            self.bans[peer] = None
            if len(self.bans) > MAX_BANS:
                self.bans.popitem(last=False)
        while len(self.score) > MAX_PEERS:
            old, _ = self.score.popitem(last=False)
            self.rate.pop(old, None)

    def lied(self, peer: str) -> None:
        self._add(peer, BAN_SCORE)

    def stalled(self, peer: str) -> None:
        self._add(peer, STALL_SCORE)

    def delivered(self, peer: str, n_bytes: int) -> None:
        self._add(peer, max(1, n_bytes >> 20))

    def observe_rate(self, peer: str, n_bytes: int, seconds: float) -> None:
        """A fetch took n_bytes from peer in seconds (its whole part, pipelining included)."""
        if seconds > 0 and n_bytes > 0:
            self._add(peer, 0)   # touched: its rate lives (and is dropped) with its score
            sample = n_bytes / seconds
            old = self.rate.get(peer)
            self.rate[peer] = sample if old is None else (1 - RATE_WEIGHT) * old + RATE_WEIGHT * sample

    def stall_timeout(self, peer: str, batch_bytes: int) -> float:
        """How long an answer from peer may take to start before it counts as a stall."""
        rate = self.rate.get(peer)
        if rate is None:
            return STALL_TIMEOUT
        return min(STALL_CEILING, max(STALL_FLOOR, STALL_BATCHES * batch_bytes / rate))

    def banned(self, peer: str) -> bool:
        return peer in self.bans

    def order(self, peers: list[PeerInfo]) -> list[PeerInfo]:
        usable = [p for p in peers if not self.banned(str(p.peer_id))]
        return sorted(usable, key=lambda p: -self.score.get(str(p.peer_id), 0))
