"""Daemon settings: config.json's "daemon" object, then command-line overrides."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from memnet.errors import HomeError
from memnet.net.fetch import FetchTuning
from memnet.net.host import parse_multiaddr, peer_info
from memnet.net.server import ServeLimits
from memnet.scheduler.policy import Config as LifecycleConfig

MAX_PREFIX_NEIGHBOURS = 64
PROVIDER_RECORD_EXPIRY = 48 * 3600  # py-libp2p's provider record lifetime


@dataclass(frozen=True)
class DaemonConfig:
    listen: tuple[str, ...] = ("/ip4/0.0.0.0/tcp/4737",)
    bootstrap: tuple[str, ...] = ()
    mdns: bool = False
    reprovide_interval: int = 22 * 3600   # below the 48 h record expiry, as IPFS does
    provide_fetched: bool = True
    revocation_check_interval: int = 600  # s between DHT lookups for revocations of held cubes
    prefix_neighbours: int = 8   # connected peers asked for a prefix before the DHT (0: DHT only)
    serve: ServeLimits = field(default_factory=ServeLimits)
    fetch: FetchTuning = field(default_factory=FetchTuning)
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)  # node-level keys, see scheduler.policy

    @classmethod
    def from_config(cls, config: dict[str, Any], **overrides: Any) -> DaemonConfig:
        raw = config.get("daemon") or {}
        if not isinstance(raw, dict):
            raise HomeError("config.json: daemon must be an object")
        raw = {**raw, **{k: v for k, v in overrides.items() if v is not None}}
        limits = raw.pop("limits", {})
        if "upload_rate" in raw:  # the command line's --upload-rate, checked like the file's
            limits = {**limits, "upload_bytes_per_s": raw.pop("upload_rate")} if isinstance(limits, dict) else limits
        serve = _sub(ServeLimits, limits, "daemon.limits")
        fetch = _sub(FetchTuning, raw.pop("fetch", {}), "daemon.fetch")
        unknown = set(raw) - ({f.name for f in dataclasses.fields(cls)} - {"serve", "fetch", "lifecycle"})
        if unknown:
            raise HomeError(f"config.json: unknown daemon setting(s) {sorted(unknown)}")
        for key in ("listen", "bootstrap"):
            if key in raw:
                if not isinstance(raw[key], (list, tuple)) or not all(isinstance(a, str) for a in raw[key]):
                    raise HomeError(f"config.json: daemon.{key} must be a list of multiaddrs")
                raw[key] = tuple(raw[key])
        for key in ("mdns", "provide_fetched"):
            if key in raw and not isinstance(raw[key], bool):
                raise HomeError(f"config.json: daemon.{key} must be true or false")
        interval = raw.get("reprovide_interval", cls.reprovide_interval)
        if not _is_int(interval) or not 0 < interval < PROVIDER_RECORD_EXPIRY:
            raise HomeError("config.json: daemon.reprovide_interval must be a whole number of seconds "
                            "between 1 and the 48 h record expiry")
        check = raw.get("revocation_check_interval", cls.revocation_check_interval)
        if not _is_int(check) or check < 1:
            raise HomeError("config.json: daemon.revocation_check_interval must be a whole number of seconds, at least 1")
        neighbours = raw.get("prefix_neighbours", cls.prefix_neighbours)
        if not _is_int(neighbours) or not 0 <= neighbours <= MAX_PREFIX_NEIGHBOURS:
            raise HomeError(f"config.json: daemon.prefix_neighbours must be a whole number from 0 to {MAX_PREFIX_NEIGHBOURS}")
        config = cls(serve=serve, fetch=fetch, lifecycle=LifecycleConfig.from_node_config(config), **raw)
        for addr in config.listen:
            parse_multiaddr(addr)
        for addr in config.bootstrap:
            peer_info(addr)
        return config


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _sub(kind: type, values: Any, where: str) -> Any:
    """Numbers only; counts (int defaults) must be whole and at least 1, the rest finite and >= 0."""
    if not isinstance(values, dict):
        raise HomeError(f"config.json: {where} must be an object")
    defaults = {f.name: f.default for f in dataclasses.fields(kind)}
    unknown = set(values) - set(defaults)
    if unknown:
        raise HomeError(f"config.json: unknown {where} setting(s) {sorted(unknown)}")
    for key, value in values.items():
        if _is_int(defaults[key]):
            if not _is_int(value) or value < 1:
                raise HomeError(f"config.json: {where}.{key} must be a whole number, at least 1")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
            raise HomeError(f"config.json: {where}.{key} must be a finite number, at least 0")
        elif key.endswith("timeout") and value == 0:
            raise HomeError(f"config.json: {where}.{key} must be more than 0 seconds")
    return kind(**values)
