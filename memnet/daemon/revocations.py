"""The daemon's side of revocation (docs/MIP.md §20): publish this node's revocations in the DHT,
look there for revocations of the cubes it holds, and act on a valid one: keep the record, stop
providing the cube, unpin it. The MIP server and generation then refuse the cube (they read the
store's "revoked" table)."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import trio

from memnet.config import Config
from memnet.cube import cid, revocation
from memnet.cube.manifest import Manifest
from memnet.daemon.announcer import Announcer
from memnet.daemon.base import Service
from memnet.daemon.commands import Command, Progress
from memnet.errors import MemnetError, NetworkError, UsageError
from memnet.governance import revocations
from memnet.net import revocation_records
from memnet.net.discovery import Discovery
from memnet.store import Store

log = logging.getLogger("memnet.revocation")

CHECK_CONCURRENCY = 8
REPUBLISH_INTERVAL = 12 * 3600  # DHT values expire after 24 h (py-libp2p's DEFAULT_TTL)
FETCH_CHECK_TIMEOUT = 5.0       # s a `memnet get` waits for the DHT to say whether a cube is revoked


@dataclass(frozen=True)
class RevokeArgs:
    record: bytes


class RevocationWatch(Service):
    name = "revocations"

    def __init__(self, store: Store, author: bytes, discovery: Discovery, announcer: Announcer, config: Config):
        super().__init__()
        self.store, self.author, self.discovery, self.announcer = store, author, discovery, announcer
        self._nursery: trio.Nursery | None = None
        self.configure(config)

    def configure(self, config: Config) -> None:
        self.interval = config.daemon.revocation_check_interval

    def commands(self) -> list[Command]:
        return [Command("revoke", self._cmd_revoke, RevokeArgs, "withdraw one of this node's cubes")]

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await self._watch()

    async def _watch(self) -> None:
        """Every revocation_check_interval: look up the held cubes; every REPUBLISH_INTERVAL (and
        at start, for revocations made while the daemon was down): re-put every stored record,
        so withdrawals outlive their authors' absence."""
        published = -math.inf
        while True:
            if time.monotonic() - published >= REPUBLISH_INTERVAL:
                published = time.monotonic()
                await self.republish()
            try:
                await self.check_held()
            except Exception as exc:  # a failed round must not take the daemon down
                log.warning("revocation check failed: %r", exc)
            await trio.sleep(self.interval)

    async def republish(self) -> None:
        for record in revocations.all_records(self.store):
            try:
                await revocation_records.publish(self.discovery, record)
            except NetworkError as exc:
                log.warning("re-publishing a revocation failed: %s", exc)

    async def check_held(self) -> int:
        """Look up a revocation of every held cube by another author; returns how many were
        revoked."""
        held = [e for e in self.store.entries()
                if e.manifest.author != self.author and not revocations.is_revoked(self.store, e.cube_id)]
        limiter = trio.CapacityLimiter(CHECK_CONCURRENCY)
        found = 0

        async def one(cube_id: bytes, manifest: Manifest) -> None:
            nonlocal found
            async with limiter:
                if await self.check(cube_id, manifest):
                    found += 1

        async with trio.open_nursery() as nursery:
            for entry in held:
                nursery.start_soon(one, entry.cube_id, entry.manifest)
        return found

    async def check(self, cube_id: bytes, manifest: Manifest) -> bool:
        """Ask the DHT whether cube_id is revoked; act on a valid record. True if revoked."""
        record = await revocation_records.find(self.discovery, manifest.author, cube_id)
        if record is None:
            return False
        await self.act(record, cube_id, manifest.author)
        return True

    async def act(self, record: bytes, cube_id: bytes, author: bytes) -> None:
        """Verify (signature, and that author wrote the cube), stop providing, store the record
        and drop the cube."""
        revocations.verify(record, cube_id, author)
        self.announcer.unannounce([cube_id])
        revocations.accept(self.store, record, cube_id, author)
        log.info("cube %s revoked by its author: no longer provided, served or kept", cid.to_text(cube_id))

    async def _cmd_revoke(self, args: RevokeArgs, progress: Progress) -> dict:
        """`memnet revoke`: the CLI has stored the record (and dropped the cube); stop providing
        it here and put the record into the DHT. Only this node's own revocations."""
        parsed = revocation.decode(args.record)
        if parsed.author != self.author:
            raise UsageError("revoke: the record is not signed by this node")
        await self.act(args.record, parsed.revokes, parsed.author)
        await revocation_records.publish(self.discovery, args.record)
        return {"cube": parsed.revokes}

    async def vet_fetched(self, cube_id: bytes, manifest: Manifest, wait: bool, delay: float = 0.0) -> None:
        """After a fetch: is the new cube revoked? Waited for (bounded) when a user asked for it
        (PolicyError if so); in the background when generation is about to use it, after delay
        seconds (its DHT lookup would otherwise compete with that generation for the CPU)."""
        if not wait:
            if self._nursery is not None:
                self._nursery.start_soon(self._check_quietly, cube_id, manifest, delay)
            return
        with trio.move_on_after(FETCH_CHECK_TIMEOUT):
            await self._check_quietly(cube_id, manifest)
        revocations.refuse_revoked(self.store, cube_id)

    async def _check_quietly(self, cube_id: bytes, manifest: Manifest, delay: float = 0.0) -> None:
        await trio.sleep(delay)
        try:
            await self.check(cube_id, manifest)
        except MemnetError as exc:
            log.info("revocation lookup for %s failed: %s", cid.to_text(cube_id), exc)
