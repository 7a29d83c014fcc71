"""The requester side of MIP: one session is one stream to one peer, request then response.
Parallelism comes from several sessions per peer (yamux streams are cheap)."""

from __future__ import annotations

import itertools

from libp2p.abc import IHost
from libp2p.peer.id import ID

from memnet.errors import PeerError
from memnet.net import wire
from memnet.net.streams import FramedStream

REQUEST_TIMEOUT = 30.0
FRAME_TIMEOUT = 10.0


class MipSession:
    def __init__(self, framed: FramedStream):
        self.framed = framed
        self._ids = itertools.count(1)

    @classmethod
    async def open(cls, host: IHost, peer: ID) -> MipSession:
        try:
            stream = await host.new_stream(peer, [wire.PROTOCOL_ID])
        except Exception as exc:
            raise PeerError(f"peer {peer} does not speak {wire.PROTOCOL_ID}: {exc}") from None
        return cls(FramedStream(stream))

    @property
    def peer(self) -> str:
        return self.framed.peer

    async def _reply(self, rid: int, expected: str) -> dict:
        message = await self.framed.receive(REQUEST_TIMEOUT, FRAME_TIMEOUT)
        if message is None:
            raise PeerError(f"peer {self.peer} closed the stream")
        if message["id"] != rid and not (message["t"] == "error" and message["id"] == 0):
            raise PeerError(f"peer {self.peer} answered request {message['id']}, expected {rid}")
        if message["t"] == "error":
            raise PeerError(f"peer {self.peer}: {message['code']}: {message['message']}")
        if message["t"] != expected:
            raise PeerError(f"peer {self.peer} sent {message['t']}, expected {expected}")
        return message

    async def manifest(self, cube_id: bytes) -> bytes:
        """The manifest bytes as the peer sent them: the caller authenticates them."""
        rid = next(self._ids)
        await self.framed.send(wire.get_manifest(rid, cube_id))
        return (await self._reply(rid, "manifest"))["data"]

    async def prefix(self, key: bytes) -> list[bytes]:
        """Ids of the activation cubes the peer holds under a prefix-chain key (unverified: the
        caller fetches and authenticates each manifest)."""
        return (await self.prefixes([key]))[0]

    async def prefixes(self, keys: list[bytes]) -> list[list[bytes]]:
        """prefix() for several keys: the requests go out in one write (one round trip)."""
        rids = [next(self._ids) for _ in keys]
        await self.framed.send(*(wire.get_prefix(rid, key) for rid, key in zip(rids, keys)))
        return [(await self._reply(rid, "cubes"))["cubes"] for rid in rids]

    async def have(self, cube_id: bytes, n_chunks: int) -> list[bool]:
        rid = next(self._ids)
        await self.framed.send(wire.get_have(rid, cube_id))
        return wire.flags_from_bits((await self._reply(rid, "have"))["bits"], n_chunks)

    async def request_chunks(self, cube_id: bytes, chunk_ids: list[bytes]) -> int:
        """Send a get_chunks without waiting for its answer (requests on a stream pipeline: the
        responder answers them in order); returns its id for receive_chunks."""
        rid = next(self._ids)
        await self.framed.send(wire.get_chunks(rid, cube_id, chunk_ids))
        return rid

    async def receive_chunks(self, rid: int, chunk_ids: list[bytes]):
        """Yield (chunk_id, data or None if the peer lacks it) in request order. Data is as
        received: the caller verifies it against chunk_id."""
        for chunk_id in chunk_ids:
            message = await self.framed.receive(REQUEST_TIMEOUT, FRAME_TIMEOUT)
            if message is None:
                raise PeerError(f"peer {self.peer} closed the stream mid-batch")
            if message["t"] == "error":
                raise PeerError(f"peer {self.peer}: {message['code']}: {message['message']}")
            if message["t"] not in ("chunk", "missing") or message["id"] != rid:
                raise PeerError(f"peer {self.peer} sent {message['t']} #{message['id']} mid-batch")
            if message["cid"] != chunk_id:
                raise PeerError(f"peer {self.peer} answered out of order")
            yield chunk_id, message.get("data")

    async def chunks(self, cube_id: bytes, chunk_ids: list[bytes]):
        rid = await self.request_chunks(cube_id, chunk_ids)
        async for item in self.receive_chunks(rid, chunk_ids):
            yield item

    async def close(self) -> None:
        await self.framed.close()

    async def reset(self) -> None:
        """Abandon the stream, answers still due included."""
        await self.framed.reset()
