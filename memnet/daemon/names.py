"""The names service: publish this node's signed name records in the DHT, keep re-publishing
them (with the provider records, every reprovide_interval), and resolve others' names, never
accepting a lower sequence number for a name seen before."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from memnet.config import Config
from memnet.cube import canonical, keys, name_record
from memnet.daemon.base import Service
from memnet.daemon.commands import Command, Progress
from memnet.errors import NetworkError, NotFoundError, PolicyError, UsageError
from memnet.files import write_atomic
from memnet.net import names
from memnet.net.discovery import Discovery

log = logging.getLogger("memnet.names")

NAMES_FILE = "names.json"  # this node's own name records, re-published with the provider records


@dataclass(frozen=True)
class PublishArgs:
    name: str
    cube: bytes
    ttl: int | None = None


@dataclass(frozen=True)
class ResolveArgs:
    author: bytes
    name: str


class Names(Service):
    name = "names"

    def __init__(self, home: Path, key: Ed25519PrivateKey, discovery: Discovery, config: Config):
        super().__init__()
        self.path, self.key, self.discovery = Path(home) / NAMES_FILE, key, discovery
        self.seen = names.SeenSequences()
        self.configure(config)

    def configure(self, config: Config) -> None:
        self.interval = config.daemon.reprovide_interval

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self.republish()
            await trio.sleep(self.interval)

    def commands(self) -> list[Command]:
        return [Command("name_publish", self._cmd_publish, PublishArgs, "sign and put a name record"),
                Command("name_resolve", self._cmd_resolve, ResolveArgs, "the cube a name points at")]

    def _own(self) -> dict[str, str]:
        try:
            own = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return own if isinstance(own, dict) else {}

    async def republish(self) -> None:
        for name, record_hex in self._own().items():
            try:
                record = bytes.fromhex(record_hex)
                name_record.decode(record)
            except (PolicyError, ValueError, TypeError):
                continue  # expired (the user publishes again when they want it back) or damaged
            try:
                await self.discovery.put_name(record)
            except NetworkError as exc:
                log.warning("re-publishing name %s failed: %s", name, exc)

    async def _cmd_publish(self, args: PublishArgs, progress: Progress) -> dict:
        from memnet.cube import cid

        cube_id = cid.check_binary(args.cube)
        ttl = args.ttl or name_record.DEFAULT_TTL
        if not 0 < ttl <= name_record.MAX_TTL:
            raise UsageError(f"--ttl must be between 1 and {name_record.MAX_TTL} seconds")
        seq = 0
        own = self._own()
        if args.name in own:
            seq = _seq_of(bytes.fromhex(own[args.name])) + 1
        current = await self.discovery.resolve_name(keys.public_bytes(self.key), args.name)
        if current is not None:
            seq = max(seq, current.seq + 1)
        expires = int(time.time()) + ttl
        record = name_record.sign(self.key, args.name, cube_id, seq, expires)
        await self.discovery.put_name(record)
        own[args.name] = record.hex()
        write_atomic(self.path, json.dumps(own, indent=1).encode(), mode=0o600)
        return {"name": args.name, "cube": cube_id, "seq": seq, "expires": expires}

    async def _cmd_resolve(self, args: ResolveArgs, progress: Progress) -> dict:
        record = await self.discovery.resolve_name(args.author, args.name)
        if record is None:
            raise NotFoundError(f"no valid record for name {args.name!r} of that author")
        self.seen.check_and_update(record)
        return {"cube": record.cube, "seq": record.seq, "expires": record.expires}


def _seq_of(record: bytes) -> int:
    """The sequence number of one of our own past records, expired or not."""
    return int(canonical.decode(record, name_record.MAX_RECORD)["seq"])
