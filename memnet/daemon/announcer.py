"""The announcer service: provides this node's cubes in the DHT (a cube's own key, plus an
activation cube's prefix-chain keys), withdraws them, and re-provides every pinned cube each
reprovide_interval (provider records live 48 h)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import trio

from memnet.config import Config
from memnet.cube import cid
from memnet.cube.manifest import Manifest
from memnet.daemon.base import Service
from memnet.daemon.commands import Command, Progress
from memnet.errors import NotFoundError
from memnet.governance import revocations
from memnet.net.dht_keys import announce_keys as keys_of, cube_key
from memnet.net.discovery import Discovery
from memnet.store import Store

log = logging.getLogger("memnet.announce")

PROVIDE_CONCURRENCY = 8
ANNOUNCE_DELAY = 2.0  # s: a fetched prefix is announced (and its revocation looked up) after its first use


def announce_keys(cube_id: bytes, manifest: Manifest) -> list[bytes]:
    return keys_of(cube_id, manifest.kind, manifest.meta.get("prefix_keys", ()))


@dataclass(frozen=True)
class CubesArgs:
    cubes: list[bytes]


class Announcer(Service):
    name = "announcer"

    def __init__(self, store: Store, discovery: Discovery, config: Config):
        super().__init__()
        self.store, self.discovery = store, discovery
        self.providing: dict[bytes, list[bytes]] = {}  # cube id -> the DHT keys announced for it
        self._nursery: trio.Nursery | None = None
        self._wake_now = False
        self.configure(config)

    def configure(self, config: Config) -> None:
        self.interval = config.daemon.reprovide_interval
        changed = getattr(self, "_changed", None)
        if changed is not None:
            changed.set()  # a sleeping loop recomputes its wake-up from the new interval

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await self._reprovide_loop()

    def commands(self) -> list[Command]:
        return [Command("announce", self._cmd_announce, CubesArgs, "provide cubes now"),
                Command("unannounce", self._cmd_unannounce, CubesArgs, "stop providing cubes")]

    async def announce(self, cube_id: bytes, manifest: Manifest | None = None) -> bool:
        """Provide every key of a cube; True if some peer took the cube's own record."""
        if revocations.is_revoked(self.store, cube_id):
            return False  # withdrawn by its author: never announced again
        manifest = manifest or self.store.manifest(cube_id)
        keys = announce_keys(cube_id, manifest)
        reached = await self.discovery.provide(keys[0])
        if keys[1:]:  # an activation cube's prefix keys: one DHT provide each, all at once
            async with trio.open_nursery() as nursery:
                for key in keys[1:]:
                    nursery.start_soon(self.discovery.provide, key)
        self.providing[cube_id] = keys
        return reached

    def announce_later(self, cube_id: bytes, manifest: Manifest, delay: float = ANNOUNCE_DELAY) -> None:
        """Announce in the background after delay seconds (the caller is about to use the cube:
        its DHT traffic should not compete with that)."""
        if self._nursery is not None:
            self._nursery.start_soon(self._announce_quietly, cube_id, manifest, delay)

    async def _announce_quietly(self, cube_id: bytes, manifest: Manifest, delay: float) -> None:
        await trio.sleep(delay)
        try:
            await self.announce(cube_id, manifest)
        except Exception as exc:  # a failed announcement must not take the daemon down
            log.warning("announcing %s failed: %r", cid.to_text(cube_id), exc)

    def unannounce(self, cube_ids: list[bytes]) -> None:
        for cube_id in cube_ids:
            keys = self.providing.pop(cube_id, None)
            if keys is None:  # not announced by this run: the keys the cube would have
                try:
                    keys = announce_keys(cube_id, self.store.manifest(cube_id))
                except NotFoundError:
                    keys = [cube_key(cube_id)]
            for key in keys:
                self.discovery.stop_providing(key)

    async def _reprovide_loop(self) -> None:
        while True:
            started = time.monotonic()
            self._wake_now = False
            entries = [e for e in self.store.entries(pinned=True)
                       if e.manifest.expires is None or e.manifest.expires > time.time()]
            limiter = trio.CapacityLimiter(PROVIDE_CONCURRENCY)

            async def one(entry) -> None:
                async with limiter:
                    await self.announce(entry.cube_id, entry.manifest)

            async with trio.open_nursery() as nursery:
                for entry in entries:
                    nursery.start_soon(one, entry)
            log.info("announced %d pinned cubes in %.2f s", len(entries), time.monotonic() - started)
            await self._sleep_interval(trio.current_time())

    def reprovide_now(self) -> None:
        """Our addresses changed (a relay slot taken or lost, reachability found): provider
        records carry addresses, so announce everything again now rather than at the interval."""
        self._wake_now = True
        changed = getattr(self, "_changed", None)
        if changed is not None:
            changed.set()

    async def _sleep_interval(self, since: float) -> None:
        """Until interval seconds after since; a changed interval moves the wake-up."""
        while trio.current_time() < since + self.interval and not self._wake_now:
            self._changed = trio.Event()
            with trio.move_on_at(since + self.interval):
                await self._changed.wait()

    async def _cmd_announce(self, args: CubesArgs, progress: Progress) -> dict:
        reached = {}
        for cube_id in args.cubes:
            reached[cid.to_text(cube_id)] = await self.announce(cube_id)
            log.info("announced %s", cid.to_text(cube_id))
        return reached

    async def _cmd_unannounce(self, args: CubesArgs, progress: Progress) -> None:
        self.unannounce(args.cubes)
