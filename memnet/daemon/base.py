"""What a daemon service is: one concern with its own start and stop, its background tasks in a
nursery it is given, its control commands, and its reaction to a changed config.

    class Thing(Service):
        name = "thing"
        async def run(self, task_status):   # set up, task_status.started(), then serve
        def commands(self) -> list[Command]
        def configure(self, config)         # config.json changed (memnet config set)

The daemon builds each service with the parts it needs (memnet/daemon/service.py, one line per
service), starts them in order and stops them in reverse. A failing service logs and ends; the
others go on (a daemon that stops serving others is worse than one that lost a feature).
"""

from __future__ import annotations

import logging

import trio

from memnet.config import Config
from memnet.daemon.commands import Command

log = logging.getLogger("memnet.daemon")


class Service:
    name = "service"

    def __init__(self) -> None:
        self._scope: trio.CancelScope | None = None
        self.failed: str | None = None  # why it ended after starting (the daemon went on without it)

    async def start(self, nursery: trio.Nursery) -> None:
        """Start in nursery; returns once the service is ready (its run() called started())."""
        await nursery.start(self._guarded)

    async def _guarded(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        status = _Status(task_status)
        with trio.CancelScope() as scope:
            self._scope = scope
            try:
                await self.run(status)
            except Exception as exc:
                if not status.done:
                    raise  # failing to start fails the daemon's start
                self.failed = repr(exc)[:200]
                log.exception("service %s failed; the daemon goes on without it", self.name)

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Override: set up, call task_status.started(), then serve until cancelled (or return
        at once for a service with no task of its own)."""
        task_status.started()

    def stop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    def commands(self) -> list[Command]:
        return []

    def configure(self, config: Config) -> None:
        """A new config is in force (only settings that can change live reach a running daemon)."""


class _Status:
    """task_status that remembers whether the service said it started."""

    def __init__(self, inner) -> None:
        self.inner, self.done = inner, False

    def started(self, value=None) -> None:
        self.done = True
        self.inner.started(value)
