"""The resident model and its request queue: what the daemon's HTTP face generates with.

    engine = Engine(node, settings, swarm)        # in a trio task: await engine.start()
    ticket = await engine.submit(Job(prompt=[{"role": "user", "content": "Hi"}], max_tokens=32))
    async for event in ticket:                    # Token(id, text so far) ..., then Done(generation)

A request goes through two stages, so that no stage waits on another's kind of work:
- prepare (a thread of its own per request, at most max_active at once): tokenize, recall
  memories, choose the cached prefix and fetch it from the swarm (the daemon's own fetch service,
  called back on the trio loop) — no tensor is touched;
- the model worker (one thread; torch already uses every core): in rounds, each admitted request
  takes one step (generate.steps): a prefill chunk of its own, or its next token, the decode
  steps of all of them in one batched forward (memnet/model/batch.py). While other requests are
  active or waiting, a long prompt is prefilled in chunks and lets them through between its
  chunks (alone, in one piece: chunks cost 15-30 % more); status, dashboard and peers are served meanwhile by the
  trio loop. Requests with other adapters wait until the current adapter's requests finish
  (adapters are applied to the one model in place); admission is first come, first served.

A prompt whose tokens no cube covered (at least cache_prompts of them) is kept afterwards as an
unpinned float32 KV cube cut from the answer's own cache (no second prefill): the next request
with that prefix reuses it, and eviction takes it when it goes cold.
"""

from __future__ import annotations

import gc
import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from memnet import ingest
from memnet.config import AskSettings, HttpSettings
from memnet.cube import cid
from memnet.errors import BusyError, MemnetError, NotFoundError, UsageError
from memnet.governance import audit
from memnet.home import Node
from memnet.model import batch, generate, perf
from memnet.model import lora as lora_mod
from memnet.model.loader import LoadedModel
from memnet.model.pinned import PinnedModel
from memnet.model.sampling import Sampling

log = logging.getLogger("memnet.engine")
MEMORY_FACTOR = 4   # resident "auto": available memory must hold this many times the weights
KEEP_WAIT = 5.0     # s a new request waits at most for prompts still being kept as cubes


@dataclass
class Job:
    """One request: a text prompt (continued as is) or chat messages (answered by the assistant)."""

    prompt: str | list[dict[str, str]]
    max_tokens: int | None = None        # None: the settings' default, within the model's context
    sampling: Sampling | None = None     # None: greedy
    lora: str = ""                       # "CID[:weight],..."
    swarm: bool = True                   # look in the swarm for a longer cached prefix
    fetch: str = "auto"                  # auto | always | never
    recall: int = 0                      # memories to recall into a system turn (`memnet ask`)


@dataclass
class Token:
    id: int
    text: str          # the whole answer so far, decoded


@dataclass
class Done:
    generation: generate.Generation
    queued: float      # seconds between arrival and the first step on the model
    memories: list[bytes] = field(default_factory=list)


@dataclass
class Failed:
    error: BaseException


class Ticket:
    """A submitted request: iterate for its events; close() when the client has gone."""

    def __init__(self, receive: trio.MemoryReceiveChannel, prompt_tokens: int, memories: list[bytes]):
        self._receive, self.prompt_tokens, self.memories = receive, prompt_tokens, memories
        self.cancelled = False   # nobody reads the answer any more: drop it
        self.stopping = False    # end the answer at the next step and report it (a stop sequence)

    def __aiter__(self):
        return self._receive.__aiter__()

    def stop(self) -> None:
        self.stopping = True

    def close(self) -> None:
        self.cancelled = True
        self._receive.close()


@dataclass
class _Session:
    ticket: Ticket
    send: trio.MemorySendChannel
    ids: list[int]
    options: generate.Options
    specs: list[lora_mod.Spec]
    prepared: generate.Prepared
    arrived: float
    prompt_text: str | None
    memories: list[bytes]
    work: Any = None
    started: float | None = None
    pending: Any = None      # a batch.Decode waiting for the round's batched forward


class Engine:
    def __init__(self, node: Node, settings: HttpSettings, swarm: Any = None,
                 on_cached: Callable[[bytes], None] | None = None):
        """swarm: generate.Swarm for prefixes the store lacks (None: local only); on_cached(cube
        id) is called on the trio loop after a prompt was kept as a cube."""
        self.node, self.settings, self.swarm, self.on_cached = node, settings, swarm, on_cached
        self.loaded: LoadedModel | None = None
        self.pinned: PinnedModel | None = None   # the model served, decided at start
        self.resident = False                    # it stays loaded (http.resident, decided at start)
        self.book = node.perf               # one book for every request (it locks its writes)
        self.state = "idle"                 # idle | loading | ready | failed: ...
        self.started = int(time.time())
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._tokenizer = threading.Lock()  # a fast tokenizer must not be used by two threads at once
        self._loading = threading.Lock()
        # prompts being kept as cubes (a thread of their own, off the model worker): a request
        # that arrives meanwhile waits for them, so that a repeated prompt finds its cube
        self._keeping = threading.Condition()
        self._kept_pending = 0
        self._keeper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="memnet-keep")
        self._in_system = 0                 # submitted and not finished (prepare, queue, model)
        self._preparing = trio.CapacityLimiter(settings.max_active)
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._last_used = time.monotonic()
        self.counters = {"requests": 0, "tokens": 0, "reused_tokens": 0, "prompt_tokens": 0, "cached": 0, "errors": 0}

    # -- life ------------------------------------------------------------------------------

    def _resident(self) -> bool:
        mode = self.settings.resident
        if mode != "auto" or self.pinned is None:
            return mode == "on"
        weights = sum(p.stat().st_size for p in self.pinned.folder.glob("*.safetensors"))
        return available_memory() >= MEMORY_FACTOR * weights

    async def start(self) -> None:
        """Decide the model once (a model pinned later is not served until a restart) and
        whether it stays loaded; start the worker; load the model if it stays."""
        try:
            self.pinned = self.node.models.resolve(self.settings.model)
        except MemnetError as exc:  # nothing pinned: the API lists no model and says why on use
            self.state = f"failed: {exc}"[:200]
        self.resident = self._resident()
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.Thread(target=self._worker, name="memnet-model", daemon=True)
        self._thread.start()
        if self.resident:
            await trio.to_thread.run_sync(self._ensure_loaded)

    def stop(self) -> None:
        self._inbox.put(None)
        self._keeper.shutdown(wait=False)

    def _ensure_loaded(self) -> LoadedModel:
        with self._loading:
            if self.loaded is None:
                from memnet.model import loader

                self.state = "loading"
                try:
                    self.loaded = loader.load(self.pinned or self.node.models.resolve(self.settings.model))
                except BaseException as exc:
                    self.state = f"failed: {exc}"[:200]
                    raise
                self.state = "ready"
                log.info("model %s loaded in %.2f s", self.loaded.pinned.name, self.loaded.load_seconds)
            return self.loaded

    def _unload_if_idle(self) -> None:
        """A non-resident model goes once nothing used it for idle_unload seconds."""
        if self.loaded is None or self._in_system or self.resident \
                or time.monotonic() - self._last_used < self.settings.idle_unload:
            return
        from memnet.model import loader

        with self._loading:
            loader.forget(self.loaded.pinned)
            self.loaded, self.state = None, "idle"
        gc.collect()
        log.info("model unloaded after %.0f s idle", self.settings.idle_unload)

    def idle(self) -> bool:
        """Nothing in hand: no request, no prompt being kept as a cube."""
        return self._in_system == 0 and self._kept_pending == 0

    def info(self) -> dict[str, Any]:
        loaded = self.loaded
        return {"state": self.state, "model": loaded.pinned.name if loaded else self.settings.model,
                "in_system": self._in_system, **self.counters}

    # -- submitting (trio side) ------------------------------------------------------------

    async def submit(self, job: Job) -> Ticket:
        """Check, tokenize, choose and fetch the cached prefix, then queue for the model. Raises
        UsageError (a bad request), NotFoundError (an unknown cube), BusyError (queue full)."""
        if self._in_system >= self.settings.max_active + self.settings.max_queue:
            raise BusyError(f"the model has {self._in_system} requests in hand (at most "
                            f"{self.settings.max_active + self.settings.max_queue}); try again shortly")
        self._in_system += 1
        self.counters["requests"] += 1
        try:
            session = await trio.to_thread.run_sync(self._prepare, job, time.perf_counter(), limiter=self._preparing)
        except BaseException:
            self._in_system -= 1
            self.counters["errors"] += 1
            raise
        self._inbox.put(session)
        return session.ticket

    def _prepare(self, job: Job, arrived: float) -> _Session:
        loaded = self._ensure_loaded()
        with self._keeping:
            self._keeping.wait_for(lambda: self._kept_pending == 0, timeout=KEEP_WAIT)
        specs = lora_mod.parse_specs(job.lora) if job.lora else []
        for cube_id, _ in specs:
            if not self.node.store.has(cube_id):
                raise NotFoundError(f"no LoRA cube {cid.to_text(cube_id)} in this node's store")
        adapter = lora_mod.adapter_fingerprint(specs)
        gate = self.node.gate(fresh=True)
        memories: list[bytes] = []
        boundaries: tuple[int, ...] = ()
        prompt = job.prompt
        with self._tokenizer:
            if job.recall:
                prompt, boundaries, memories = self._with_memories(loaded, gate, prompt, job.recall)
            if isinstance(prompt, list):
                ids = loaded.encode_chat(ingest.chat_messages(prompt, "messages"), add_generation_prompt=True)
            else:
                ids = loaded.encode(prompt)
        if not ids:
            raise UsageError("the prompt has no tokens")
        room = loaded.max_tokens - len(ids)
        max_tokens = job.max_tokens if job.max_tokens is not None else min(self.settings.default_max_tokens, room)
        if max_tokens < 1 or len(ids) + max_tokens > loaded.max_tokens:
            raise UsageError(f"this model's context is {loaded.max_tokens} tokens; the prompt has {len(ids)} "
                             f"and {max_tokens} new were asked for")
        options = generate.Options(max_new_tokens=max_tokens, adapter=adapter, use_swarm=job.swarm and self.swarm is not None,
                                   fetch=job.fetch, boundaries=boundaries, sampling=job.sampling,
                                   overlap=False)  # a layer waiting for its chunks would stall every request's steps
        prepared = generate.prepare(self.node.store, gate, self.book, loaded, ids, options,
                                    self.swarm if options.use_swarm else None, start=arrived)
        send, receive = trio.open_memory_channel(float("inf"))
        text = prompt if isinstance(prompt, str) else (prompt[-1].get("content") if prompt else None)
        return _Session(Ticket(receive, len(ids), memories), send, ids, options, specs, prepared, arrived,
                        text if isinstance(text, str) else None, memories)

    def _with_memories(self, loaded: LoadedModel, gate: Any, prompt: str | list[dict[str, str]], k: int):
        """The prompt with recalled memories in a system turn first (as `memnet ask` lays them
        out), the memory prefix's length (where a KV cube of the memory set ends), the memories."""
        from memnet.memory import index
        from memnet.scheduler import ask, plan

        messages = prompt if isinstance(prompt, list) else None
        question = prompt if isinstance(prompt, str) else next(
            (m.get("content", "") for m in reversed(prompt) if isinstance(m, dict) and m.get("role") == "user"), "")
        if not isinstance(question, str) or not question.strip():
            return prompt, (), []
        settings: AskSettings = self.node.config.ask
        hits = index.recall(self.node.publisher, question, k, accept=ask.memory_filter(self.node.store, gate))
        chosen, _ = plan.choose_memories([plan.Recalled(h.cube_id, h.item, h.text, h.score, h.author) for h in hits],
                                         settings)
        if not chosen:
            return prompt, (), []
        system = plan.system_text(chosen)
        memories = list(dict.fromkeys(m.cube_id for m in chosen))
        if messages is None:
            prefix = loaded.encode(f"{system}\n\n")
            return f"{system}\n\n{prompt}", (len(prefix),), memories
        turn = {"role": "system", "content": system}
        prefix = loaded.encode_chat([turn], add_generation_prompt=False)
        return [turn, *messages], (len(prefix),), memories

    # -- the model worker (its own thread) ---------------------------------------------------

    def _worker(self) -> None:
        pending: deque[_Session] = deque()
        active: list[_Session] = []
        while True:
            try:
                timeout = None if (pending or active) else min(self.settings.idle_unload, 5.0)
                item = self._inbox.get(block=not (pending or active), timeout=timeout)
                while True:
                    if item is None:
                        return
                    pending.append(item)
                    item = self._inbox.get_nowait()
            except queue.Empty:
                pass
            if not (pending or active):
                self._unload_if_idle()
                continue
            try:
                self._admit(pending, active)
                finished = self._round(active, len(pending))
            except Exception as exc:  # noqa: BLE001 - the worker must outlive any one round
                log.exception("a round of the model worker failed")
                for session in active:
                    self._fail(session, exc)
                finished = list(active)
            for session in finished:
                active.remove(session)
                self._in_system_done()

    def _admit(self, pending: deque[_Session], active: list[_Session]) -> None:
        """Pending requests join in arrival order while there is room and they need the adapter
        applied now; when nothing runs, the next one's adapter is applied."""
        while pending and len(active) < self.settings.max_active:
            head = pending[0]
            if head.ticket.cancelled:
                pending.popleft()
                self._in_system_done()
                continue
            current = self.loaded.adapters.get("fingerprint") if self.loaded else None
            if active and head.options.adapter != current:
                return
            pending.popleft()
            if head.options.adapter != current or (not head.specs and "peft" in self.loaded.adapters):
                try:
                    lora_mod.activate(self.node.store, self.node.gate(fresh=True), self.loaded, head.specs)
                except Exception as exc:
                    self._emit(head, Failed(exc))
                    self._in_system_done()
                    continue
            active.append(head)

    def _round(self, active: list[_Session], waiting: int) -> list[_Session]:
        """One step of every admitted request: prefill chunks one by one, then the decode steps
        of all requests that wait for one in a single batched forward. Returns those finished.
        A prompt is prefilled in chunks only while other requests are active or waiting (waiting:
        how many are queued); alone, in one piece, which is faster."""
        crowded = len(active) > 1 or waiting > 0 or not self._inbox.empty()
        for session in active:
            session.options.prefill_chunk = self.settings.prefill_chunk if crowded else 0
        finished = [s for s in active if self._advance(s)]
        ready = [s for s in active if s not in finished and s.pending is not None]
        if not ready:
            return finished
        try:
            replies = batch.forward_many(self.loaded, [s.pending for s in ready])
        except Exception as exc:  # noqa: BLE001 - reported to these requests; the worker serves the others
            log.exception("a decode step failed")
            for session in ready:
                self._fail(session, exc)
            return finished + ready
        for session, reply in zip(ready, replies):
            session.pending = None
            if self._advance(session, reply):
                finished.append(session)
        return finished

    def _advance(self, session: _Session, reply: Any = None) -> bool:
        """Run a session's generation to its next yield; True when it is finished (done, failed
        or abandoned). A Decode it yields waits in session.pending for the round's batch."""
        if session.ticket.cancelled:
            if session.work is not None:
                session.work.close()
            return True
        if session.ticket.stopping and session.work is not None:
            session.work.close()
            result = session.prepared.result
            result.finish, result.seconds = "stop", time.perf_counter() - session.arrived
            with self._tokenizer:
                result.text = self.loaded.decode(result.new_ids)
            self._finish(session, result)
            return True
        if session.pending is not None:
            return False
        try:
            if session.work is None:
                session.started = time.perf_counter()
                session.work = generate.steps(self.node.store, self.book, self.loaded, session.ids,
                                              session.options, session.prepared)
            value = session.work.send(reply)
            if isinstance(value, batch.Decode):
                session.pending = value
            elif value is not None:
                with self._tokenizer:
                    text = self.loaded.decode(session.prepared.result.new_ids)
                self._emit(session, Token(value, text))
            return False
        except StopIteration as done:
            self._finish(session, done.value)
            return True
        except Exception as exc:  # noqa: BLE001 - reported to this request; the worker serves the others
            if not isinstance(exc, MemnetError):
                log.exception("generation failed")
            self._fail(session, exc)
            return True

    def _fail(self, session: _Session, exc: BaseException) -> None:
        self.counters["errors"] += 1
        self._emit(session, Failed(exc))

    def _finish(self, session: _Session, result: generate.Generation) -> None:
        cache, result.cache = result.cache, None  # the reply does not hold the request's K/V
        uncovered = result.prompt_tokens - result.reused
        keep = bool(self.settings.cache_prompts and uncovered >= self.settings.cache_prompts and cache is not None)
        if keep:  # counted before the answer goes out: a repeat sent on receiving it waits for the cube
            with self._keeping:
                self._kept_pending += 1
        self.counters["tokens"] += len(result.new_ids)
        self.counters["reused_tokens"] += result.reused
        self.counters["prompt_tokens"] += result.prompt_tokens
        self._emit(session, Done(result, (session.started or session.arrived) - session.arrived, session.memories))
        store = self.node.store
        try:
            saved = perf.estimate_prefill(self.book.prefill_samples(self.loaded.pinned.fingerprint), result.reused) \
                if result.reused else None
            audit.record_generation(store, ids=session.ids, result=result, prompt_text=session.prompt_text,
                                    adapters=self.loaded.adapters.get("specs", ()), kind="http",
                                    memories=session.memories,
                                    extra={"ttft": round(result.ttft, 4),
                                           "saved_s": round(saved - result.steps.get("load", 0.0), 4) if saved else None})
            for cube_id in session.memories:
                store.record_access(cube_id)
        except Exception as exc:  # noqa: BLE001 - the answer is out; bookkeeping must not stop the worker
            log.warning("after a request: %s", exc)
        if keep:
            try:
                self._keeper.submit(self._keep_prompt, session, cache, self.loaded)
            except RuntimeError:  # the engine is stopping
                self._kept(0)

    def _keep_prompt(self, session: _Session, cache: Any, loaded: LoadedModel) -> None:
        """The prompt's K/V, cut from the answer's cache, as an unpinned KV cube."""
        try:
            cube = generate.publish_cache(self.node.publisher, loaded, cache, session.ids,
                                          self.settings.cache_dtype, session.options.adapter, pin=False,
                                          tags=("prompt-cache",), description="prompt prefix kept by the HTTP API")
            self.counters["cached"] += 1
            log.info("kept a %d-token prompt as KV cube %s", len(session.ids), cid.to_text(cube.cube_id))
            if self.on_cached is not None:
                self._call_soon(self.on_cached, cube.cube_id)
        except Exception:  # noqa: BLE001 - a cache not kept costs the next request a prefill, nothing more
            log.exception("keeping a prompt as a KV cube failed")
        finally:
            self._kept(0)

    def _kept(self, _: Any) -> None:
        with self._keeping:
            self._kept_pending -= 1
            self._keeping.notify_all()

    def _in_system_done(self) -> None:
        self._last_used = time.monotonic()
        self._call_soon(self._decrement)

    def _decrement(self) -> None:
        self._in_system -= 1

    def _emit(self, session: _Session, event: Any) -> None:
        def deliver() -> None:
            try:
                session.send.send_nowait(event)
                if not isinstance(event, Token):
                    session.send.close()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                session.ticket.cancelled = True  # the client went away
        self._call_soon(deliver)

    def _call_soon(self, fn: Callable, *args: Any) -> None:
        def guarded() -> None:  # an exception in a run_sync_soon callback would end the trio run
            try:
                fn(*args)
            except Exception:  # noqa: BLE001
                log.exception("engine callback failed")
        try:
            self._token.run_sync_soon(guarded)
        except trio.RunFinishedError:
            pass


def available_memory() -> int:
    """Bytes the kernel says can be allocated without swapping (0 when it does not say)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
