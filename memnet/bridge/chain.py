"""A distributed generation's chain of span sessions, run by the bridge for its node's CLI.

open(): read the span records of every layer key of the model from hivemind's DHT, route a chain
covering all layers (memnet/span/routing.py: latency, compute, cache room, servers already
holding the seed cube preferred), and open one span session per hop, each seeded from the same
cube (a server that refuses the seed makes the whole chain start unseeded: every hop must hold
the same prefix). step(): pass the hidden state through the hops in order.

Failover: a hop that fails (its server died, timed out or answered an error) is replaced by a
route over the same layers that avoids it, opened with the same seed, and given only what that
hop was sent since the seed (the suffix history), so the new servers' caches equal the old one's
and the output is unchanged (Petals' failover replays from position 0; its issue #587).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from memnet.bridge import streams
from memnet.errors import MemnetError, NetworkError, PeerError, PeerTimeout
from memnet.span import protocol as p
from memnet.span import records, routing
from memnet.span.records import SpanRecord
from memnet.span.session import ClientSession

log = logging.getLogger("memnet.chain")

OPEN_TIMEOUT = 60.0   # s for a server to answer open (seeding may fetch its share of a cube)
FRAME_TIMEOUT = 30.0
MAX_FAILOVERS = 8


class ChainError(NetworkError):
    """No route, or the chain could not be kept alive; code: the span error code behind it."""

    def __init__(self, message: str, code: str = ""):
        super().__init__(message)
        self.code = code


@dataclass
class Hop:
    peer: str
    start: int
    end: int
    session: ClientSession
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    source: str = "none"
    fetched: int = 0
    history: list[tuple[int, int, bytes]] = field(default_factory=list)  # (position, tokens, hidden in) since the seed


RECORDS_FRESH = 5.0  # s a DHT read of the span records is reused by the next chain


class Chain:
    def __init__(self, node: Any, model: bytes, layers: int, hidden_size: int, step_timeout: float,
                 records_cache: dict | None = None):
        self.node, self.model, self.layers, self.hidden_size = node, model, layers, hidden_size
        self.records_cache = {} if records_cache is None else records_cache
        self.step_timeout = step_timeout
        self.hops: list[Hop] = []
        self.banned: set[str] = set()
        self.failovers = 0
        self.seed: p.Seed | None = None
        self.seed_key: bytes | None = None
        self.max_length = 0
        self.position = 0

    async def servers(self, fresh: bool = False) -> dict[str, SpanRecord]:
        """The span servers of the model's layers (a read of a few seconds ago unless fresh)."""
        cached = self.records_cache.get(self.model)
        if cached is not None and not fresh and time.monotonic() - cached[0] < RECORDS_FRESH:
            return cached[1]
        keys = [records.block_key(self.model, layer) for layer in range(self.layers)]
        found = await self.node.dht.get_many(keys, sufficient_expiration_time=math.inf)  # the latest records
        by_layer = {}
        for layer, key in enumerate(keys):
            entry = found.get(key)
            value = entry.value if entry is not None else None
            if isinstance(value, dict):
                by_layer[layer] = {peer: item.value for peer, item in value.items() if hasattr(item, "value")}
        merged = records.merge(by_layer, self.model)
        self.records_cache[self.model] = (time.monotonic(), merged)
        return merged

    async def open(self, max_length: int, seed: p.Seed | None, seed_key: bytes | None,
                   seed_bytes: int = 0, tokens: int = 1) -> int:
        """Route and open every hop; returns the position the chain starts at (the seed's tokens,
        or 0 when some server could not use the seed)."""
        self.max_length, self.seed, self.seed_key = max_length, seed, seed_key
        self._need = routing.Need(self.layers, max_length, tokens, seed_key if seed else None,
                                  seed_bytes / max(1, self.layers))
        if seed is not None:
            try:
                self.hops = await self._open_range(0, self.layers, seed)
                self.position = seed.tokens
                return self.position
            except PeerError as exc:
                if getattr(exc, "code", None) != "bad_seed":
                    raise
                log.info("a span server refused the seed (%s): the chain starts unseeded", exc)
                await self.close()
                self.seed = None
        self.hops = await self._open_range(0, self.layers, None)
        self.position = 0
        return 0

    async def _open_range(self, start: int, end: int, seed: p.Seed | None) -> list[Hop]:
        """Open hops covering [start, end). A server that is unreachable, full or failing is
        banned for this chain and the range routed again (DHT records of a dead server live on
        until they expire); a refused seed is the caller's to handle."""
        last_code = ""
        for _ in range(MAX_FAILOVERS):
            spans = await self.servers()
            plan = routing.route(list(spans.values()), self._need, banned=frozenset(self.banned), start=start,
                                 end=end)
            if plan is None or (self.banned and all(h.peer in self.banned for h in plan)):
                small = spans and all(r.max_length < self.max_length for r in spans.values())
                raise ChainError(f"no span servers cover layers [{start}, {end}) of model {self.model.hex()[:12]} "
                                 + (f"for {self.max_length} tokens (at most {max(r.max_length for r in spans.values())})"
                                    if small else f"({len(spans)} server(s) found, {len(self.banned)} failed)"),
                                 "too_large" if small else last_code)
            # every hop opens at once: the servers seed their caches in parallel
            outcomes = await asyncio.gather(*(self._open_hop(planned, seed) for planned in plan),
                                            return_exceptions=True)
            hops = [o for o in outcomes if isinstance(o, Hop)]
            failures = [(planned, o) for planned, o in zip(plan, outcomes) if not isinstance(o, Hop)]
            if not failures:
                return hops
            for hop in hops:
                streams.close(hop.writer)
            for planned, exc in failures:
                if not isinstance(exc, (PeerError, PeerTimeout, ConnectionError, asyncio.IncompleteReadError, OSError)):
                    raise exc
                if getattr(exc, "code", None) == "bad_seed":
                    raise exc
                last_code = getattr(exc, "code", "") or last_code  # a refusal says more than a dead server
                log.info("span server %s cannot take the session (%s): routing around it", planned.peer, exc)
                self.banned.add(planned.peer)
        raise ChainError(f"no span server would take layers [{start}, {end}) after {MAX_FAILOVERS} tries", last_code)

    async def _open_hop(self, planned: routing.Hop, seed: p.Seed | None) -> Hop:
        from hivemind.p2p import PeerID

        try:
            _, reader, writer = await asyncio.wait_for(
                self.node.p2p.call_binary_stream_handler(PeerID.from_base58(planned.peer), p.PROTOCOL_ID), 10)
        except Exception as exc:
            self.banned.add(planned.peer)
            raise PeerError(f"span server {planned.peer} is unreachable: {exc!r}"[:300]) from None
        session = ClientSession(planned.peer)
        hop = Hop(planned.peer, planned.start, planned.end, session, reader, writer)
        await streams.send(writer, session.open(p.Open(planned.start, planned.end, self.max_length,
                                                       self.model, seed)))
        opened = await streams.next_event(session, reader, OPEN_TIMEOUT, FRAME_TIMEOUT)
        hop.source, hop.fetched = opened.source, opened.fetched
        return hop

    async def step(self, position: int, tokens: int, hidden: bytes) -> bytes:
        """Hidden states [tokens, H] at position through every hop (with failover)."""
        index = 0
        while index < len(self.hops):
            hop = self.hops[index]
            try:
                out = await self._send_step(hop, position, tokens, hidden)
            except (PeerError, PeerTimeout, ConnectionError, asyncio.IncompleteReadError, OSError) as exc:
                await self._replace(index, exc)
                continue  # the replacement hops start at the same layer: run this step again there
            hop.history.append((position, tokens, hidden))
            hidden = out
            index += 1
        self.position = position + tokens
        return hidden

    async def _send_step(self, hop: Hop, position: int, tokens: int, hidden: bytes) -> bytes:
        _, frame = hop.session.step(position, tokens, hidden)
        await streams.send(hop.writer, frame)
        output = await streams.next_event(hop.session, hop.reader, self.step_timeout, FRAME_TIMEOUT)
        if output is None:
            raise PeerError(f"span server {hop.peer} closed the session")
        if len(output.hidden) != len(hidden):
            raise PeerError(f"span server {hop.peer} answered {len(output.hidden)} bytes for {len(hidden)}")
        return bytes(output.hidden)

    async def _replace(self, index: int, why: BaseException) -> None:
        """Route the failed hop's layers anew (avoiding its server), open the new hops with the
        same seed and replay its history through them."""
        old = self.hops[index]
        self.failovers += 1
        if self.failovers > MAX_FAILOVERS:
            raise ChainError(f"gave up after {MAX_FAILOVERS} failovers; last: {why}")
        log.warning("span server %s failed (%s): rerouting layers [%d, %d)", old.peer, why, old.start, old.end)
        self.banned.add(old.peer)
        streams.close(old.writer)
        started = time.perf_counter()
        new = await self._open_range(old.start, old.end, self.seed)
        for position, tokens, hidden in old.history:
            for hop in new:
                out = await self._send_step(hop, position, tokens, hidden)
                hop.history.append((position, tokens, hidden))
                hidden = out
        self.hops[index:index + 1] = new
        log.info("failover of layers [%d, %d) to %s in %.2f s (%d steps replayed)", old.start, old.end,
                 [h.peer[-8:] for h in new], time.perf_counter() - started, len(old.history))

    def route(self) -> list[dict[str, Any]]:
        return [{"peer": h.peer, "start": h.start, "end": h.end, "source": h.source, "fetched": h.fetched}
                for h in self.hops]

    async def close(self) -> None:
        for hop in self.hops:
            try:
                await asyncio.wait_for(streams.send(hop.writer, hop.session.close()), 2)
            except (MemnetError, Exception):
                pass
            streams.close(hop.writer)
        self.hops = []
