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
from collections import Counter
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
OPEN_TIMEOUT = 10.0       # a client sends its open at once; a stream silent this long is ended
STREAMS_PER_PEER = 16     # streams of one peer in progress, opened or not (8 sessions admitted)
REFUSE_DRAIN = 256 * 1024


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
        self.streams: Counter[str] = Counter()   # per peer, streams in progress
        self.sessions: dict[object, asyncio.Task] = {}   # lease key -> the task serving it
        self.yielded: set[object] = set()                # leases ended to make room
        self.waiting: dict[object, tuple[int, float]] = {}   # newcomers waiting for room: tokens, since

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
        if self.streams[peer] >= STREAMS_PER_PEER:
            await self._refuse(reader, writer, "busy", f"{self.streams[peer]} streams of this peer are in progress")
            streams.close(writer)
            return
        self.streams[peer] += 1
        session = ServerSession(self.limits)
        reserved, cache, key = 0, None, object()
        self.sessions[key] = asyncio.current_task()
        try:
            while True:
                idle = self.step_timeout if session.opened else min(self.step_timeout, OPEN_TIMEOUT)
                message = await streams.next_event(session, reader, idle, FRAME_TIMEOUT)
                if message is None or type(message) is p.Close:
                    return
                if type(message) is p.Open:
                    refusal = await self._admit(peer, message.max_length, key)
                    if refusal is not None:
                        code, why = refusal.split(": ", 1)
                        raise SpanError(code, why)
                    reserved = message.max_length
                    self.budget.stepping(key)
                    cache, opened = await self._open(message)
                    session.seeded(opened.position)
                    await streams.send(writer, p.encode(opened))
                    self.budget.stepped(key, step=False)
                else:
                    self.budget.stepping(key)   # a step in progress is use of the lease, however long
                    output = await self._step(cache, message)
                    session.stepped(message)
                    self.served_steps += 1
                    await streams.send(writer, p.encode(output))
                    self.budget.stepped(key)
        except asyncio.CancelledError:
            if key not in self.yielded:
                raise
            await self._refuse(reader, writer, "timeout",
                               "the session sat idle while a newcomer needed its room in the cache budget")
        except SpanError as exc:
            await self._refuse(reader, writer, exc.code, str(exc))
        except SeedError as exc:
            await self._refuse(reader, writer, "bad_seed", str(exc))
        except PeerTimeout as exc:
            await self._refuse(reader, writer, "timeout", str(exc))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        except MemnetError as exc:
            await self._refuse(reader, writer, "bad_request", str(exc))
        except Exception as exc:  # a bug: this session ends, the server goes on
            log.exception("span session of %s failed", peer)
            await self._refuse(reader, writer, "internal", repr(exc))
        finally:
            if reserved:
                self.budget.release(peer, reserved, key)
            self.sessions.pop(key, None)
            self.yielded.discard(key)
            self.streams[peer] -= 1
            if self.streams[peer] <= 0:
                del self.streams[peer]
            streams.close(writer)

    async def _admit(self, peer: str, tokens: int, key: object) -> str | None:
        """Admission against the budget. When the session does not fit, idle sessions give way
        (memnet/span/admission.py): it waits, at most the open grace (and a second: a silent session
        opened just before it is due then), until enough of them have idled their grace, then ends
        those and takes their room in one step. Newcomers that wait take turns, the smallest first
        (then the earliest): a stream of large opens cannot keep a small one out."""
        deadline = time.monotonic() + self.budget.open_grace + 1.0
        self.waiting[key] = (tokens, time.monotonic())
        try:
            while True:
                refusal = self.budget.admit(peer, tokens, key)
                if refusal is None or not refusal.startswith("admission") or time.monotonic() > deadline:
                    return refusal
                if min(self.waiting, key=self.waiting.__getitem__) is not key:
                    await asyncio.sleep(0.05)   # another newcomer's turn
                    continue
                chosen, at = self.budget.to_yield(tokens)
                if not chosen or at > deadline or any(k not in self.sessions for k in chosen):
                    return refusal
                if at > time.monotonic():
                    await asyncio.sleep(at - time.monotonic())
                    continue   # sessions may have stepped or ended meanwhile: ask again
                self.yielded.update(chosen)
                refusal = self.budget.take_over(chosen, peer, tokens, key)   # their room is this session's
                for k in chosen:
                    self.sessions[k].cancel()
                log.info("span sessions ended to make room: %d idle past their grace", len(chosen))
                return refusal
        finally:
            del self.waiting[key]

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, code: str,
                      message: str) -> None:
        log.info("span session refused: %s: %s", code, message)
        try:
            await asyncio.wait_for(streams.send(writer, p.encode(p.error(code, message))), 5)
            # read what the client had sent on, a little (REFUSE_DRAIN bytes, 1 s): a stream closed
            # with input unread is reset, and the reset can overtake the error on its way
            await asyncio.wait_for(streams.drain_input(reader, REFUSE_DRAIN), 1.0)
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
