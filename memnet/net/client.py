"""The requester side of MIP over one libp2p stream: drives a ClientSession (the session rules
live there, memnet/net/session.py). Parallelism comes from several sessions per peer (yamux
streams are cheap)."""

from __future__ import annotations

import trio
from libp2p.abc import IHost, INetStream
from libp2p.peer.id import ID

from memnet.errors import PeerError, PeerGone
from memnet.net import wire
from memnet.net.session import ClientSession
from memnet.net.streams import FramedStream

REQUEST_TIMEOUT = 30.0
FRAME_TIMEOUT = 10.0
OPEN_TRIES = 2
OPEN_RETRY_PAUSE = 0.2


def refused(exc: BaseException) -> bool:
    """Did the peer answer that it does not speak the protocol (py-libp2p's multiselect says
    "protocols not supported"), as opposed to a stream that failed on the way?"""
    for _ in range(8):  # a cause chain, bounded
        if exc is None:
            return False
        if "not supported" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class MipSession:
    def __init__(self, stream: INetStream):
        self.framed = FramedStream(stream)
        self.session = ClientSession(self.framed.peer)
        self.framed.receiver = self.session

    @classmethod
    async def open(cls, host: IHost, peer: ID) -> MipSession:
        """A stream to peer speaking MIP. A failed open that the peer did not refuse (a handshake
        read or write that failed, a negotiation that timed out: seen on loopback under load, on
        a connection both sides dialled at once) is tried once more before the peer counts as
        gone; a peer that answered "na" is not asked again."""
        for attempt in range(OPEN_TRIES):
            if attempt:
                await trio.sleep(OPEN_RETRY_PAUSE)
            try:
                return cls(await host.new_stream(peer, [wire.PROTOCOL_ID]))
            except Exception as exc:
                failure = exc
                if refused(exc):
                    break
        cause = f" ({type(failure.__cause__).__name__}: {failure.__cause__})" if failure.__cause__ else ""
        if refused(failure):
            raise PeerError(f"peer {peer} does not speak {wire.PROTOCOL_ID}: {failure}{cause}") from None
        raise PeerGone(f"no stream to peer {peer}: {failure}{cause}") from None

    @property
    def peer(self) -> str:
        return self.framed.peer

    async def _reply(self, idle_timeout: float = REQUEST_TIMEOUT) -> wire.Message:
        """The next reply (the session checked that it answers the oldest request); an error
        reply is raised as PeerError, and so is no frame starting within idle_timeout."""
        message = await self.framed.receive(idle_timeout, FRAME_TIMEOUT)
        if message is None:
            raise PeerGone(f"peer {self.peer} closed the stream")
        if type(message) is wire.Error:
            raise PeerError(f"peer {self.peer}: {message.code}: {message.message}")
        return message

    async def manifest(self, cube_id: bytes) -> bytes:
        """The manifest bytes as the peer sent them: the caller authenticates them."""
        _, frame = self.session.get_manifest(cube_id)
        await self.framed.send_bytes(frame)
        return (await self._reply()).data

    async def prefix(self, key: bytes) -> list[bytes]:
        """Ids of the activation cubes the peer holds under a prefix-chain key (unverified: the
        caller fetches and authenticates each manifest)."""
        return (await self.prefixes([key]))[0]

    async def prefixes(self, keys: list[bytes]) -> list[list[bytes]]:
        """prefix() for several keys: the requests go out in one write (one round trip)."""
        frames = [self.session.get_prefix(key)[1] for key in keys]
        await self.framed.send_bytes(b"".join(frames))
        return [(await self._reply()).cubes for _ in keys]

    async def have(self, cube_id: bytes, n_chunks: int) -> list[bool]:
        _, frame = self.session.get_have(cube_id)
        await self.framed.send_bytes(frame)
        return wire.flags_from_bits((await self._reply()).bits, n_chunks)

    async def request_chunks(self, cube_id: bytes, chunk_ids: list[bytes]) -> int:
        """Send a get_chunks without waiting for its answer (requests on a stream pipeline: the
        responder answers them in order); returns its id for receive_chunks."""
        rid, frame = self.session.get_chunks(cube_id, chunk_ids)
        await self.framed.send_bytes(frame)
        return rid

    async def next_chunk(self, rid: int, idle_timeout: float = REQUEST_TIMEOUT) -> bytes | None:
        """The next answer of get_chunks request rid: the chunk's data as received (the caller
        verifies it), or None if the peer lacks it. PeerTimeout when no frame starts within
        idle_timeout (the session stays usable: the caller may wait again)."""
        message = await self._reply(idle_timeout)
        if message.id != rid:  # the caller read another request's answers out of turn
            raise PeerError(f"answers of request {message.id} read as those of {rid}")
        return message.data if type(message) is wire.Chunk else None

    async def receive_chunks(self, rid: int, chunk_ids: list[bytes]):
        """Yield (chunk_id, data or None if the peer lacks it) in request order. Data is as
        received: the caller verifies it against chunk_id."""
        for chunk_id in chunk_ids:
            yield chunk_id, await self.next_chunk(rid)

    async def chunks(self, cube_id: bytes, chunk_ids: list[bytes]):
        rid = await self.request_chunks(cube_id, chunk_ids)
        async for item in self.receive_chunks(rid, chunk_ids):
            yield item

    async def close(self) -> None:
        await self.framed.close()

    async def reset(self) -> None:
        """Abandon the stream, answers still due included."""
        await self.framed.reset()
