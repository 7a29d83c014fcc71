"""Provider records and name records in memnet's Kademlia DHT (the keys: net/dht_keys.py).

py-libp2p's find_providers and get_value answer from the local store alone once it holds
anything for a key; a node that once cached one provider would never see the others, and a node
holding an old name record would never see a newer one. Lookups here always ask the k closest
peers too and merge.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from dataclasses import dataclass, field

import trio
from libp2p.kad_dht.kad_dht import KadDHT
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from memnet.cube import name_record
from memnet.errors import MemnetError, NetworkError
from memnet.net import dht_mode
from memnet.net.provider_wave import ProviderWave

log = logging.getLogger("memnet.dht")

QUERY_TIMEOUT = 10.0   # py-libp2p's; the daemon passes daemon.dht_query_timeout


@dataclass
class FindStats:
    """How one find went: the walk's rounds and FIND_NODE queries (a round is a batch of queries
    that py-libp2p sends together and waits for), the seconds of the walk and of the wave, and
    whom it asked: the peers the walk ended with (base58 ids) and those of them whose
    GET_PROVIDERS gave nothing by the wave's end (failed, timed out, or cut off by the grace) —
    a trace of finds that come back empty."""

    rounds: int = 0
    queries: int = 0
    walk_seconds: float = 0.0
    wave_seconds: float = 0.0
    asked: int = 0
    answered: int = 0
    in_flight: int = 0
    closest: list[str] = field(default_factory=list)
    silent: list[str] = field(default_factory=list)


_STATS: ContextVar[FindStats | None] = ContextVar("memnet_find_stats", default=None)
_FAILED: ContextVar[set[ID] | None] = ContextVar("memnet_walk_failed", default=None)
K = 20   # peers a lookup ends with (py-libp2p's bucket size)


class Discovery:
    def __init__(self, dht: KadDHT, query_timeout: float = QUERY_TIMEOUT, grace: float | None = None):
        self.dht = dht
        self.me = dht.host.get_id()
        self.query_timeout, self.grace = query_timeout, grace
        self._count_queries()

    def _count_queries(self) -> None:
        """Count the walk's FIND_NODE queries and rounds for a find that asks (FindStats): the
        query tasks run in the find's context, so they see its stats object."""
        routing = self.dht.peer_routing
        query = routing._query_peer_for_closest

        network = self.dht.host.get_network()

        async def counted(peer, *args, **kwargs):
            if dht_mode.in_client_mode(self.dht.host, peer):
                # a node in client mode (behind a NAT): py-libp2p's walk pads a small routing table
                # with every connected and known peer, and would wait on each of these
                return []
            stats, failed = _STATS.get(), _FAILED.get()
            if stats is not None:
                if stats.in_flight == 0:
                    stats.rounds += 1   # lock-step: a round starts when the previous one has ended
                stats.queries += 1
                stats.in_flight += 1
            try:
                found = await query(peer, *args, **kwargs)
            finally:
                if stats is not None:
                    stats.in_flight -= 1
            if not found and failed is not None and not network.get_connections(peer):
                failed.add(peer)   # py-libp2p answers [] for a peer it could not reach
            return found

        routing._query_peer_for_closest = counted

    async def closest_live(self, key: bytes, stats: FindStats | None = None) -> list[ID]:
        """The K peers nearest key that did not fail this lookup, this node excluded.

        py-libp2p's walk ends with the nearest peers it heard of, reachable or not, and its
        peers learn of others from answers: peers that are gone (Sybils placed near a key and
        then stopped, say) stay in every table for a while and would take a lookup's K places,
        so that the live holders of the records were never asked. Here those that failed are
        dropped and the places filled from this node's own table."""
        token, failed = _STATS.set(stats), _FAILED.set(set())
        try:
            closest = await self.dht.peer_routing.find_closest_peers_network(key)
            dead = _FAILED.get() or set()
        finally:
            _STATS.reset(token)
            _FAILED.reset(failed)
        peers = [p for p in closest if p != self.me and p not in dead]
        if len(peers) < K:
            for peer in self.dht.routing_table.find_local_closest_peers(key, 2 * K):
                if len(peers) >= K:
                    break
                if peer != self.me and peer not in dead and peer not in peers:
                    peers.append(peer)
        return peers

    async def provide(self, key: bytes) -> bool:
        """Announce this node for key; True if at least one peer took the record."""
        return await self.dht.provider_store.provide(key)

    def stop_providing(self, key: bytes) -> None:
        self.dht.provider_store.providing_keys.discard(key)

    async def find_providers(self, key: bytes, count: int = 20, stats: FindStats | None = None) -> list[PeerInfo]:
        """Providers of key, deduplicated by peer, this node excluded (stats: filled in)."""
        store = self.dht.provider_store
        found: dict[ID, PeerInfo] = {p.peer_id: p for p in store.get_providers(key)}
        began = trio.current_time()
        peers = await self.closest_live(key, stats)
        # when to stop waiting is net/provider_wave.py's rule (the simulator runs the same one)
        wave = ProviderWave(len(peers), self.grace, found, timeout=self.query_timeout)
        start = trio.current_time()
        wake = [trio.Event()]

        silent: set[ID] = set(peers)

        async def ask(peer: ID) -> None:
            providers = None
            with trio.move_on_after(self.query_timeout):
                try:
                    providers, closer = await store._get_providers_from_peer_with_closers(peer, key)
                    if providers or closer:   # py-libp2p answers ([], []) for a failed request
                        silent.discard(peer)
                except Exception as exc:  # an unreachable peer just does not answer
                    log.debug("providers from %s failed: %r", peer, exc)
            for info in providers or ():
                known = found.get(info.peer_id)
                if known is None or (not known.addrs and info.addrs):
                    found[info.peer_id] = info
            wave.answer(trio.current_time() - start, [info.peer_id for info in providers or ()])
            wake[0].set()

        async with trio.open_nursery() as nursery:
            for peer in peers:
                nursery.start_soon(ask, peer)
            while not wave.done(trio.current_time() - start):
                wake[0] = trio.Event()
                with trio.move_on_at(start + wave.deadline()):
                    await wake[0].wait()
            nursery.cancel_scope.cancel()
        if stats is not None:
            stats.walk_seconds, stats.wave_seconds = start - began, trio.current_time() - start
            stats.asked, stats.answered = wave.asked, wave.answered
            stats.closest = [str(p) for p in peers]
            stats.silent = [str(p) for p in peers if p in silent]
        found.pop(self.me, None)
        return list(found.values())[:count]

    async def put_value(self, key: str, value: bytes, what: str = "record") -> None:
        """Store a record (validated by the DHT's validator) here and at the k closest peers."""
        try:
            await self.dht.put_value(key, value)
        except MemnetError:
            raise
        except Exception as exc:  # libp2p refuses an older record with ValueError
            raise NetworkError(f"the DHT refused the {what}: {exc}") from None

    async def put_name(self, record: bytes) -> None:
        parsed = name_record.decode(record)
        await self.put_value(name_record.dht_key(parsed.author, parsed.name), record, "name record")

    async def resolve_name(self, author: bytes, name: str) -> name_record.NameRecord | None:
        """The best valid record for (author, name) among this node and the k closest peers."""
        key = name_record.dht_key(author, name)
        records = []
        for value in await self.get_values(key):
            try:
                records.append(name_record.decode(value, key=key))
            except MemnetError as exc:  # forged, expired or replayed under another key
                log.info("ignoring a bad record for %s: %s", key, exc)
        if not records:
            return None
        return records[name_record.best(records)]

    async def get_values(self, key: str) -> list[bytes]:
        """Every value held for key by this node and the k closest peers, unverified: the
        caller decodes and authenticates each."""
        key_bytes = key.encode()
        values: list[bytes] = []
        local = self.dht.value_store.get(key_bytes)
        if local is not None:
            values.append(local.value)
        closest = await self.closest_live(key_bytes)

        async def ask(peer: ID) -> None:
            with trio.move_on_after(self.query_timeout):
                try:
                    value = await self.dht.value_store._get_from_peer(peer, key_bytes)
                except Exception as exc:
                    log.debug("value from %s failed: %r", peer, exc)
                    return
                if isinstance(value, bytes):
                    values.append(value)

        async with trio.open_nursery() as nursery:
            for peer in closest:
                if peer != self.me:
                    nursery.start_soon(ask, peer)
        return values
