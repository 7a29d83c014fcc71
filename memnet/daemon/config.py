"""Daemon settings: config.json's "daemon" object, then command-line overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from memnet.errors import HomeError
from memnet.net.fetch import FetchTuning
from memnet.net.host import parse_multiaddr, peer_info
from memnet.net.server import ServeLimits

PROVIDER_RECORD_EXPIRY = 48 * 3600  # py-libp2p's provider record lifetime


@dataclass(frozen=True)
class DaemonConfig:
    listen: tuple[str, ...] = ("/ip4/0.0.0.0/tcp/4737",)
    bootstrap: tuple[str, ...] = ()
    mdns: bool = False
    reprovide_interval: int = 22 * 3600   # below the 48 h record expiry, as IPFS does
    provide_fetched: bool = True
    serve: ServeLimits = field(default_factory=ServeLimits)
    fetch: FetchTuning = field(default_factory=FetchTuning)

    @classmethod
    def from_config(cls, config: dict[str, Any], **overrides: Any) -> DaemonConfig:
        raw = dict(config.get("daemon") or {})
        raw.update({k: v for k, v in overrides.items() if v is not None})
        try:
            serve = _sub(ServeLimits, raw.pop("limits", {}), "daemon.limits")
            fetch = _sub(FetchTuning, raw.pop("fetch", {}), "daemon.fetch")
            known = {f.name for f in dataclasses.fields(cls)} - {"serve", "fetch"}
            unknown = set(raw) - known
            if unknown:
                raise HomeError(f"config.json: unknown daemon setting(s) {sorted(unknown)}")
            for key in ("listen", "bootstrap"):
                if key in raw:
                    if not isinstance(raw[key], (list, tuple)) or not all(isinstance(a, str) for a in raw[key]):
                        raise HomeError(f"config.json: daemon.{key} must be a list of multiaddrs")
                    raw[key] = tuple(raw[key])
            if not isinstance(raw.get("reprovide_interval", 1), int) or raw.get("reprovide_interval", 1) <= 0:
                raise HomeError("config.json: daemon.reprovide_interval must be a positive integer (seconds)")
            if raw.get("reprovide_interval", 0) >= PROVIDER_RECORD_EXPIRY:
                raise HomeError("config.json: daemon.reprovide_interval must be below the 48 h record expiry")
            config = cls(serve=serve, fetch=fetch, **raw)
        except TypeError as exc:
            raise HomeError(f"config.json: bad daemon setting: {exc}") from None
        for addr in config.listen:
            parse_multiaddr(addr)
        for addr in config.bootstrap:
            peer_info(addr)
        return config


def _sub(kind: type, values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise HomeError(f"config.json: {where} must be an object")
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = set(values) - names
    if unknown:
        raise HomeError(f"config.json: unknown {where} setting(s) {sorted(unknown)}")
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise HomeError(f"config.json: {where}.{key} must be a non-negative number")
    return kind(**values)
