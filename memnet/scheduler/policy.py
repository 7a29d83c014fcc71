"""Lifecycle, eviction and promotion decisions: plain data in, decisions out.

Pure on purpose (no I/O, no clock, no store): the daemon's upkeep task (via lifecycle.py) and the
simulator (simulations/lifecycle_sim.py) drive the same functions, and the same inputs with the
same `now` always give the same decisions.

States of a stored cube:
  active      the default
  archived    unused (last use, else arrival) for longer than Config.archive_after; used again -> active
  expired     now >= the manifest's expires; final (expiry is a fact about the cube)
  superseded  the store holds a higher version of the same (author, name); final unless it expires
Pinned cubes change state like any other but are never evicted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from memnet.errors import HomeError
from memnet.render import human_size

ACTIVE, ARCHIVED, EXPIRED, SUPERSEDED = "active", "archived", "expired", "superseded"
STATES = (ACTIVE, ARCHIVED, EXPIRED, SUPERSEDED)
FINAL = (EXPIRED, SUPERSEDED)
STRATEGIES = ("lru", "lfu")
_TIER = {EXPIRED: 0, SUPERSEDED: 0, ARCHIVED: 1, ACTIVE: 2}  # eviction goes tier by tier


@dataclass(frozen=True)
class Config:
    """Node settings of the memory manager (config.json keys of the same names)."""

    store_budget_bytes: int | None = None   # payload bytes the store may hold; None = unlimited
    eviction: str = "lru"                   # "lru" or "lfu"
    archive_after: int | None = 30 * 86400  # seconds unused before a cube is archived; None = never
    promote_after: int = 3                  # uses of a memory set before it becomes a KV cube
    upkeep_interval: float = 60.0           # seconds between the daemon's upkeep passes
    audit_keep: int | None = 100_000        # newest audit-log entries an upkeep pass keeps; None = all

    @classmethod
    def from_node_config(cls, config: Mapping[str, Any]) -> Config:
        """Read and check the keys from a node's config.json; HomeError with one line if bad."""
        values: dict[str, Any] = {}
        if config.get("store_budget_bytes") is not None:
            values["store_budget_bytes"] = parse_size(config["store_budget_bytes"], "store_budget_bytes")
        if "eviction" in config:
            if config["eviction"] not in STRATEGIES:
                shown = str(config["eviction"])[:_MAX_TEXT]
                raise HomeError(f"config.json: eviction must be \"lru\" or \"lfu\", not {shown!r}")
            values["eviction"] = config["eviction"]
        if "archive_after" in config:
            raw = config["archive_after"]
            values["archive_after"] = None if raw is None else parse_duration(raw, "archive_after")
        if "promote_after" in config:
            raw = config["promote_after"]
            if not _is_int(raw) or raw < 1:
                raise HomeError("config.json: promote_after must be a whole number, at least 1")
            values["promote_after"] = raw
        if "upkeep_interval" in config:
            raw = config["upkeep_interval"]
            if isinstance(raw, str):
                raw = parse_duration(raw, "upkeep_interval")
            if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not 0 < raw < math.inf:
                raise HomeError("config.json: upkeep_interval must be a number of seconds above 0")
            values["upkeep_interval"] = float(raw)
        if "audit_keep" in config:
            raw = config["audit_keep"]
            if raw is not None and (not _is_int(raw) or raw < 1):
                raise HomeError("config.json: audit_keep must be a whole number of entries, at least 1, or null")
            values["audit_keep"] = raw
        return cls(**values)


@dataclass(frozen=True)
class CubeView:
    """What the policy knows of one stored cube. Times are int seconds (Unix)."""

    cube_id: bytes
    kind: str
    size: int                  # payload bytes
    created: int               # when this node got the cube (its first "use")
    last_used: int = 0         # 0: never used here
    hits: int = 0
    pinned: bool = False
    expires: int | None = None
    author: bytes = b""
    name: str | None = None
    version: int | None = None
    state: str = ACTIVE
    since: int = 0             # when the cube entered its state

    @property
    def last_seen(self) -> int:
        """Last use, else arrival: the recency that LRU and archiving go by."""
        return self.last_used or self.created


@dataclass(frozen=True)
class Transition:
    cube_id: bytes
    new_state: str
    reason: str


@dataclass(frozen=True)
class Eviction:
    cube_id: bytes
    reason: str


@dataclass(frozen=True)
class EvictionPlan:
    """Cubes to delete, in order; kept_bytes stay. budget_met is False when the pinned cubes
    alone exceed the budget (then every unpinned cube is in evictions)."""

    evictions: list[Eviction] = field(default_factory=list)
    kept_bytes: int = 0
    budget_met: bool = True


@dataclass(frozen=True)
class UsageCount:
    count: int
    last: int


# -- lifecycle ----------------------------------------------------------------------------------

def transitions(cubes: Iterable[CubeView], now: int, config: Config) -> list[Transition]:
    """State changes due at `now`, one per cube whose state is not what the rules give, in cube
    id order."""
    cubes = list(cubes)
    newest: dict[tuple[bytes, str], int] = {}
    for c in cubes:
        if c.name is not None and c.version is not None:
            key = (c.author, c.name)
            newest[key] = max(newest.get(key, c.version), c.version)
    out = []
    for c in sorted(cubes, key=lambda c: c.cube_id):
        state = _target_state(c, now, config, newest)
        if state != c.state:
            out.append(Transition(c.cube_id, state, _transition_reason(c, state, now, newest)))
    return out


def _target_state(c: CubeView, now: int, config: Config, newest: dict[tuple[bytes, str], int]) -> str:
    if c.state == EXPIRED or (c.expires is not None and now >= c.expires):
        return EXPIRED
    if c.state == SUPERSEDED or (c.name is not None and c.version is not None
                                 and newest[(c.author, c.name)] > c.version):
        return SUPERSEDED
    if config.archive_after is not None and now - c.last_seen > config.archive_after:
        return ARCHIVED
    return ACTIVE


def _transition_reason(c: CubeView, state: str, now: int, newest: dict[tuple[bytes, str], int]) -> str:
    idle = ago(now - c.last_seen)
    if state == EXPIRED:
        return f"expired {ago(now - (c.expires or now))} ago"
    if state == SUPERSEDED:
        return f"superseded by {c.name} v{newest[(c.author, c.name)]}"
    if state == ARCHIVED:
        return f"unused for {idle}"
    return f"used {idle} ago" if c.last_used else f"arrived {idle} ago"


def with_transitions(cubes: Iterable[CubeView], changes: Iterable[Transition], now: int) -> list[CubeView]:
    """The cubes with the given transitions applied (what evict() should see)."""
    new = {t.cube_id: t.new_state for t in changes}
    return [replace(c, state=new[c.cube_id], since=now) if c.cube_id in new else c for c in cubes]


# -- eviction -----------------------------------------------------------------------------------

def eviction_order(cubes: Iterable[CubeView], strategy: str, now: int) -> list[CubeView]:
    """Unpinned cubes, first to go first: expired and superseded, then archived, then active;
    within a tier the least recently used, ties by fewest hits (lru), or the least often used,
    ties by recency (lfu); then by cube id."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown eviction strategy {strategy!r}")

    def rank(c: CubeView) -> tuple:
        tier = 0 if c.expires is not None and now >= c.expires else _TIER.get(c.state, _TIER[ACTIVE])
        use = (c.last_seen, c.hits) if strategy == "lru" else (c.hits, c.last_seen)
        return (tier, *use, c.cube_id)

    return sorted((c for c in cubes if not c.pinned), key=rank)


def evict(cubes: Iterable[CubeView], budget_bytes: int | None, strategy: str, now: int) -> EvictionPlan:
    """The fewest cubes, taken in eviction_order, whose removal brings the total size within the
    budget. Never a pinned cube; None = no budget."""
    cubes = list(cubes)
    total = sum(c.size for c in cubes)
    if budget_bytes is None or total <= budget_bytes:
        return EvictionPlan([], total, True)
    chosen = []
    for c in eviction_order(cubes, strategy, now):
        if total <= budget_bytes:
            break
        total -= c.size
        chosen.append(Eviction(c.cube_id, _eviction_reason(c, strategy, now)))
    return EvictionPlan(chosen, total, total <= budget_bytes)


def _eviction_reason(c: CubeView, strategy: str, now: int) -> str:
    size = human_size(c.size)
    if c.expires is not None and now >= c.expires:
        return f"expired {ago(now - c.expires)} ago, {size}"
    if c.state == SUPERSEDED:
        return f"superseded, {size}"
    used = f"last used {ago(now - c.last_used)} ago" if c.last_used else f"never used, arrived {ago(now - c.created)} ago"
    if strategy == "lfu":
        used = f"{c.hits} hit{'' if c.hits == 1 else 's'}, {used}"
    label = "archived" if c.state == ARCHIVED else strategy
    return f"{label}: {used}, {size}"


# -- promotion ----------------------------------------------------------------------------------

def promotions(usage: Mapping[bytes, UsageCount], threshold: int, already_promoted: Iterable[bytes]) -> list[bytes]:
    """Memory sets used at least `threshold` times and not promoted yet, most used first (ties:
    most recent, then key)."""
    done = set(already_promoted)
    hot = [key for key, use in usage.items() if use.count >= threshold and key not in done]
    return sorted(hot, key=lambda key: (-usage[key].count, -usage[key].last, key))


# -- small parsers and formatters ---------------------------------------------------------------

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3,
          "gb": 1000**3, "t": 1000**4, "tb": 1000**4, "kib": 1024, "mib": 1024**2,
          "gib": 1024**3, "tib": 1024**4}
_SECONDS = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AMOUNT = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")
_MAX_TEXT = 32


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _amount(value: Any, units: dict[str, int], key: str, what: str) -> int:
    if _is_int(value):
        number, unit = value, ""
    elif isinstance(value, str) and len(value) <= _MAX_TEXT and (match := _AMOUNT.fullmatch(value)):
        number, unit = float(match[1]), match[2].lower()
    else:
        number, unit = None, None
    if number is None or unit not in units or number < 0:
        raise HomeError(f"config.json: {key} must be {what}, not {str(value)[:_MAX_TEXT]!r}")
    return int(number * units[unit])


def parse_size(value: Any, key: str = "size") -> int:
    """Bytes from an int or text like "512 MiB" or "2GB"."""
    return _amount(value, _UNITS, key, 'a byte count such as 1073741824 or "1 GiB"')


def parse_duration(value: Any, key: str = "duration") -> int:
    """Seconds (above 0) from an int or text like "30d", "12h", "15 min"."""
    seconds = _amount(value, _SECONDS, key, 'a number of seconds such as 86400 or "30d"')
    if seconds <= 0:
        raise HomeError(f"config.json: {key} must be more than 0 seconds")
    return seconds


def ago(seconds: int) -> str:
    """A rough human duration: 40 s, 12 min, 5 h, 3 d."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"
