"""The responder side of MIP: serve manifests and chunks from the local store, within per-peer
limits (streams, request rate, bytes, volume quota) and timeouts; never a revoked cube. Each
stream is a ServerSession (memnet/net/session.py) driven here.

A stream this server is done with is never left half-open: after the requester's own close it
is closed; after a violation, a refusal or a timeout it is half-closed, drained for at most
DRAIN_SECONDS / DRAIN_BYTES (so the requester can read the error frame), then reset. A requester
that keeps writing to a stream the server no longer reads cannot make it buffer anything.
"""

from __future__ import annotations

import logging
from collections import Counter

import trio
from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamEOF

from memnet.config import ServeLimits
from memnet.errors import MemnetError, NotFoundError
from memnet.governance.revocations import is_revoked
from memnet.net import wire
from memnet.net.quota import RollingQuota
from memnet.net.ratelimit import TokenBucket
from memnet.net.session import MAX_REQUEST_FRAME, ServerSession
from memnet.net.streams import READ_SIZE, FramedStream
from memnet.store.lmdb_store import Store

log = logging.getLogger("memnet.mip")
QUOTA_WINDOW = 3600.0
PRUNE_EVERY = 60.0    # s between sweeps of per-peer state of peers gone idle
DRAIN_SECONDS = 2.0   # after an error frame: time the requester has to read it and hang up
DRAIN_BYTES = 256 * 1024
LISTED_CACHE = 32     # cubes whose chunk lists are kept at hand

__all__ = ["MAX_REQUEST_FRAME", "MipServer", "ServeLimits"]


class MipServer:
    def __init__(self, store: Store, limits: ServeLimits = ServeLimits()):
        self.store = store
        self._streams: Counter[str] = Counter()
        self._requests: dict[str, TokenBucket] = {}
        self._peer_bytes: dict[str, TokenBucket] = {}
        self._pruned_at = 0.0
        self._listed: dict[bytes, frozenset[bytes]] = {}  # cube id -> its chunk CIDs (a few recent cubes)
        self.served_bytes = 0
        self.limits = limits

    @property
    def limits(self) -> ServeLimits:
        return self._limits

    @limits.setter
    def limits(self, limits: ServeLimits) -> None:
        """New limits (config reloaded): node-wide ones now, per-peer buckets as peers come back."""
        self._limits = limits
        self._upload = self._bytes_bucket(limits.upload_bytes_per_s)
        old = getattr(self, "_quota", None)
        if old is None or old.limit != limits.quota_bytes_per_hour:
            self._quota = RollingQuota(limits.quota_bytes_per_hour, QUOTA_WINDOW)
        self._requests.clear()
        self._peer_bytes.clear()

    def _bytes_bucket(self, rate: float) -> TokenBucket:
        # reserve() lets a frame go into debt, so the burst need not hold a whole frame; an
        # eighth of a second keeps the cap honest over short transfers too
        return TokenBucket(rate, rate / 8, trio.current_time() if rate else 0.0)

    def _prune(self) -> None:
        """Forget the buckets and quotas of peers with no stream open whose state is back to a
        new peer's (full buckets, nothing in the quota window): memory stays bounded by the
        peers active lately, not all peers ever seen."""
        now = trio.current_time()
        if now - self._pruned_at < PRUNE_EVERY:
            return
        self._pruned_at = now
        for buckets in (self._requests, self._peer_bytes):
            for peer in [p for p, b in buckets.items() if p not in self._streams and b.idle(now)]:
                del buckets[peer]
        self._quota.prune(now)

    async def handle(self, stream: INetStream) -> None:
        session = ServerSession(MAX_REQUEST_FRAME)
        framed = FramedStream(stream, session)
        peer = framed.peer
        self._prune()
        if self._streams[peer] >= self.limits.streams_per_peer:
            await self._hang_up(framed, wire.encode_frame(wire.error(0, "busy", "too many streams from this peer")))
            return
        self._streams[peer] += 1
        try:
            await self._serve(framed, session, peer)
            await framed.close()  # the requester closed its side: so do we
        except MemnetError as exc:  # a violation or a timeout: say why once, then hang up
            log.info("peer %s: %s", peer, exc)
            await self._hang_up(framed, session.violation(exc))
        except Exception as exc:  # the stream died under us (reset, connection lost)
            log.debug("peer %s stream ended: %r", peer, exc)
            await framed.reset()
        finally:
            self._streams[peer] -= 1
            if not self._streams[peer]:
                del self._streams[peer]

    async def _hang_up(self, framed: FramedStream, last_words: bytes) -> None:
        """Send a last frame, half-close, read and drop what still comes for a bounded time and
        amount, then reset: nothing is left buffered for a stream nobody reads."""
        try:
            with trio.move_on_after(DRAIN_SECONDS):
                await framed.send_bytes(last_words)
                await framed.close()
                drained = 0
                while drained < DRAIN_BYTES:
                    try:
                        data = await framed.stream.read(READ_SIZE)
                    except StreamEOF:
                        break
                    if not data:
                        break
                    drained += len(data)
        except Exception:  # the stream died under us: nothing left to drain
            pass
        await framed.reset()

    async def _serve(self, framed: FramedStream, session: ServerSession, peer: str) -> None:
        requests = self._requests.setdefault(
            peer, TokenBucket(self.limits.requests_per_s, self.limits.request_burst, trio.current_time()))
        while True:
            message = await framed.receive(self.limits.idle_timeout, self.limits.frame_timeout)
            if message is None:
                return
            if not requests.try_take(1, trio.current_time()):
                await framed.send(wire.error(message.id, "rate_limited", "slow down"))
                continue
            refusal = self._refusal(peer, message)
            if refusal is not None:
                await framed.send(wire.error(message.id, *refusal))
                continue
            await self._answer(framed, peer, message)

    def _refusal(self, peer: str, message: wire.Request) -> tuple[str, str] | None:
        """(code, text) when this request is refused as a whole: a cube its author revoked, or
        chunks beyond the peer's quota (checked per batch, so a batch may overshoot it by at
        most MAX_BATCH chunks)."""
        cube = getattr(message, "cube", None)
        if cube is not None and is_revoked(self.store, cube):
            return "revoked", "its author revoked this cube"
        if type(message) is wire.GetChunks and self._quota.exceeded(peer, trio.current_time()):
            return "quota", f"this peer's quota of {self.limits.quota_bytes_per_hour:.0f} bytes an hour is used up"
        return None

    async def _answer(self, framed: FramedStream, peer: str, message: wire.Request) -> None:
        rid = message.id
        if type(message) is wire.GetChunks:
            listed = self._chunks_of(message.cube)
            if listed is None:
                await framed.send(wire.error(rid, "not_found", "no such cube here"))
            else:
                await self._send_chunks(framed, peer, rid, message.chunks, listed)
            return
        try:
            if type(message) is wire.GetManifest:
                reply = wire.manifest(rid, self.store.manifest_bytes(message.cube))
            elif type(message) is wire.GetPrefix:  # the activation cubes held under a prefix-chain key
                held = [c for c in self.store.find("prefix", message.key) if not is_revoked(self.store, c)]
                reply = wire.cubes(rid, held[:wire.MAX_PREFIX_CUBES])
            else:  # get_have
                chunk_ids = list(self.store.manifest(message.cube).chunks)
                reply = wire.have(rid, wire.bits_from_flags(self.store.has_chunks(chunk_ids)))
        except NotFoundError:
            reply = wire.error(rid, "not_found", "no such cube here")
        await framed.send(reply)

    def _chunks_of(self, cube_id: bytes) -> frozenset[bytes] | None:
        """The chunk CIDs of a stored cube (None: not held). A chunk is served only as part of
        the cube a request names, and only if that cube is servable (not revoked: checked
        before), so a revoked cube's chunks cannot be had by naming another cube."""
        listed = self._listed.get(cube_id)
        if listed is None:
            try:
                listed = frozenset(self.store.manifest(cube_id).chunks)
            except NotFoundError:
                return None
            if len(self._listed) >= LISTED_CACHE:
                self._listed.pop(next(iter(self._listed)))
            self._listed[cube_id] = listed
        return listed

    async def _send_chunks(self, framed: FramedStream, peer: str, rid: int, chunk_ids: list[bytes],
                           listed: frozenset[bytes]) -> None:
        peer_bytes = self._peer_bytes.setdefault(peer, self._bytes_bucket(self.limits.peer_bytes_per_s))
        for chunk_id in chunk_ids:
            data = self.store.chunk(chunk_id) if chunk_id in listed else None
            if data is None:
                await framed.send(wire.missing(rid, chunk_id))
                continue
            now = trio.current_time()
            delay = max(peer_bytes.reserve(len(data), now), self._upload.reserve(len(data), now))
            if delay:
                await trio.sleep(delay)
            await framed.send_bytes(wire.encode_frame(wire.Chunk(id=rid, cid=chunk_id, data=data)))
            self.served_bytes += len(data)
            self._quota.add(peer, len(data), trio.current_time())
