"""The responder side of MIP: serve manifests and chunks from the local store, within per-peer
limits (streams, request rate, bytes, volume quota) and timeouts; never a revoked cube."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import trio
from libp2p.abc import INetStream

from memnet.errors import MemnetError, NotFoundError
from memnet.governance.revocations import is_revoked
from memnet.net import wire
from memnet.net.quota import RollingQuota
from memnet.net.ratelimit import TokenBucket
from memnet.net.streams import FramedStream
from memnet.store.lmdb_store import Store

log = logging.getLogger("memnet.mip")
MAX_REQUEST_FRAME = 16 * 1024  # a full get_chunks is ~2.5 KB: no peer makes us buffer chunk-sized frames
QUOTA_WINDOW = 3600.0
PRUNE_EVERY = 60.0  # s between sweeps of per-peer state of peers gone idle


@dataclass(frozen=True)
class ServeLimits:
    streams_per_peer: int = 16
    requests_per_s: float = 200.0     # per peer; a batch of chunks is one request
    request_burst: float = 400.0
    peer_bytes_per_s: float = 0.0     # upload cap per peer; 0 = none
    upload_bytes_per_s: float = 0.0   # upload cap for the whole node; 0 = none
    idle_timeout: float = 60.0        # a stream with no request for this long is closed
    frame_timeout: float = 10.0       # a started frame must arrive within this
    quota_bytes_per_hour: float = 4.0 * 2**30  # chunk bytes one peer may take per rolling hour; 0 = none


class MipServer:
    def __init__(self, store: Store, limits: ServeLimits = ServeLimits()):
        self.store, self.limits = store, limits
        self._streams: Counter[str] = Counter()
        self._requests: dict[str, TokenBucket] = {}
        self._peer_bytes: dict[str, TokenBucket] = {}
        self._upload = self._bytes_bucket(limits.upload_bytes_per_s)
        self._quota = RollingQuota(limits.quota_bytes_per_hour, QUOTA_WINDOW)
        self._pruned_at = 0.0
        self.served_bytes = 0

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
        framed = FramedStream(stream, MAX_REQUEST_FRAME)
        peer = framed.peer
        self._prune()
        if self._streams[peer] >= self.limits.streams_per_peer:
            await self._refuse(framed, wire.error(0, "busy", "too many streams from this peer"))
            return
        self._streams[peer] += 1
        try:
            await self._serve(framed, peer)
            await framed.close()
        except MemnetError as exc:  # the peer broke the protocol: say why once, then hang up
            log.info("peer %s: %s", peer, exc)
            await self._refuse(framed, wire.error(0, "bad_request", str(exc)))
        except Exception as exc:  # the stream died under us (reset, connection lost)
            log.debug("peer %s stream ended: %r", peer, exc)
            await framed.reset()
        finally:
            self._streams[peer] -= 1
            if not self._streams[peer]:
                del self._streams[peer]

    async def _refuse(self, framed: FramedStream, message: dict) -> None:
        try:
            await framed.send(message)
        except Exception:
            pass
        await framed.close()

    async def _serve(self, framed: FramedStream, peer: str) -> None:
        requests = self._requests.setdefault(
            peer, TokenBucket(self.limits.requests_per_s, self.limits.request_burst, trio.current_time()))
        while True:
            message = await framed.receive(self.limits.idle_timeout, self.limits.frame_timeout)
            if message is None:
                return
            if message["t"] not in wire.REQUESTS:
                raise MemnetError(f"{message['t']} is not a request")
            if not requests.try_take(1, trio.current_time()):
                await framed.send(wire.error(message["id"], "rate_limited", "slow down"))
                continue
            refusal = self._refusal(peer, message)
            if refusal is not None:
                await framed.send(wire.error(message["id"], *refusal))
                continue
            await self._answer(framed, peer, message)

    def _refusal(self, peer: str, message: dict) -> tuple[str, str] | None:
        """(code, text) when this request is refused as a whole: a cube its author revoked, or
        chunks beyond the peer's quota (checked per batch, so a batch may overshoot it by at
        most MAX_BATCH chunks)."""
        if "cube" in message and is_revoked(self.store, message["cube"]):
            return "revoked", "its author revoked this cube"
        if message["t"] == "get_chunks" and self._quota.exceeded(peer, trio.current_time()):
            return "quota", f"this peer's quota of {self.limits.quota_bytes_per_hour:.0f} bytes an hour is used up"
        return None

    async def _answer(self, framed: FramedStream, peer: str, message: dict) -> None:
        rid, kind = message["id"], message["t"]
        if kind == "get_chunks":
            await self._send_chunks(framed, peer, rid, message["chunks"])
            return
        try:
            if kind == "get_manifest":
                reply = wire.manifest(rid, self.store.manifest_bytes(message["cube"]))
            elif kind == "get_prefix":  # the activation cubes held under a prefix-chain key
                held = [c for c in self.store.find("prefix", message["key"]) if not is_revoked(self.store, c)]
                reply = wire.cubes(rid, held[:wire.MAX_PREFIX_CUBES])
            else:  # get_have
                chunk_ids = list(self.store.manifest(message["cube"]).chunks)
                reply = wire.have(rid, wire.bits_from_flags(self.store.has_chunks(chunk_ids)))
        except NotFoundError:
            reply = wire.error(rid, "not_found", "no such cube here")
        await framed.send(reply)

    async def _send_chunks(self, framed: FramedStream, peer: str, rid: int, chunk_ids: list[bytes]) -> None:
        peer_bytes = self._peer_bytes.setdefault(peer, self._bytes_bucket(self.limits.peer_bytes_per_s))
        for chunk_id in chunk_ids:
            data = self.store.chunk(chunk_id)
            if data is None:
                await framed.send(wire.missing(rid, chunk_id))
                continue
            now = trio.current_time()
            delay = max(peer_bytes.reserve(len(data), now), self._upload.reserve(len(data), now))
            if delay:
                await trio.sleep(delay)
            await framed.send(wire.chunk(rid, chunk_id, data))
            self.served_bytes += len(data)
            self._quota.add(peer, len(data), trio.current_time())
