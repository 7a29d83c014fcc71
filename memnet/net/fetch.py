"""Fetch a cube from the swarm: the manifest first (authenticated before any chunk is asked
for), then chunks from every provider at once, each verified against its CID. Nothing reaches
the store until the whole cube verifies.

Stalling providers (they announce the cube, then answer nothing) cost a fetch little:
- the manifest is asked of MANIFEST_FANOUT providers at once and of one more every
  MANIFEST_STAGGER s while none has answered; the first authentic answer wins;
- a provider that has not delivered anything in this fetch gets one request at a time (slow
  start), so a staller holds at most one batch, which the end game asks of another provider;
- a request whose answer does not start within the provider's stall deadline (STALL_TIMEOUT for
  an unmeasured provider, else a few batches' time at its measured rate) drops that provider from
  the fetch while others are left, and is scored: stalls add up to a ban like lies do.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from memnet.cube import build, cid, manifest as manifest_mod
from memnet.cube.build import Cube
from memnet.cube.manifest import Manifest
from memnet.config import FetchTuning
from memnet.errors import CIDError, FetchError, FormatError, MemnetError, PeerGone, PeerTimeout, StoreFullError
from memnet.net.client import REQUEST_TIMEOUT, MipSession
from memnet.net import peer_scores, relaying
from memnet.net.addresses import is_circuit
from memnet.net.peer_scores import PeerScores
from memnet.net.fetch_plan import FetchPlan
from memnet.store.lmdb_store import Store

log = logging.getLogger("memnet.fetch")

STAGE_BATCH = 16  # chunks (4 MiB at the default size) written to the store per staging commit
UNSTAGED_LIMIT = 32 << 20  # bytes verified but not yet staged, past which no more are asked for
CLOSE_TIMEOUT = 5.0  # seconds to hang up a stream
MANIFEST_FANOUT = 2  # providers asked for the manifest at once at first
MANIFEST_STAGGER = 0.25  # s before one more provider is asked, while none has answered
READMIT_PAUSE = 0.5  # s before a provider whose connection failed is asked again (once per fetch)
Progress = Callable[[int, int], None]


@dataclass
class FetchReport:
    cube: Cube
    seconds: float
    bytes_from: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)  # peer -> direct, punched or relayed


class Transfer:
    def __init__(self, host: IHost, store: Store, cube_id: bytes, scores: PeerScores,
                 tuning: FetchTuning, progress: Progress | None):
        self.host, self.store, self.cube_id, self.scores = host, store, cube_id, scores
        self.tuning, self.progress = tuning, progress
        # Verified chunks go to the store's staging as they come, and are not kept: a fetch holds
        # at most UNSTAGED_LIMIT bytes besides the answers in flight, whatever the cube's size.
        self.hashed: dict[bytes, int] = {}  # chunks of this fetch checked against their CID: length
        self._unstaged: list[tuple[bytes, bytes]] = []
        self._unstaged_bytes = 0
        self._drained = trio.Event()
        self.bytes_from: Counter[str] = Counter()
        self._staging = trio.Event()
        self._fetching = True
        self.dropped: dict[str, str] = {}
        self.infos: dict[str, PeerInfo] = {}
        self.gone: set[str] = set()         # dropped because a stream or connection failed
        self.readmitted: set[str] = set()   # given their second chance
        self._delivered: set[str] = set()  # providers past slow start (a batch came in whole)
        self._changed = trio.Event()
        self._round = trio.CancelScope()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _drop(self, peer: str, why: str, gone: bool = False) -> None:
        log.info("fetch %s: dropping peer %s: %s", cid.to_text(self.cube_id), peer, why)
        self.dropped.setdefault(peer, why)
        if gone:
            self.gone.add(peer)

    async def readmit(self, plan: FetchPlan | None = None) -> list[PeerInfo]:
        """Providers dropped because their stream or connection failed (a reset under load, a
        connection closed by either side), not because they lied or stalled: back in, once
        each, on a connection dialled afresh (py-libp2p goes on opening streams on a connection
        whose socket is gone: "Failed to send SYN: Broken pipe"). An honest provider's broken
        connection must not fail a get it alone can serve."""
        back = [self.infos[p] for p in sorted(self.gone - self.readmitted) if p in self.infos]
        for info in back:
            peer = str(info.peer_id)
            self.readmitted.add(peer)
            self.dropped.pop(peer, None)
            if plan is not None:
                plan.readmit(peer)
            with trio.move_on_after(CLOSE_TIMEOUT):
                try:
                    await self.host.disconnect(info.peer_id)
                except Exception as exc:  # already gone: the next connect dials anew either way
                    log.debug("disconnect %s: %r", peer, exc)
        self.gone -= self.readmitted
        if back:
            await trio.sleep(READMIT_PAUSE)
        return back

    async def _connect(self, info: PeerInfo) -> bool:
        try:
            with trio.fail_after(10):
                await self.host.connect(info)
            return True
        except Exception as exc:
            self._drop(str(info.peer_id), f"unreachable: {exc or type(exc).__name__}")
            return False

    async def manifest(self, providers: list[PeerInfo]) -> tuple[bytes, Manifest]:
        """The first authentic manifest among the providers. MANIFEST_FANOUT are asked at once,
        and one more every MANIFEST_STAGGER s while none has answered (at once when one fails):
        providers that answer nothing cost a fraction of a second each, not a request timeout."""
        found: list[tuple[bytes, Manifest]] = []
        queue = [p for p in providers if str(p.peer_id) not in self.dropped]

        async with trio.open_nursery() as nursery:
            failed = trio.Semaphore(0)  # released by each ask that ends without a manifest

            async def ask(info: PeerInfo) -> None:
                result = await self._manifest_from(info)
                if result is not None and not found:
                    found.append(result)
                    nursery.cancel_scope.cancel()
                else:
                    failed.release()

            for index, info in enumerate(queue):
                if index >= MANIFEST_FANOUT:
                    with trio.move_on_after(MANIFEST_STAGGER):
                        await failed.acquire()
                nursery.start_soon(ask, info)
        if found:
            return found[0]
        raise FetchError(f"no provider delivered an authentic manifest for {cid.to_text(self.cube_id)}"
                         + reasons(self.dropped))

    async def _manifest_from(self, info: PeerInfo) -> tuple[bytes, Manifest] | None:
        peer = str(info.peer_id)
        self.infos[peer] = info
        if not await self._connect(info):
            return None
        try:
            session = await MipSession.open(self.host, info.peer_id)
            answered, asked = False, trio.current_time()
            try:
                data = await session.manifest(self.cube_id)
                answered = True
            except trio.Cancelled:  # another provider answered first
                if trio.current_time() - asked > peer_scores.STALL_TIMEOUT:
                    self.scores.stalled(peer)
                raise
            finally:  # a provider still silent when another answered is cut off
                with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
                    await (session.close() if answered else session.reset())
            manifest = manifest_mod.decode(data, self.cube_id)  # hash, then signature
            build.check_fresh(manifest)
            return data, manifest
        except MemnetError as exc:
            if isinstance(exc, FormatError):
                self.scores.lied(peer)  # bytes that do not authenticate are a lie
            elif isinstance(exc, PeerTimeout):
                self.scores.stalled(peer)
            self._drop(peer, str(exc), gone=isinstance(exc, PeerGone))
        except Exception as exc:  # the stream or connection died under us
            self._drop(peer, f"failed: {exc!r}", gone=True)
        return None

    async def chunks(self, plan: FetchPlan, providers: list[PeerInfo]) -> None:
        peers = {str(p.peer_id) for p in providers}
        async with trio.open_nursery() as nursery:
            self._round = nursery.cancel_scope  # cancelled as soon as the cube is complete
            for info in providers:
                nursery.start_soon(self._peer, plan, info, peers)

    async def _peer(self, plan: FetchPlan, info: PeerInfo, peers: set[str]) -> None:
        peer = str(info.peer_id)
        self.infos[peer] = info
        if peer in self.dropped or not await self._connect(info):
            plan.drop(peer, self.dropped.get(peer, "unreachable"))
            self._notify()
            return
        async with trio.open_nursery() as nursery:
            for _ in range(self.tuning.streams_per_peer):
                nursery.start_soon(self._worker, plan, info.peer_id, peers)

    async def _worker(self, plan: FetchPlan, peer_id: ID, peers: set[str]) -> None:
        peer = str(peer_id)
        session: MipSession | None = None
        pipeline: deque[tuple[int, list[bytes]]] = deque()  # requests sent, answers not yet read
        finished = False
        started, received = trio.current_time(), 0
        try:
            while peer not in plan.dropped:
                while self._unstaged_bytes >= UNSTAGED_LIMIT:  # the disk is behind: ask for no more
                    self._staging.set()
                    await self._drained.wait()
                # slow start: one request in flight until this provider has delivered a batch
                depth = self.tuning.requests_per_stream if peer in self._delivered else 1
                while len(pipeline) < depth:
                    batch = plan.next_batch(peer)
                    if not batch:
                        break
                    if session is None:
                        session = await MipSession.open(self.host, peer_id)
                    pipeline.append((await session.request_chunks(self.cube_id, batch), batch))
                if pipeline:
                    received += await self._receive(plan, session, peer, peers, *pipeline.popleft())
                elif plan.complete or plan.stuck(peers):
                    finished = True
                    return
                else:
                    await self._changed.wait()
        except MemnetError as exc:
            plan.drop(peer, str(exc))
            self._drop(peer, str(exc), gone=isinstance(exc, PeerGone))
        except Exception as exc:  # stream reset, connection lost: the provider went away
            plan.drop(peer, f"failed: {exc!r}")
            self._drop(peer, f"failed: {exc!r}", gone=True)
        finally:
            for _, batch in pipeline:
                plan.failed(peer, batch)
            self._notify()
            if received:  # its rate over this fetch sets its stall deadline next time
                self.scores.observe_rate(peer, received, trio.current_time() - started)
            if session is not None:
                # A stream left with answers due (an error, or end-game duplicates cancelled when
                # the cube completed) is reset so the provider stops sending them; shielded so
                # that a cancelled fetch still hangs up.
                with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
                    await (session.close() if finished else session.reset())

    async def _next_chunk(self, plan: FetchPlan, session: MipSession, peer: str, peers: set[str], rid: int,
                          timeout: float) -> bytes | None:
        """The next answer of request rid, waiting at most the peer's stall deadline while other
        providers are left (then it is a stall: scored, and the peer is dropped), else the
        request timeout."""
        waited_from = trio.current_time()
        try:
            return await session.next_chunk(rid, timeout)
        except PeerTimeout:
            if plan.others_live(peer, peers):
                self.scores.stalled(peer)
                raise
            return await session.next_chunk(rid, REQUEST_TIMEOUT)  # the last provider: wait on
        except trio.Cancelled:  # the cube completed elsewhere while this peer said nothing
            if trio.current_time() - waited_from > timeout:
                self.scores.stalled(peer)
            raise

    async def _receive(self, plan: FetchPlan, session: MipSession, peer: str, peers: set[str], rid: int,
                       batch: list[bytes]) -> int:
        """Read one batch's answers, verify them, hand the new ones on; returns bytes received."""
        outstanding = list(batch)
        received: list[tuple[bytes, bytes]] = []
        timeout = self.scores.stall_timeout(peer, sum(plan.size(c) for c in batch))
        try:
            for chunk_id in batch:
                data = await self._next_chunk(plan, session, peer, peers, rid, timeout)
                if data is None:
                    outstanding.remove(chunk_id)
                    plan.lacks(peer, chunk_id)
                else:
                    received.append((chunk_id, data))
            # Hash the batch in a worker thread (hashlib drops the GIL), so the trio thread goes
            # on reading the other streams meanwhile; nothing is used before this returns.
            if received and not await trio.to_thread.run_sync(_authentic, received):
                self.scores.lied(peer)
                raise CIDError(f"peer {peer} sent a chunk that does not match its CID")
            self._delivered.add(peer)
            for chunk_id, data in received:
                outstanding.remove(chunk_id)
                if plan.received(peer, chunk_id):
                    self.hashed[chunk_id] = len(data)
                    self._unstaged.append((chunk_id, data))
                    self._unstaged_bytes += len(data)
                    if len(self._unstaged) >= STAGE_BATCH:
                        self._staging.set()
                    self.bytes_from[peer] += len(data)
                    self.scores.delivered(peer, len(data))
                    if self.progress:
                        self.progress(plan.done_bytes, plan.total_bytes)
            if plan.complete:  # answers still due elsewhere are duplicates: stop waiting for them
                self._round.cancel()
            return sum(len(d) for _, d in received)
        finally:
            if outstanding:
                plan.failed(peer, outstanding)
            self._notify()

    async def stage(self) -> None:
        """Write verified chunks to the store in a worker thread while the transfer goes on
        (py-lmdb drops the GIL for puts and commits): every chunk, so the cube's own commit
        writes only its manifest and references, and an interrupted fetch resumes."""
        while True:
            await self._staging.wait()
            self._staging = trio.Event()
            batch, self._unstaged = self._unstaged, []
            if batch:
                await trio.to_thread.run_sync(self.store.stage_chunks, batch)
                self._unstaged_bytes -= sum(len(data) for _, data in batch)
                self._drained.set()
                self._drained = trio.Event()
            if not self._fetching and not self._unstaged:
                return

    def finish_staging(self) -> None:
        """The transfer is over: stage what is left."""
        self._fetching = False
        self._staging.set()


def _relayed(info: PeerInfo) -> bool:
    return any(is_circuit(a) for a in info.addrs)


def direct_first(providers: list[PeerInfo]) -> list[PeerInfo]:
    return [p for p in providers if not _relayed(p)] + [p for p in providers if _relayed(p)]


def prefer_direct(providers: list[PeerInfo]) -> list[PeerInfo]:
    """Providers that name a relay sit behind a NAT: reaching them costs a circuit (and maybe a
    hole punch), and a relay carries a circuit's bytes within its limits. While providers without
    one are left, a round of chunk requests asks only those; the others stay untried for the next
    round (the manifest is asked of all, direct ones first)."""
    return [p for p in providers if not _relayed(p)] or providers


def _authentic(chunks: list[tuple[bytes, bytes]]) -> bool:
    """Whether every chunk hashes to its CID (one worker-thread call per batch: a thread hop
    costs the trio thread about as much as hashing a small chunk)."""
    return all(cid.cid_of(data) == chunk_id for chunk_id, data in chunks)


def reasons(dropped: dict[str, str]) -> str:
    if not dropped:
        return " (no providers)"
    return " (" + "; ".join(f"{p[-8:]}: {why}" for p, why in list(dropped.items())[:4]) + ")"


async def fetch_cube(
    host: IHost,
    store: Store,
    cube_id: bytes,
    find_providers: Callable[[], Awaitable[list[PeerInfo]]],
    *,
    scores: PeerScores,
    tuning: FetchTuning = FetchTuning(),
    progress: Progress | None = None,
    pin_reason: str | None = "fetched",
    rounds: int = 3,
    vet: Callable[[Manifest], None] | None = None,
    manifest_bytes: bytes | None = None,
) -> FetchReport:
    """Fetch, verify and store cube_id. find_providers is asked again when every provider of a
    round has dropped out before the cube is complete. vet sees the authenticated manifest
    before any chunk is asked for, and stops the fetch by raising (e.g. an untrusted author).
    manifest_bytes, when the caller already has them (a prefix lookup), spare a round trip:
    they are authenticated here like fetched ones."""
    started = time.monotonic()
    me = str(host.get_id())
    fetch = Transfer(host, store, cube_id, scores, tuning, progress)
    tried: set[str] = set()

    async def fresh_providers() -> list[PeerInfo]:
        found = [p for p in await find_providers() if str(p.peer_id) != me and str(p.peer_id) not in tried]
        return direct_first(scores.order(found))

    providers = await fresh_providers()
    if not providers:
        raise FetchError(f"no provider of {cid.to_text(cube_id)} found in the swarm")
    phases = {"find": time.monotonic() - started}
    mark = time.monotonic()
    if manifest_bytes is None:
        while True:
            try:
                manifest_bytes, manifest = await fetch.manifest(providers)
                break
            except FetchError:
                if not await fetch.readmit():
                    raise
    else:
        manifest = manifest_mod.decode(manifest_bytes, cube_id)  # hash, then signature
        build.check_fresh(manifest)
    phases["manifest"] = time.monotonic() - mark
    if vet is not None:
        vet(manifest)
    first_index = {}
    for index, chunk_id in enumerate(manifest.chunks):
        first_index.setdefault(chunk_id, index)
    local = dict(zip(first_index, store.has_chunks(list(first_index))))
    wanted = [c for c in first_index if not local[c]]
    plan = FetchPlan(wanted, {c: manifest.chunk_length(first_index[c]) for c in wanted},
                     tuning.chunks_per_request)
    mark = time.monotonic()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fetch.stage)
            try:
                for _ in range(rounds):
                    providers = prefer_direct(providers)
                    tried |= {str(p.peer_id) for p in providers}
                    if providers:
                        await fetch.chunks(plan, providers)
                    if plan.complete:
                        break
                    providers = await fresh_providers()
                    back = await fetch.readmit(plan)
                    providers += [p for p in back if p.peer_id not in {q.peer_id for q in providers}]
                    if not providers:
                        break
            finally:
                phases["chunks"] = time.monotonic() - mark
                mark = time.monotonic()
                fetch.finish_staging()
    except* StoreFullError:
        raise StoreFullError(f"the disk holding the store is full: {len(plan.done)} of {len(wanted)} chunks of "
                             f"{cid.to_text(cube_id)} fetched; those already staged are kept, and a later "
                             "get resumes from them") from None
    phases["staging tail"] = time.monotonic() - mark
    if not plan.complete:
        raise FetchError(f"{cid.to_text(cube_id)}: {len(plan.done)} of {len(wanted)} chunks fetched,"
                         f" no provider left" + reasons(fetch.dropped))

    mark = time.monotonic()
    # every chunk is in the store now (staged, or there before): read back one at a time
    # (in a worker thread: reading and checking a large cube's items must not hold up the daemon)
    cube = await trio.to_thread.run_sync(functools.partial(
        build.verify, manifest_bytes, cube_id, store.chunk, hashed=fetch.hashed, keep_chunks=False))
    phases["verify"] = time.monotonic() - mark
    mark = time.monotonic()
    store.put(cube, pin_reason=pin_reason)
    phases["commit"] = time.monotonic() - mark
    log.debug("fetch %s phases: %s", cid.to_text(cube_id),
              ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in phases.items()))
    paths = {peer: relaying.path_to(host, peer) or relaying.DIRECT for peer in fetch.bytes_from}
    return FetchReport(cube, time.monotonic() - started, dict(fetch.bytes_from), dict(fetch.dropped), paths)
