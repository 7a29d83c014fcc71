"""Which chunk to ask which peer for next (pure, so a simulator can drive the same logic).

Peers pull work: a worker asks for a batch when it has capacity, so faster peers get more.
When nothing is left unrequested and only about a batch per peer is still in flight, an idle
worker re-requests chunks in flight at one other peer (BitTorrent's end game), so one slow or
vanished peer cannot hold up the last chunks.
"""

from __future__ import annotations

from collections import OrderedDict
from itertools import islice


class FetchPlan:
    def __init__(self, chunk_ids: list[bytes], sizes: dict[bytes, int], batch: int = 4):
        self._pending: OrderedDict[bytes, None] = OrderedDict((c, None) for c in chunk_ids)
        self._in_flight: dict[bytes, set[str]] = {}
        self._lacking: dict[str, set[bytes]] = {}  # peer -> chunks it said it does not hold
        self._sizes = sizes
        self.batch = batch
        self.done: set[bytes] = set()
        self.dropped: dict[str, str] = {}  # peer -> why
        self._peers: set[str] = set()
        self.total_bytes = sum(sizes[c] for c in chunk_ids)
        self.done_bytes = 0

    def size(self, chunk_id: bytes) -> int:
        return self._sizes[chunk_id]

    @property
    def complete(self) -> bool:
        return not self._pending and not self._in_flight

    def next_batch(self, peer: str) -> list[bytes]:
        """Chunks for peer to request now; empty when there is nothing it could usefully do."""
        if peer in self.dropped:
            return []
        self._peers.add(peer)
        lacking = self._lacking.get(peer, set())
        # islice: stop at a batch, not scan every pending chunk on each call (a 4 GiB cube has 16 384)
        batch = list(islice((c for c in self._pending if c not in lacking), self.batch))
        if not batch and len(self._in_flight) <= self.batch * self._live_peers():
            # end game, only for the last batch or so per peer: duplicates cost the providers
            # upload, so a chunk is asked of at most two peers at once
            batch = list(islice((c for c, peers in self._in_flight.items()
                                 if len(peers) < 2 and peer not in peers and c not in lacking), self.batch))
        for chunk_id in batch:
            self._pending.pop(chunk_id, None)
            self._in_flight.setdefault(chunk_id, set()).add(peer)
        return batch

    def _live_peers(self) -> int:
        return max(1, len(self._peers - set(self.dropped)))

    def others_live(self, peer: str, peers: set[str]) -> bool:
        """Whether a provider other than peer is still usable for this fetch."""
        return any(p != peer and p not in self.dropped for p in peers)

    def received(self, peer: str, chunk_id: bytes) -> bool:
        """A verified chunk arrived; False if another peer delivered it first."""
        self._in_flight.get(chunk_id, set()).discard(peer)
        if chunk_id in self.done:
            return False
        self._in_flight.pop(chunk_id, None)
        self._pending.pop(chunk_id, None)
        self.done.add(chunk_id)
        self.done_bytes += self._sizes[chunk_id]
        return True

    def lacks(self, peer: str, chunk_id: bytes) -> None:
        self._lacking.setdefault(peer, set()).add(chunk_id)
        self._release(peer, chunk_id)

    def failed(self, peer: str, chunk_ids: list[bytes]) -> None:
        """A request to peer ended without these chunks: put them back up for grabs."""
        for chunk_id in chunk_ids:
            self._release(peer, chunk_id)

    def drop(self, peer: str, why: str) -> None:
        """Stop using peer for this fetch (it lied, vanished or broke the protocol)."""
        self.dropped.setdefault(peer, why)
        for chunk_id in [c for c, peers in self._in_flight.items() if peer in peers]:
            self._release(peer, chunk_id)

    def readmit(self, peer: str) -> None:
        """Use peer again (its connection failed, a new one may serve)."""
        self.dropped.pop(peer, None)

    def _release(self, peer: str, chunk_id: bytes) -> None:
        peers = self._in_flight.get(chunk_id)
        if peers is None:
            return
        peers.discard(peer)
        if not peers:
            del self._in_flight[chunk_id]
            if chunk_id not in self.done:
                self._pending[chunk_id] = None
                self._pending.move_to_end(chunk_id, last=False)  # retry it first

    def stuck(self, peers: set[str]) -> bool:
        """No usable peer can make progress: all dropped, or every remaining chunk lacking."""
        live = [p for p in peers if p not in self.dropped]
        if not live or self.complete:
            return not self.complete
        remaining = set(self._pending) | set(self._in_flight)
        return all(remaining <= self._lacking.get(p, set()) for p in live)
