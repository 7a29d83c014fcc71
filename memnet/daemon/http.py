"""The HTTP service: the resident model (memnet/scheduler/engine.py), the OpenAI-compatible API
and the dashboard (memnet/http/), served by Hypercorn's trio worker in the daemon's nursery.
On only with `memnet daemon --http` (or http.enabled); loopback by default."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Any

import trio

from memnet.api import DaemonSwarm
from memnet.config import Config
from memnet.daemon.base import Service
from memnet.daemon.commands import Command, NoArgs, Progress, Table
from memnet.errors import DaemonError, DaemonTimeout, MemnetError
from memnet.files import write_atomic
from memnet.home import Node
from memnet.http.guard import is_loopback

log = logging.getLogger("memnet.daemon")
TOKEN_FILE = "http_token"
POLL = 0.1   # s: how often a waiting fetch asks its give-up rule


def token_of(home: Path) -> str:
    """The HTTP bearer token, made on first use (0600, beside the node key)."""
    path = home / TOKEN_FILE
    try:
        token = path.read_text().strip()
        if len(token) >= 32:
            return token
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    write_atomic(path, token.encode(), mode=0o600)
    return token


class InProcessClient:
    """The control client's call(), for a thread of this daemon: runs the command on the trio
    loop. With give_up, the command runs on past the caller's giving up (a fetch abandoned for
    a prefill still lands in the store for next time)."""

    def __init__(self, commands: Table, nursery: trio.Nursery):
        self.commands, self.nursery = commands, nursery

    def call(self, cmd: str, give_up=None, **args: Any) -> Any:
        return trio.from_thread.run(self._call, cmd, args, give_up)

    async def _call(self, cmd: str, args: dict[str, Any], give_up) -> Any:
        box: dict[str, Any] = {}
        done, progress = trio.Event(), [0, 0]

        async def work() -> None:
            try:
                box["value"] = await self.commands.run(cmd, args, lambda d, t: progress.__setitem__(slice(None), [d, t]))
            except Exception as exc:  # noqa: BLE001 - handed to the caller; the service goes on
                box["error"] = exc
            finally:
                done.set()

        self.nursery.start_soon(work)
        started = trio.current_time()
        while not done.is_set():
            with trio.move_on_after(POLL):
                await done.wait()
            if not done.is_set() and give_up is not None and give_up(trio.current_time() - started, *progress):
                raise DaemonTimeout(f"{cmd} did not finish in time")
        if "error" in box:
            raise DaemonError(str(box["error"]).splitlines()[0][:300] if str(box["error"]) else type(box["error"]).__name__)
        return box["value"]


class ServiceSwarm(DaemonSwarm):
    """generate's view of the swarm from inside the daemon: a failed lookup is no prefix."""

    def find_prefix(self, probes: list[list[bytes]]) -> list[tuple[bytes, bytes]]:
        try:
            return super().find_prefix(probes)
        except DaemonError as exc:
            log.info("prefix lookup failed: %s", exc)
            return []


class Http(Service):
    name = "http"

    def __init__(self, node: Node, config: Config, commands: Table, fetching: Any, announcer: Any):
        super().__init__()
        self.node, self.settings, self.table = node, config.http, commands
        self.fetching, self.announcer = fetching, announcer
        self.url: str | None = None
        self.engine: Any = None

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        if not self.settings.enabled:
            task_status.started()
            return
        from hypercorn.config import Config as HypercornConfig
        from hypercorn.trio import serve

        from memnet.http import app as app_mod
        from memnet.http.dashboard import Dashboard
        from memnet.http.openai_api import OpenAIApi
        from memnet.scheduler.engine import Engine

        token = token_of(self.node.home)
        async with trio.open_nursery() as nursery:
            swarm = ServiceSwarm(InProcessClient(self.table, nursery))
            self.engine = Engine(self.node, self.settings, swarm, on_cached=self._cached)
            api = OpenAIApi(self.engine)
            host, _, port = self.settings.listen.rpartition(":")
            host = host.strip("[]")
            about = {"url": None, "token_required_for_api": not is_loopback(host)}
            dashboard = Dashboard(self.node, self.table, self.engine.info, self._fetches, about)
            config = HypercornConfig()
            config.bind = [self.settings.listen]
            config.accesslog = None
            config.errorlog = logging.getLogger("memnet.http")
            # a connection with no request under way goes after 5 s (hypercorn's default, kept:
            # clients reconnect unseen); a request head over 16 KiB gets 431; bodies: openai_api.MAX_BODY
            config.keep_alive_timeout = 5
            binds = await nursery.start(serve, app_mod.build(api, dashboard, token, host), config)
            self.url = about["url"] = binds[0]
            log.info("HTTP API and dashboard on %s", self.url)
            nursery.start_soon(self._start_engine)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self.engine.stop()

    async def _start_engine(self) -> None:
        try:
            await self.engine.start()
        except MemnetError as exc:
            log.warning("the HTTP API has no model: %s", exc)
        except Exception:  # noqa: BLE001 - the API answers 5xx; the daemon goes on serving peers
            log.exception("loading the model for the HTTP API failed")

    def _cached(self, cube_id: bytes) -> None:
        if self.settings.share_prompt_caches:
            self.announcer.announce_later(cube_id, self.node.store.manifest(cube_id), 1.0)

    def _fetches(self) -> list[dict[str, Any]]:
        return [dict(v) for v in self.fetching.in_flight.values()]

    def commands(self) -> list[Command]:
        return [Command("http_status", self._cmd_status, NoArgs, "the HTTP API: URL, model, requests")]

    async def _cmd_status(self, args: NoArgs, progress: Progress) -> dict:
        return {"enabled": self.settings.enabled, "url": self.url,
                "model": self.engine.info() if self.engine is not None else None}
