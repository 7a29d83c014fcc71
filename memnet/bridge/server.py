"""A span server: layers [start, end) of the pinned model behind the span protocol
(memnet/span/protocol.py) on the bridge's hivemind node, announced in its DHT.

Each stream is one session: the open is checked (model, span, size), admitted against the cache
budget (memnet/span/admission.py), optionally seeded from an activation cube (seeding.py), then
steps run through the executor one at a time (a lock: torch already uses every core), each on a
worker thread so the asyncio loop keeps answering others. Whatever a client sends, an error
frame ends its session and the next one is served; the budget is given back however it ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from memnet.bridge import streams
from memnet.bridge.seeding import Fetch, SeedError, prepare
from memnet.errors import MemnetError, PeerTimeout
from memnet.model.loader import LoadedModel
from memnet.span import protocol as p
from memnet.span.admission import CacheBudget
from memnet.span.executor import SpanExecutor, from_bytes, to_bytes
from memnet.span.records import SpanRecord, block_key
from memnet.span.session import Limits, ServerSession, SpanError
from memnet.store import Store

log = logging.getLogger("memnet.span")

FRAME_TIMEOUT = 30.0


class SpanServer:
    def __init__(self, node: Any, loaded: LoadedModel, start: int, end: int, store: Store, fetch: Fetch,
                 cache_tokens: int, max_length: int, step_timeout: float):
        self.node, self.loaded, self.store, self.fetch = node, loaded, store, fetch
        self.executor = SpanExecutor(loaded, start, end)
        self.limits = Limits(start, end, loaded.pinned.fingerprint, self.executor.hidden_size, max_length)
        self.budget = CacheBudget(cache_tokens)
        self.step_timeout = step_timeout
        self.compute = asyncio.Lock()
        self.layer_seconds = self._measure()
        self.served_steps = 0
        self.seeded_bytes = 0
        self.manifests: dict[bytes, bytes] = {}  # authenticated manifests of seeds seen

    def _measure(self) -> float:
        """Seconds per token per layer (one-token steps on a short cache), for routing."""
        from memnet.model.runtime import torch

        cache = self.executor.new_cache()
        hidden = torch.zeros((1, 8, self.executor.hidden_size))
        self.executor.forward(cache, hidden, 0)
        started = time.perf_counter()
        for position in range(8, 12):
            self.executor.forward(cache, hidden[:, :1], position)
        layers = self.limits.end - self.limits.start
        return max(1e-6, (time.perf_counter() - started) / 4 / layers)

    async def start(self) -> None:
        await self.node.p2p.add_binary_stream_handler(p.PROTOCOL_ID, self.handle)

    # -- announcing ------------------------------------------------------------------------------

    def record(self, addrs: list[str], state: str = "online") -> SpanRecord:
        fingerprint = self.limits.model
        keys = set()
        for cube_id in self.store.find("model", fingerprint):
            try:
                m = self.store.manifest(cube_id)
            except MemnetError:
                continue
            if m.kind == "activation" and "adapter" not in m.meta:
                keys.add(m.meta["prefix_keys"][-1])  # the key of its whole length
        return SpanRecord(self.node.peer_id, self.limits.start, self.limits.end, fingerprint, self.layer_seconds,
                          self.budget.left, self.limits.max_length, frozenset(sorted(keys)[:64]), tuple(addrs),
                          state)

    async def announce(self, expires_in: float, state: str = "online") -> bool:
        from hivemind.utils.timed_storage import get_dht_time

        value = self.record(await self.node.maddrs(), state).to_value()
        layers = range(self.limits.start, self.limits.end)
        keys = [block_key(self.limits.model, layer) for layer in layers]
        stored = await self.node.dht.store_many(keys, [value] * len(keys), get_dht_time() + expires_in,
                                                subkeys=[self.node.peer_id] * len(keys))
        return all(stored.values())

    # -- sessions --------------------------------------------------------------------------------

    async def handle(self, info: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = info.peer_id.to_base58()
        session = ServerSession(self.limits)
        reserved, cache = 0, None
        try:
            while True:
                message = await streams.next_event(session, reader, self.step_timeout, FRAME_TIMEOUT)
                if message is None or type(message) is p.Close:
                    return
                if type(message) is p.Open:
                    refusal = self.budget.admit(peer, message.max_length)
                    if refusal is not None:
                        code, why = refusal.split(": ", 1)
                        raise SpanError(code, why)
                    reserved = message.max_length
                    cache, opened = await self._open(message)
                    session.seeded(opened.position)
                    await streams.send(writer, p.encode(opened))
                else:
                    output = await self._step(cache, message)
                    session.stepped(message)
                    self.served_steps += 1
                    await streams.send(writer, p.encode(output))
        except SpanError as exc:
            await self._refuse(writer, exc.code, str(exc))
        except SeedError as exc:
            await self._refuse(writer, "bad_seed", str(exc))
        except PeerTimeout as exc:
            await self._refuse(writer, "timeout", str(exc))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        except MemnetError as exc:
            await self._refuse(writer, "bad_request", str(exc))
        except Exception as exc:  # a bug: this session ends, the server goes on
            log.exception("span session of %s failed", peer)
            await self._refuse(writer, "internal", repr(exc))
        finally:
            if reserved:
                self.budget.release(peer, reserved)
            streams.close(writer)

    async def _refuse(self, writer: asyncio.StreamWriter, code: str, message: str) -> None:
        log.info("span session refused: %s: %s", code, message)
        try:
            await asyncio.wait_for(streams.send(writer, p.encode(p.error(code, message))), 5)
        except Exception:
            pass

    async def _open(self, message: p.Open) -> tuple[Any, p.Opened]:
        cache = self.executor.new_cache()
        if message.seed is None:
            return cache, p.Opened(0, "none", 0)
        seed = message.seed
        seeded = await prepare(self.store, self.fetch, seed.cube, seed.tokens, self.loaded,
                               self.limits.start, self.limits.end, self.manifests, seed.providers)
        if len(self.manifests) > 64:
            self.manifests.pop(next(iter(self.manifests)))
        async with self.compute:
            await asyncio.to_thread(self.executor.seed, cache, seeded.segments, seeded.meta, seed.tokens)
        self.seeded_bytes += seeded.fetched
        return cache, p.Opened(seed.tokens, seeded.source, seeded.fetched)

    async def _step(self, cache: Any, message: p.Step) -> p.Output:
        hidden = from_bytes(message.hidden, message.tokens, self.executor.hidden_size)
        async with self.compute:
            out = await asyncio.to_thread(self.executor.forward, cache, hidden, message.position)
        return p.Output(message.step, to_bytes(out))
