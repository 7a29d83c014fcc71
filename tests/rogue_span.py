"""A misbehaving hivemind peer for the distributed-inference tests (its own process: hivemind and
py-libp2p cannot share one).

    garbage MADDR PEERID   open span streams to the server and send it malformed frames, a step
                           before open, an open for another model, a 60 MiB frame before the
                           open, and more idle streams than one peer may hold; print one line per
                           probe with what came back; exit
"""

from __future__ import annotations

import asyncio
import sys

from memnet.net.frames import varint
from memnet.span import protocol as p


async def probe(p2p, peer, payload: bytes) -> str:
    _, reader, writer = await p2p.call_binary_stream_handler(peer, p.PROTOCOL_ID)
    writer.write(payload)
    await writer.drain()
    try:
        return await answer(reader, 10)
    finally:
        writer.close()


async def answer(reader, timeout: float) -> str:
    try:
        data = await asyncio.wait_for(reader.read(1 << 16), timeout)
    except asyncio.TimeoutError:
        return "silence"
    if not data:
        return "closed"
    decoder = p.Decoder()
    decoder.feed(data)
    try:
        message = decoder.next()
    except Exception as exc:
        return f"undecodable {exc!r}"
    if message is None:
        return "a part of a frame"
    return f"{message.t} {getattr(message, 'code', '')}".strip()


async def garbage(maddr: str, peer_b58: str) -> None:
    from hivemind.p2p import P2P, PeerID

    p2p = await P2P.create(initial_peers=[maddr])
    peer = PeerID.from_base58(peer_b58)
    payloads = {
        "not msgpack": b"\x05\xc1\xc1\xc1\xc1\xc1",
        "huge length": b"\xff\xff\xff\x7f",
        "step before open": p.encode(p.Step(0, 0, 1, bytes(4))),
        "other model": p.encode(p.Open(0, 1, 16, bytes(32))),
        "server message": p.encode(p.Opened(0, "none", 0)),
        "60 MiB before open": varint(60 << 20) + bytes(1 << 16),   # refused at the header, not buffered
    }
    for name, payload in payloads.items():
        print(f"{name}: {await probe(p2p, peer, payload)}", flush=True)
    idle = []
    for _ in range(20):  # streams opened and left silent: at most 16 of one peer are served
        idle.append(await p2p.call_binary_stream_handler(peer, p.PROTOCOL_ID))
    answers = await asyncio.gather(*(answer(reader, 3) for _, reader, _ in idle))
    print(f"idle streams: {len(idle)}, refused busy: {answers.count('error busy')}", flush=True)
    for _, _, writer in idle:
        writer.close()
    await p2p.shutdown()


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "garbage":
        asyncio.run(garbage(sys.argv[2], sys.argv[3]))
    else:
        raise SystemExit(__doc__)
