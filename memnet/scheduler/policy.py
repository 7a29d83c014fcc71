"""Lifecycle, eviction and promotion decisions: plain data in, decisions out.

Pure on purpose (no I/O, no clock, no store): the daemon's upkeep task (via lifecycle.py) and the
simulator (simulations/lifecycle_sim.py) drive the same functions, and the same inputs with the
same `now` always give the same decisions.

States of a stored cube:
  active      the default
  archived    unused (last use, else arrival) for longer than Lifecycle.archive_after; used again -> active
  expired     now >= the manifest's expires; final (expiry is a fact about the cube)
  superseded  the store holds a higher version of the same (author, name); final unless it expires
Pinned cubes change state like any other but are never evicted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from memnet.config import Lifecycle
from memnet.render import human_size

ACTIVE, ARCHIVED, EXPIRED, SUPERSEDED = "active", "archived", "expired", "superseded"
STATES = (ACTIVE, ARCHIVED, EXPIRED, SUPERSEDED)
FINAL = (EXPIRED, SUPERSEDED)
STRATEGIES = ("lru", "lfu")
_TIER = {EXPIRED: 0, SUPERSEDED: 0, ARCHIVED: 1, ACTIVE: 2}  # eviction goes tier by tier


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

def transitions(cubes: Iterable[CubeView], now: int, config: Lifecycle) -> list[Transition]:
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


def _target_state(c: CubeView, now: int, config: Lifecycle, newest: dict[tuple[bytes, str], int]) -> str:
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

# -- formatting ---------------------------------------------------------------------------------

def ago(seconds: int) -> str:
    """A rough human duration: 40 s, 12 min, 5 h, 3 d."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"
