"""`memnet daemon`: one trio service running the libp2p host, the DHT, the MIP responder, the
re-provide loop and the local control channel, until SIGINT/SIGTERM or `memnet daemon stop`."""

from __future__ import annotations

import json
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
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.tools.anyio_service.context import background_trio_service

from memnet.cube import canonical, cid, name_record
from memnet.cube.manifest import Manifest
from memnet.daemon import allocator, control, state, upkeep
from memnet.daemon.revocations import RevocationWatch
from memnet.daemon.config import DaemonConfig
from memnet.errors import NetworkError, NotFoundError, PolicyError, UsageError
from memnet.files import write_atomic
from memnet.governance import revocations
from memnet.governance.gate import Gate
from memnet.home import Node
from memnet.net import names, prefix_lookup, wire
from memnet.net.discovery import Discovery, cube_key, prefix_key
from memnet.net.fetch import PeerScores, fetch_cube
from memnet.net.host import build_host, parse_multiaddr, peer_info, use_memnet_kad_protocol
from memnet.net.server import MipServer

log = logging.getLogger("memnet.daemon")

NAMES_FILE = "names.json"  # this node's own name records, re-published with the provider records
PROVIDE_CONCURRENCY = 8
LAN_POLL = 10.0
ANNOUNCE_DELAY = 2.0  # s: a fetched prefix is announced (and its revocation looked up) after its first use


def announce_keys(cube_id: bytes, manifest: Manifest) -> list[bytes]:
    keys = [cube_key(cube_id)]
    if manifest.kind == "activation":
        keys += [prefix_key(k) for k in manifest.meta["prefix_keys"]]
    return keys


def _peer_infos(peers: Any) -> list[PeerInfo]:
    """Peer dicts (as _peer_dict writes them) from a control request -> PeerInfo."""
    if not isinstance(peers, list):
        raise UsageError("providers must be a list")
    try:
        return [PeerInfo(ID.from_base58(p["peer_id"]), [parse_multiaddr(a) for a in p["addrs"]]) for p in peers]
    except (KeyError, TypeError, ValueError):
        raise UsageError("providers must be peer records with peer_id and addrs") from None


def _peer_dict(info: Any) -> dict[str, Any]:
    return {"peer_id": str(info.peer_id), "addrs": [str(a) for a in info.addrs]}


class Daemon:
    def __init__(self, node: Node, config: DaemonConfig):
        self.node, self.config = node, config
        self.scores = PeerScores()
        self.seen_names = names.SeenSequences()
        self.revocations = RevocationWatch(self)
        self.providing: set[bytes] = set()
        self.started = int(time.time())
        self._cancel: trio.CancelScope | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED,
                  extra_handlers: dict[str, Callable] | None = None) -> None:
        use_memnet_kad_protocol()
        allocator.tune()
        listen = [parse_multiaddr(a) for a in self.config.listen]
        self.host = build_host(self.node.key, mdns=self.config.mdns)
        try:
            async with self.host.run(listen):
                self.dht = KadDHT(self.host, DHTMode.SERVER, validator=names.validator(),
                                  validator_changed=True, strict_validation=True,
                                  protocol_prefix=TProtocol("/memnet"))
                self.discovery = Discovery(self.dht)
                self.server = MipServer(self.node.store, self.config.serve)
                self.host.set_stream_handler(wire.PROTOCOL_ID, self.server.handle)
                for protocol, handler in (extra_handlers or {}).items():
                    self.host.set_stream_handler(TProtocol(protocol), handler)
                async with background_trio_service(self.dht), trio.open_nursery() as nursery:
                    self._cancel, self._nursery = nursery.cancel_scope, nursery
                    nursery.start_soon(self._signals)
                    await self._bootstrap()
                    token = secrets.token_hex(32)
                    port = await nursery.start(self._control, token)
                    addrs = [str(a) for a in self.host.get_addrs()]
                    state.write(self.node.home, state.DaemonState(
                        os.getpid(), self.node.peer_id, addrs, port, token, self.started))
                    log.info("memnet daemon %s listening on %s", self.node.peer_id, " ".join(addrs))
                    nursery.start_soon(self._reprovide_loop)
                    nursery.start_soon(upkeep.run, self)  # lifecycle transitions and eviction
                    nursery.start_soon(self.revocations.run)  # withdrawals: publish ours, act on others'
                    if self.config.mdns:
                        nursery.start_soon(self._lan_peers)
                    task_status.started(self)
        finally:
            state.remove(self.node.home, os.getpid())
            log.info("memnet daemon stopped")

    def stop(self) -> None:
        if self._cancel is not None:
            self._cancel.cancel()

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("received %s, shutting down", signal.Signals(signum).name)
                self.stop()
                return

    async def _control(self, token: str, task_status=trio.TASK_STATUS_IGNORED) -> None:
        commands = {name[4:]: getattr(self, name) for name in dir(self) if name.startswith("cmd_")}
        await control.serve(task_status.started, token, commands)

    # -- joining the swarm -------------------------------------------------------------------

    async def _join(self, info: Any) -> bool:
        try:
            with trio.fail_after(10):
                await self.host.connect(info)
            await self.dht.add_peer(info.peer_id)
            return True
        except Exception as exc:
            log.warning("cannot reach peer %s: %s", info.peer_id, exc or type(exc).__name__)
            return False

    async def _bootstrap(self) -> None:
        peers = [peer_info(a) for a in self.config.bootstrap]
        joined = 0
        for info in peers:
            joined += await self._join(info)
        if peers:
            log.info("bootstrap: joined %d of %d peers", joined, len(peers))
        if joined:
            # a lookup of our own id fills the routing table and makes us known to our neighbours
            with trio.move_on_after(30):
                await self.dht.peer_routing.find_closest_peers_network(self.host.get_id().to_bytes())
            log.info("routing table: %d peers", self.dht.get_routing_table_size())

    async def _lan_peers(self) -> None:
        """mDNS puts LAN peers in the peerstore; bring them into the DHT."""
        me = self.host.get_id()
        while True:
            await trio.sleep(LAN_POLL)
            store = self.host.get_peerstore()
            for peer in store.peers_with_addrs():
                if peer != me and self.dht.routing_table.get_peer_info(peer) is None:
                    await self._join(PeerInfo(peer, store.addrs(peer)))

    # -- announcing --------------------------------------------------------------------------

    async def announce(self, cube_id: bytes, manifest: Manifest | None = None) -> bool:
        """Provide every key of a cube; True if some peer took the cube's own record."""
        if revocations.is_revoked(self.node.store, cube_id):
            return False  # withdrawn by its author: never announced again
        manifest = manifest or self.node.store.manifest(cube_id)
        keys = announce_keys(cube_id, manifest)
        reached = await self.discovery.provide(keys[0])
        if keys[1:]:  # an activation cube's prefix keys: one DHT provide each, all at once
            async with trio.open_nursery() as nursery:
                for key in keys[1:]:
                    nursery.start_soon(self.discovery.provide, key)
        self.providing.add(cube_id)
        return reached

    async def _announce_in_background(self, cube_id: bytes, manifest: Manifest, delay: float = 0.0) -> None:
        await trio.sleep(delay)
        try:
            await self.announce(cube_id, manifest)
        except Exception as exc:  # a failed announcement must not take the daemon down
            log.warning("announcing %s failed: %r", cid.to_text(cube_id), exc)

    async def _reprovide_loop(self) -> None:
        while True:
            started = time.monotonic()
            entries = self.node.store.entries(pinned=True)
            entries = [e for e in entries if e.manifest.expires is None or e.manifest.expires > time.time()]
            limiter = trio.CapacityLimiter(PROVIDE_CONCURRENCY)

            async def one(entry) -> None:
                async with limiter:
                    await self.announce(entry.cube_id, entry.manifest)

            async with trio.open_nursery() as nursery:
                for entry in entries:
                    nursery.start_soon(one, entry)
            await self._republish_names()
            log.info("announced %d pinned cubes in %.2f s", len(entries), time.monotonic() - started)
            await trio.sleep(self.config.reprovide_interval)

    # -- names -------------------------------------------------------------------------------

    def _own_names(self) -> dict[str, str]:
        try:
            return json.loads((self.node.home / NAMES_FILE).read_text())
        except (OSError, ValueError):
            return {}

    async def _republish_names(self) -> None:
        for name, record_hex in self._own_names().items():
            record = bytes.fromhex(record_hex)
            try:
                name_record.decode(record)
            except PolicyError:
                continue  # expired: the user publishes again when they want it back
            try:
                await self.discovery.put_name(record)
            except NetworkError as exc:
                log.warning("re-publishing name %s failed: %s", name, exc)

    # -- control commands (each gets its args and a progress callback) -----------------------

    async def cmd_status(self, args: dict, progress) -> dict:
        usage = self.node.store.usage()
        return {
            "peer_id": self.node.peer_id, "pid": os.getpid(),
            "addrs": [str(a) for a in self.host.get_addrs()],
            "uptime": int(time.time()) - self.started,
            "connected": len(self.host.get_connected_peers()),
            "routing_table": self.dht.get_routing_table_size(),
            "providing": len(self.providing), "served_bytes": self.server.served_bytes,
            **usage,
        }

    async def cmd_peers(self, args: dict, progress) -> list:
        store = self.host.get_peerstore()
        return [{"peer_id": str(p), "addrs": [str(a) for a in store.addrs(p)]}
                for p in self.host.get_connected_peers()]

    async def cmd_announce(self, args: dict, progress) -> dict:
        reached = {}
        for cube_id in args.get("cubes", []):
            reached[cid.to_text(cube_id)] = await self.announce(cube_id)
            log.info("announced %s", cid.to_text(cube_id))
        return reached

    async def cmd_unannounce(self, args: dict, progress) -> None:
        for cube_id in args.get("cubes", []):
            self.providing.discard(cube_id)
            try:
                keys = announce_keys(cube_id, self.node.store.manifest(cube_id))
            except NotFoundError:
                keys = [cube_key(cube_id)]
            for key in keys:
                self.discovery.stop_providing(key)

    async def cmd_find(self, args: dict, progress) -> list:
        if "cube" in args:
            key = cube_key(cid.check_binary(args["cube"]))
        else:
            key = prefix_key(args["prefix"])
        return [_peer_dict(p) for p in await self.discovery.find_providers(key)]

    async def cmd_find_prefix(self, args: dict, progress) -> list:
        probes = prefix_lookup.check_probes(args.get("probes"))
        found = await prefix_lookup.find_prefix_cubes(self.host, self.discovery, probes, self.scores,
                                                      self.config.prefix_neighbours)
        return [{"cube": cube_id, "manifest": data, "providers": [_peer_dict(p) for p in providers]}
                for cube_id, data, providers in found]

    async def cmd_get(self, args: dict, progress) -> dict:
        cube_id = cid.check_binary(args["cube"])
        pin = args.get("pin", True)
        # auto: a fetch no user asked for by CID (generation): the trust policy decides whether to
        # fetch and pin; a revoked cube is refused either way
        auto, gate = args.get("auto", False), Gate.for_node(self.node, fresh=True)
        revocations.refuse_revoked(self.node.store, cube_id)
        if self.node.store.has(cube_id):
            if pin and (not auto or gate.allows("pin", cube_id, self.node.store.manifest(cube_id).author)):
                self.node.store.pin(cube_id, "fetched")
            return {"cube": cube_id, "already": True}

        hints = _peer_infos(args.get("providers", []))
        known_manifest = args.get("manifest")  # from a prefix lookup: authenticated again by the fetch
        if known_manifest is not None and not isinstance(known_manifest, bytes):
            raise UsageError("manifest must be bytes")

        async def providers():
            # providers the caller already found (a prefix lookup) first; the DHT for the rest
            if hints:
                found, hints[:] = list(hints), []
                return found
            return await self.discovery.find_providers(cube_key(cube_id))

        report = await fetch_cube(self.host, self.node.store, cube_id, providers, scores=self.scores,
                                  tuning=self.config.fetch, progress=progress,
                                  pin_reason="fetched" if pin and not auto else None,
                                  vet=(lambda m: gate.check("fetch", cube_id, m.author)) if auto else None,
                                  manifest_bytes=known_manifest)
        if auto and pin:
            pin = gate.allows("pin", cube_id, report.cube.manifest.author)
            if pin:
                self.node.store.pin(cube_id, "fetched")
        log.info("fetched %s (%d bytes) in %.2f s from %d peer(s)%s", cid.to_text(cube_id),
                 report.cube.manifest.size, report.seconds, len(report.bytes_from),
                 f", dropped {len(report.dropped)}" if report.dropped else "")
        await self.revocations.vet_fetched(cube_id, report.cube.manifest, wait=args.get("wait_announce", True),
                                           delay=ANNOUNCE_DELAY)
        if self.config.provide_fetched and pin:
            if args.get("wait_announce", True):
                await self.announce(cube_id, report.cube.manifest)
            else:  # the caller is about to use the cube (a prefix for generation): share it after that
                self._nursery.start_soon(self._announce_in_background, cube_id, report.cube.manifest,
                                         ANNOUNCE_DELAY)
        return {"cube": cube_id, "already": False, "size": report.cube.manifest.size,
                "seconds": report.seconds, "from": report.bytes_from, "dropped": report.dropped}

    async def cmd_revoke(self, args: dict, progress) -> dict:
        return await self.revocations.publish_own(args["record"])

    async def cmd_name_publish(self, args: dict, progress) -> dict:
        name, cube_id = args["name"], cid.check_binary(args["cube"])
        ttl = int(args.get("ttl") or name_record.DEFAULT_TTL)
        if not 0 < ttl <= name_record.MAX_TTL:
            raise UsageError(f"--ttl must be between 1 and {name_record.MAX_TTL} seconds")
        seq = 0
        own = self._own_names()
        if name in own:
            seq = _seq_of(bytes.fromhex(own[name])) + 1
        current = await self.discovery.resolve_name(self.node.author, name)
        if current is not None:
            seq = max(seq, current.seq + 1)
        record = name_record.sign(self.node.key, name, cube_id, seq, int(time.time()) + ttl)
        await self.discovery.put_name(record)
        own[name] = record.hex()
        write_atomic(self.node.home / NAMES_FILE, json.dumps(own, indent=1).encode(), mode=0o600)
        return {"name": name, "cube": cube_id, "seq": seq, "expires": int(time.time()) + ttl}

    async def cmd_name_resolve(self, args: dict, progress) -> dict:
        author, name = args["author"], args["name"]
        record = await self.discovery.resolve_name(author, name)
        if record is None:
            raise NotFoundError(f"no valid record for name {name!r} of that author")
        self.seen_names.check_and_update(record)
        return {"cube": record.cube, "seq": record.seq, "expires": record.expires}

    async def cmd_stop(self, args: dict, progress) -> None:
        async def soon() -> None:
            await trio.sleep(0.1)  # let the reply reach the caller first
            self.stop()
        self._nursery.start_soon(soon)


def _seq_of(record: bytes) -> int:
    """The sequence number of one of our own past records, expired or not."""
    return int(canonical.decode(record, name_record.MAX_RECORD)["seq"])
