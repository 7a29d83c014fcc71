"""The MIP service: answers peers' manifest, chunk, have and prefix requests from the local
store (memnet/net/server.py) within the per-peer limits of config.json's daemon.limits."""

from __future__ import annotations

import trio
from libp2p.abc import IHost
from libp2p.custom_types import TProtocol

from memnet.config import Config
from memnet.daemon.base import Service
from memnet.net import wire
from memnet.net.server import MipServer
from memnet.store import Store


class Mip(Service):
    name = "mip"

    def __init__(self, host: IHost, store: Store, config: Config):
        super().__init__()
        self.host = host
        self.server = MipServer(store, config.daemon.limits)

    def configure(self, config: Config) -> None:
        self.server.limits = config.daemon.limits

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        self.host.set_stream_handler(TProtocol(wire.PROTOCOL_ID), self.server.handle)
        task_status.started()
