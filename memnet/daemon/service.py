"""`memnet daemon`: the libp2p host and its DHT, and the services that use them, in one trio
run until SIGINT/SIGTERM or `memnet shutdown`.

Each concern is a service in its own module (memnet/daemon/base.py says what a service is):

    nat          reachability, UPnP, relays, hole punching            daemon/nat.py
    mip          answer peers' MIP requests from the store            daemon/mip.py
    peers        join the swarm, LAN peers, list peers                daemon/peers.py
    announcer    provide, withdraw, re-provide                        daemon/announcer.py
    names        signed name records                                  daemon/names.py
    revocations  publish ours, act on others'                         daemon/revocations.py
    upkeep       lifecycle and eviction                               daemon/upkeep.py
    fetching     find and get cubes, prefix lookups, partial fetches daemon/fetching.py
    control      the CLI's channel, serving every service's commands  daemon/control.py
    bridge       the hivemind bridge process (distributed inference)  daemon/bridge.py
    http         OpenAI-compatible API, dashboard, resident model     daemon/http.py

A new service is one module and one line in Daemon._services. The daemon itself answers
status, stop and reload_config.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import time
from collections.abc import Callable
from typing import Any

import trio
from libp2p.custom_types import TProtocol
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.tools.anyio_service.context import background_trio_service

from memnet import config as config_mod
from memnet.config import Config
from memnet.daemon import allocator, state
from memnet.daemon.announcer import Announcer
from memnet.daemon.base import Service
from memnet.daemon.bridge import Bridge
from memnet.daemon.commands import Command, NoArgs, Progress, Table
from memnet.daemon.control import ControlServer
from memnet.daemon.fetching import Fetching
from memnet.daemon.http import Http
from memnet.daemon.mip import Mip
from memnet.daemon.names import Names
from memnet.daemon.nat import Nat
from memnet.daemon.peers import Peers
from memnet.daemon.revocations import RevocationWatch
from memnet.daemon.upkeep import Upkeep
from memnet.home import Node
from memnet.net import names, provider_hygiene
from memnet.net.discovery import Discovery
from memnet.net.host import build_host, parse_multiaddr, resource_use, set_dht_query_timeout, use_memnet_kad_protocol

log = logging.getLogger("memnet.daemon")


class Daemon:
    def __init__(self, node: Node, config: Config | None = None, overrides: dict[str, Any] | None = None):
        """overrides: the command line's settings ({dotted key: value}); they win over
        config.json, also after a reload."""
        self.node, self.overrides = node, dict(overrides or {})
        self.config = config or config_mod.load(node.home, self.overrides)
        self.started = int(time.time())
        self.services: list[Service] = []
        self.commands = Table()
        self._cancel: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None

    def _services(self, token: str) -> list[Service]:
        """The services, in start order (stopped in reverse)."""
        store, config, node = self.node.store, self.config, self.node
        self.nat = Nat(self.host, self.dht, config, lambda: self.announcer.reprovide_now())
        self.mip = Mip(self.host, store, config)
        self.peers = Peers(self.host, self.dht, config)
        self.announcer = Announcer(store, self.discovery, config)
        self.names = Names(node.home, node.key, self.discovery, config)
        self.revocations = RevocationWatch(store, node.author, self.discovery, self.announcer, config)
        self.upkeep = Upkeep(store, self.announcer, config, node.home, lambda: bool(node.models.pinned_models()))
        self.fetching = Fetching(self.host, store, self.discovery, lambda: node.gate(fresh=True),
                                 self.announcer, self.revocations, config)
        self.control = ControlServer(token, self.commands)
        self.bridge = Bridge(node.home, config, self.control)
        self.http = Http(node, config, self.commands, self.fetching, self.announcer)
        return [self.nat, self.mip, self.peers, self.announcer, self.names, self.revocations, self.upkeep, self.fetching,
                self.control, self.bridge, self.http]

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED,
                  extra_handlers: dict[str, Callable] | None = None) -> None:
        """extra_handlers: more libp2p protocols to serve beside MIP (benchmarks' baselines)."""
        with state.HomeLock(self.node.home):  # before anything else: one daemon per home
            use_memnet_kad_protocol()
            set_dht_query_timeout(self.config.daemon.dht_query_timeout)
            allocator.tune()
            listen = [parse_multiaddr(a) for a in self.config.daemon.listen]
            self.host = build_host(self.node.key, mdns=self.config.daemon.mdns)
            try:
                async with self.host.run(listen):
                    self.dht = KadDHT(self.host, DHTMode.SERVER, validator=names.validator(),
                                      validator_changed=True, strict_validation=True,
                                      protocol_prefix=TProtocol("/memnet"))
                    provider_hygiene.install(self.dht.provider_store)
                    self.discovery = Discovery(self.dht, self.config.daemon.dht_query_timeout,
                                               self.config.daemon.find_grace)
                    for protocol, handler in (extra_handlers or {}).items():
                        self.host.set_stream_handler(TProtocol(protocol), handler)
                    async with background_trio_service(self.dht), trio.open_nursery() as nursery:
                        self._cancel, self._nursery = nursery.cancel_scope, nursery
                        nursery.start_soon(self._signals)
                        await self._start(nursery)
                        task_status.started(self)
            finally:
                for service in reversed(self.services):
                    service.stop()
                state.remove(self.node.home, os.getpid())
                log.info("memnet daemon stopped")

    async def _start(self, nursery: trio.Nursery) -> None:
        token = secrets.token_hex(32)
        self.services = self._services(token)
        for command in self._commands() + [c for s in self.services for c in s.commands()]:
            self.commands.add(command)
        for service in self.services:
            await service.start(nursery)
        addrs = [str(a) for a in self.host.get_addrs()]
        state.write(self.node.home, state.DaemonState(os.getpid(), self.node.peer_id, addrs, self.control.port,
                                                      token, self.started))
        log.info("memnet daemon %s listening on %s", self.node.peer_id, " ".join(addrs))

    def stop(self) -> None:
        if self._cancel is not None:
            self._cancel.cancel()

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("received %s, shutting down", signal.Signals(signum).name)
                self.stop()
                return

    async def call(self, name: str, args: dict[str, Any] | None = None, progress: Progress | None = None) -> Any:
        """Run a control command in this process (benchmarks and tests that hold the daemon)."""
        return await self.commands.run(name, args or {}, progress)

    # -- the daemon's own commands -----------------------------------------------------------

    def _commands(self) -> list[Command]:
        return [Command("status", self._cmd_status, NoArgs, "identity, addresses, peers, store"),
                Command("stop", self._cmd_stop, NoArgs, "shut the daemon down"),
                Command("reload_config", self._cmd_reload, NoArgs, "apply config.json's live settings")]

    async def _cmd_status(self, args: NoArgs, progress: Progress) -> dict:
        usage = self.node.store.usage()
        return {
            "peer_id": self.node.peer_id, "pid": os.getpid(),
            "addrs": [str(a) for a in self.host.get_addrs()],
            "uptime": int(time.time()) - self.started,
            "connected": len(self.host.get_connected_peers()),
            "routing_table": self.dht.get_routing_table_size(),
            "providing": len(self.announcer.providing), "served_bytes": self.mip.server.served_bytes,
            "services": {s.name: f"failed: {s.failed}" if s.failed else "ok" for s in self.services},
            "nat": self.nat.status(),
            "bridge": self.bridge.state,
            "consolidation": self.upkeep.status(),
            "http": {"url": self.http.url, "model": self.http.engine.info() if self.http.engine else None},
            "resources": resource_use(self.host),
            **usage,
        }

    async def _cmd_stop(self, args: NoArgs, progress: Progress) -> None:
        async def soon() -> None:
            await trio.sleep(0.1)  # let the reply reach the caller first
            self.stop()
        assert self._nursery is not None
        self._nursery.start_soon(soon)

    async def _cmd_reload(self, args: NoArgs, progress: Progress) -> dict:
        """Read config.json again: live settings take effect now; the others are named."""
        new = config_mod.load(self.node.home, self.overrides)
        changed = config_mod.changed(self.config, new)
        restart = [s.key for s in changed if not s.live]
        self.config = self.node.config = new
        for service in self.services:
            service.configure(new)
        if getattr(self, "discovery", None) is not None:
            self.discovery.grace = new.daemon.find_grace
        applied = [s.key for s in changed if s.live]
        if changed:
            log.info("config reloaded: applied %s%s", applied or "nothing",
                     f"; needs a restart: {restart}" if restart else "")
        return {"applied": applied, "restart": restart}
