"""Hostile clients of a span server for scripts/campaign_span.py, each run as its own process
(hivemind lives apart from py-libp2p):

    python scripts/span_adversaries.py ATTACK JSON-ARGS

JSON-ARGS: {"maddr", "peer", "model" (hex), "start", "end", "hidden", "max_length", "identities",
...}. The attack prints {"ready": ...} once in effect, then {"stats": ...} every second, until it
is killed. Attacks (reliability issue 17, extended to the span servers):

fuzz       span streams of generated and mutated input: valid opens and steps with bytes flipped,
           inserted, cut; truncated and oversized frames; garbage; unknown and server message
           types; steps before an open; opens a byte at a time. One stream each, 8 at a time; the
           first answer of each is counted
bigframe   streams that announce a 60 MiB frame before their open and send it at full speed
hog        identities that open the most sessions they may at the server's max_length (reserving
           the cache budget) and then say nothing; reopened as soon as one ends
flood      streams opened as fast as the server takes them, each a valid open and close at once,
           and more silent streams per identity than the server allows
trickle    valid sessions whose steps arrive a byte at a time
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from memnet.net.frames import varint  # noqa: E402
from memnet.span import protocol as p  # noqa: E402

stats: Counter = Counter()


def say(**fields) -> None:
    print(json.dumps(fields, default=str), flush=True)


async def report_forever() -> None:
    while True:
        say(stats=dict(stats))
        await asyncio.sleep(1.0)


class Target:
    def __init__(self, args: dict):
        from hivemind.p2p import PeerID

        self.args, self.maddr = args, args["maddr"]
        self.peer = PeerID.from_base58(args["peer"])
        self.model = bytes.fromhex(args["model"])
        self.start, self.end, self.hidden = args["start"], args["end"], args["hidden"]
        self.max_length = args["max_length"]

    async def identity(self):
        from hivemind.p2p import P2P

        return await P2P.create(initial_peers=[self.maddr], host_maddrs=["/ip4/127.0.0.1/tcp/0"])

    def open(self, max_length: int = 16) -> bytes:
        return p.encode(p.Open(self.start, self.end, max_length, self.model))

    def step(self, step: int, position: int, tokens: int) -> bytes:
        return p.encode(p.Step(step, position, tokens, os.urandom(4) * (tokens * self.hidden)))


async def first_answer(reader, timeout: float) -> str:
    """What the server said first: a message type and error code, 'silence' or 'closed'."""
    decoder = p.Decoder()
    deadline = time.monotonic() + timeout
    while True:
        try:
            data = await asyncio.wait_for(reader.read(1 << 16), max(0.01, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            return "silence"
        except Exception as exc:
            return f"ended: {type(exc).__name__}"
        if not data:
            return "closed"
        decoder.feed(data)
        try:
            message = decoder.next()
        except Exception as exc:
            return f"unparsable: {type(exc).__name__}"
        if message is not None:
            return f"{message.t} {getattr(message, 'code', '')}".strip()


# -- fuzz ------------------------------------------------------------------------------------------

def mutate(data: bytes, rng: random.Random) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        how = rng.random()
        i = rng.randrange(len(data) + 1)
        if how < 0.4 and data:
            data[min(i, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif how < 0.6:
            data[i:i] = os.urandom(rng.randint(1, 8))
        elif how < 0.8 and data:
            del data[i:i + rng.randint(1, 8)]
        else:
            data[i:i] = bytes([rng.choice((0x00, 0x7F, 0x80, 0xFF, 0xC1, 0xDC, 0xDE))])
    return bytes(data)


def fuzz_input(target: Target, rng: random.Random) -> tuple[str, bytes, float]:
    """(kind, bytes, delay between bytes)"""
    valid = [target.open(rng.choice((1, 16, 64))),
             target.open(16) + target.step(0, 0, rng.randint(1, 4)),
             target.open(16) + target.step(0, 0, 2) + target.step(1, 2, 1) + p.encode(p.Close())]
    kind = rng.choices(["mutated", "truncated", "oversized", "garbage", "server message", "unknown type",
                        "step before open", "wrong order", "byte at a time", "valid"],
                       [40, 10, 8, 8, 6, 6, 6, 6, 2, 8])[0]
    if kind == "mutated":
        return kind, mutate(rng.choice(valid), rng), 0
    if kind == "truncated":
        data = rng.choice(valid)
        return kind, data[:rng.randrange(1, len(data))], 0
    if kind == "oversized":
        return kind, varint(rng.choice((p.MAX_FRAME + 1, 60 << 20, 1 << 20, 20_000, 2**35))) + os.urandom(64), 0
    if kind == "garbage":
        return kind, os.urandom(rng.randint(1, 300)), 0
    if kind == "server message":
        return kind, rng.choice([p.encode(p.Opened(0, "none", 0)), p.encode(p.Output(0, b"\x00" * 8)),
                                 p.encode(p.error("internal", "x"))]), 0
    if kind == "unknown type":
        from memnet.cube import canonical
        from memnet.net.frames import frame
        return kind, frame(canonical.encode({"t": rng.choice(["get", "hello", "open2", ""]), "x": 1})), 0
    if kind == "step before open":
        return kind, target.step(0, 0, 1), 0
    if kind == "wrong order":
        return kind, target.open(16) + target.step(3, 0, 1) + target.step(1, 1, 1), 0
    if kind == "byte at a time":
        return kind, target.open(16), 0.01
    return kind, rng.choice(valid), 0


async def fuzz(target: Target) -> None:
    rng = random.Random(target.args.get("seed", 1))
    p2p = await target.identity()
    say(ready={"inputs": target.args["inputs"]})
    answers: Counter = Counter()
    done = 0

    async def one() -> None:
        kind, data, delay = fuzz_input(target, rng)
        try:
            _, reader, writer = await p2p.call_binary_stream_handler(target.peer, p.PROTOCOL_ID)
        except Exception as exc:
            stats[f"stream refused: {type(exc).__name__}"] += 1
            return
        try:
            if delay:
                for i in range(len(data)):
                    writer.write(data[i:i + 1])
                    await writer.drain()
                    await asyncio.sleep(delay)
            else:
                writer.write(data)
                await writer.drain()
            answer = await first_answer(reader, 2.0)
        except Exception as exc:
            answer = f"ended: {type(exc).__name__}"
        finally:
            with contextlib.suppress(Exception):
                writer.close()
        answers[f"{kind} -> {answer}"] += 1
        stats[answer] += 1

    while done < target.args["inputs"]:
        batch = min(8, target.args["inputs"] - done)
        await asyncio.gather(*(one() for _ in range(batch)))
        done += batch
        stats["inputs"] = done
    say(stats=dict(stats), answers=dict(answers), finished=True)
    while True:
        await asyncio.sleep(3600)


# -- bigframe --------------------------------------------------------------------------------------

async def bigframe(target: Target) -> None:
    identities = [await target.identity() for _ in range(target.args["identities"])]
    say(ready={"identities": len(identities)})
    piece = os.urandom(1 << 20)

    async def hold(p2p) -> None:
        while True:
            try:
                _, reader, writer = await p2p.call_binary_stream_handler(target.peer, p.PROTOCOL_ID)
                writer.write(varint(60 << 20))
                sent = 0
                answer = asyncio.create_task(first_answer(reader, 40.0))
                while sent < (60 << 20) - 1 and not answer.done():
                    writer.write(piece[:min(len(piece), (60 << 20) - 1 - sent)])
                    await asyncio.wait_for(writer.drain(), 10)
                    sent += len(piece)
                    stats["bytes sent"] += len(piece)
                stats[f"answer: {await answer}"] += 1
            except Exception as exc:
                stats[f"ended: {type(exc).__name__}"] += 1
            await asyncio.sleep(0.1)

    await asyncio.gather(*(hold(p2p) for p2p in identities for _ in range(target.args["streams"])))


# -- hog -------------------------------------------------------------------------------------------

async def hog(target: Target) -> None:
    identities = [await target.identity() for _ in range(target.args["identities"])]
    held = Counter()

    async def hold(p2p, i: int) -> None:
        while True:
            try:
                _, reader, writer = await p2p.call_binary_stream_handler(target.peer, p.PROTOCOL_ID)
                writer.write(target.open(target.max_length))
                await writer.drain()
                answer = await first_answer(reader, 30.0)
                stats[f"open: {answer}"] += 1
                if answer == "opened":
                    held[i] = 1
                    stats["held now"] = sum(held.values())
                    stats[f"then: {await first_answer(reader, 3600.0)}"] += 1   # until the server ends it
                    held[i] = 0
                with contextlib.suppress(Exception):
                    writer.close()
            except Exception as exc:
                stats[f"ended: {type(exc).__name__}"] += 1
            held[i] = 0
            stats["held now"] = sum(held.values())
            await asyncio.sleep(0.2)

    tasks = [hold(p2p, i * 100 + j) for i, p2p in enumerate(identities) for j in range(target.args["sessions"])]
    say(ready={"identities": len(identities), "sessions": len(tasks), "max_length": target.max_length})
    await asyncio.gather(*tasks)


# -- flood -----------------------------------------------------------------------------------------

async def flood(target: Target) -> None:
    identities = [await target.identity() for _ in range(target.args["identities"])]
    say(ready={"identities": len(identities)})
    message = target.open(16) + p.encode(p.Close())

    async def churn(p2p) -> None:
        while True:
            try:
                _, reader, writer = await p2p.call_binary_stream_handler(target.peer, p.PROTOCOL_ID)
                writer.write(message)
                await writer.drain()
                stats[f"open+close: {await first_answer(reader, 10.0)}"] += 1
                writer.close()
            except Exception as exc:
                stats[f"ended: {type(exc).__name__}"] += 1
                await asyncio.sleep(0.05)

    async def crowd(p2p) -> None:
        """More silent streams than one peer may hold: the extra ones should be refused as busy."""
        while True:
            opened = []
            for _ in range(target.args["silent"]):
                try:
                    opened.append(await p2p.call_binary_stream_handler(target.peer, p.PROTOCOL_ID))
                except Exception as exc:
                    stats[f"silent: {type(exc).__name__}"] += 1
            answers = await asyncio.gather(*(first_answer(r, 12.0) for _, r, _ in opened))
            for answer in answers:
                stats[f"silent stream: {answer}"] += 1
            for _, _, writer in opened:
                with contextlib.suppress(Exception):
                    writer.close()

    await asyncio.gather(*(churn(p2p) for p2p in identities for _ in range(target.args["streams"])),
                         *(crowd(p2p) for p2p in identities))


# -- trickle ---------------------------------------------------------------------------------------

async def trickle(target: Target) -> None:
    identities = [await target.identity() for _ in range(target.args["identities"])]
    say(ready={"identities": len(identities)})

    async def slow(p2p) -> None:
        while True:
            try:
                _, reader, writer = await p2p.call_binary_stream_handler(target.peer, p.PROTOCOL_ID)
                writer.write(target.open(16))
                await writer.drain()
                if await first_answer(reader, 30.0) != "opened":
                    stats["not opened"] += 1
                    continue
                data = target.step(0, 0, 1)
                for i in range(len(data)):
                    writer.write(data[i:i + 1])
                    await writer.drain()
                    stats["bytes"] += 1
                    await asyncio.sleep(target.args["delay"])
                stats[f"step: {await first_answer(reader, 30.0)}"] += 1
                writer.close()
            except Exception as exc:
                stats[f"ended: {type(exc).__name__}"] += 1
                await asyncio.sleep(0.1)

    await asyncio.gather(*(slow(p2p) for p2p in identities for _ in range(target.args["streams"])))


ATTACKS = {"fuzz": fuzz, "bigframe": bigframe, "hog": hog, "flood": flood, "trickle": trickle}


async def main() -> None:
    name, args = sys.argv[1], json.loads(sys.argv[2])
    reporter = asyncio.create_task(report_forever())
    try:
        await ATTACKS[name](Target(args))
    finally:
        reporter.cancel()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ATTACKS:
        raise SystemExit(__doc__)
    asyncio.run(main())
