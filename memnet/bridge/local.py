"""The bridge's local channel: how this node's CLI and API run a distributed generation.

Loopback TCP, one chain per connection, authenticated like the daemon's control channel: the
first frame (at most 4 KiB) must hold the token of HOME/bridge.json (mode 0600). Frames are a
4-byte big-endian length and a msgpack map:

    {op: "open", max_length, [seed: {cube, tokens, key, bytes}], tokens}
                                      -> {ok: {position, route: [{peer, start, end, source, fetched}]}}
    {op: "step", position, tokens, hidden}  -> {ok: {hidden, failovers}}
    {op: "servers"}                   -> {ok: [span records]}
    {op: "close"}                     -> {ok: null}, and the connection ends
    any failure                       -> {error: message, code: protocol code or ""}
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import secrets
import struct
from pathlib import Path
from typing import Any

import msgpack

from memnet.bridge.chain import Chain
from memnet.errors import MemnetError
from memnet.files import write_atomic
from memnet.span import protocol as p

log = logging.getLogger("memnet.bridge")

STATE_FILE = "bridge.json"
HEADER = struct.Struct(">I")
MAX_HELLO = 4096
MAX_FRAME = 80 * 1024 * 1024
IDLE_TIMEOUT = 600.0


async def read_frame(reader: asyncio.StreamReader, limit: int, timeout: float) -> dict | None:
    try:
        head = await asyncio.wait_for(reader.readexactly(HEADER.size), timeout)
    except asyncio.IncompleteReadError:
        return None
    (length,) = HEADER.unpack(head)
    if length > limit:
        raise MemnetError("frame too large")
    body = await asyncio.wait_for(reader.readexactly(length), timeout)
    message = msgpack.unpackb(body, raw=False, strict_map_key=True)
    if not isinstance(message, dict):
        raise MemnetError("malformed frame")
    return message


def pack(message: dict) -> bytes:
    body = msgpack.packb(message, use_bin_type=True)
    return HEADER.pack(len(body)) + body


class LocalChannel:
    def __init__(self, home: Path, node: Any, model: bytes, layers: int, hidden_size: int, step_timeout: float):
        self.home, self.node, self.model = Path(home), node, model
        self.layers, self.hidden_size, self.step_timeout = layers, hidden_size, step_timeout
        self.token = secrets.token_hex(32)
        self.server: asyncio.base_events.Server | None = None
        self.chains = 0
        self.records_cache: dict = {}  # shared by the chains: one DHT read serves several

    async def start(self, extra: dict[str, Any]) -> None:
        self.server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        state = {"pid": os.getpid(), "port": port, "token": self.token, "peer_id": self.node.peer_id,
                 "model": self.model.hex(), **extra}
        write_atomic(self.home / STATE_FILE, json.dumps(state, indent=1).encode(), mode=0o600)

    def remove_state(self) -> None:
        (self.home / STATE_FILE).unlink(missing_ok=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        chain: Chain | None = None
        try:
            hello = await read_frame(reader, MAX_HELLO, 10)
            given = hello.get("token") if hello else None
            if not isinstance(given, str) or not hmac.compare_digest(given.encode(), self.token.encode()):
                writer.write(pack({"error": "bad bridge token", "code": ""}))
                return
            chain = Chain(self.node, self.model, self.layers, self.hidden_size, self.step_timeout,
                          self.records_cache)
            while True:
                request = await read_frame(reader, MAX_FRAME, IDLE_TIMEOUT)
                if request is None:
                    return
                try:
                    reply = {"ok": await self._answer(chain, request)}
                except MemnetError as exc:
                    reply = {"error": str(exc), "code": getattr(exc, "code", "") or ""}
                writer.write(pack(reply))
                await writer.drain()
                if request.get("op") == "close" or "error" in reply:
                    return
        except (MemnetError, asyncio.TimeoutError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        except Exception:
            log.exception("local bridge connection failed")
        finally:
            if chain is not None:
                await chain.close()
            writer.close()

    async def _answer(self, chain: Chain, request: dict) -> Any:
        op = request.get("op")
        if op == "open":
            seed = request.get("seed")
            parsed = None
            if seed is not None:
                parsed = p.Seed(bytes(seed["cube"]), int(seed["tokens"]),
                                tuple(str(h) for h in seed.get("providers", [])[:p.MAX_HINTS]))
            self.chains += 1
            position = await chain.open(int(request["max_length"]), parsed, seed.get("key") if seed else None,
                                        int(seed.get("bytes", 0)) if seed else 0, int(request.get("tokens", 1)))
            return {"position": position, "route": chain.route()}
        if op == "step":
            hidden = await chain.step(int(request["position"]), int(request["tokens"]), bytes(request["hidden"]))
            return {"hidden": hidden, "failovers": chain.failovers, "route": chain.route()}
        if op == "servers":
            return [dict(r.to_value(), peer=peer) for peer, r in (await chain.servers(fresh=True)).items()]
        if op == "close":
            await chain.close()
            return None
        raise MemnetError(f"unknown bridge op {str(op)[:40]!r}")
