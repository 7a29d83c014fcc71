"""The store side of the lifecycle policy: read stored cubes into policy.CubeViews, apply the
transitions and evictions the policy decides, and keep each cube's state.

Records tables (store.records), all values canonical msgpack:
  lifecycle  cube id -> {"state", "since", "reason"}   (no record: active)
  set_usage  memory set key -> {"count", "last"}        (uses counted for promotion)
  promoted   memory set key -> {"cube", "at"}           (the KV cube a hot set became)
One pass = plan() (reads only) then execute() (writes); apply() does both. The daemon withdraws
announcements between the two, while the cubes' manifests are still there to name their keys.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from memnet.cube import canonical, cid
from memnet.errors import FormatError, NotFoundError, PolicyError, StoreError
from memnet.scheduler import policy
from memnet.config import Lifecycle
from memnet.scheduler.policy import CubeView, EvictionPlan, Transition, UsageCount
from memnet.store import Store

TABLE = "lifecycle"
USAGE_TABLE = "set_usage"
PROMOTED_TABLE = "promoted"
MAX_RECORD = 4096
_RECORD_KEYS = {"state", "since", "reason"}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class Pass:
    """One upkeep pass: what was decided, and (after execute) what was done."""

    now: int
    config: Lifecycle
    views: list[CubeView]
    transitions: list[Transition]
    plan: EvictionPlan
    stale_records: list[bytes] = field(default_factory=list)  # of gone cubes, or unreadable
    evicted: list[bytes] = field(default_factory=list)
    skipped: list[tuple[bytes, str]] = field(default_factory=list)  # could not be evicted after all
    executed: bool = False

    @property
    def total_bytes(self) -> int:
        return sum(v.size for v in self.views)

    def withdrawn(self) -> list[bytes]:
        """Cubes a node should stop providing after this pass: evicted ones and newly expired ones."""
        expired = [t.cube_id for t in self.transitions if t.new_state == policy.EXPIRED]
        return list(dict.fromkeys([e.cube_id for e in self.plan.evictions] + expired))

    def as_json(self) -> dict[str, Any]:
        return {
            "now": self.now, "dry_run": not self.executed,
            "budget": self.config.store_budget_bytes, "strategy": self.config.eviction,
            "total_bytes": self.total_bytes, "kept_bytes": self.plan.kept_bytes,
            "budget_met": self.plan.budget_met,
            "transitions": [{"cube": cid.to_text(t.cube_id), "state": t.new_state, "reason": t.reason}
                            for t in self.transitions],
            "evictions": [{"cube": cid.to_text(e.cube_id), "reason": e.reason} for e in self.plan.evictions],
            "skipped": [{"cube": cid.to_text(c), "reason": why} for c, why in self.skipped],
        }


# -- lifecycle records --------------------------------------------------------------------------

def encode_record(state: str, since: int, reason: str) -> bytes:
    return canonical.encode({"state": state, "since": since, "reason": reason})


def decode_record(raw: bytes) -> dict[str, Any]:
    """A lifecycle record, checked; StoreError if it is not one."""
    try:
        value = canonical.decode(raw, MAX_RECORD)
    except FormatError as exc:
        raise StoreError(f"unreadable lifecycle record: {exc}") from None
    if (not isinstance(value, dict) or set(value) != _RECORD_KEYS or value["state"] not in policy.STATES
            or not _is_int(value["since"]) or value["since"] < 0 or not isinstance(value["reason"], str)):
        raise StoreError("malformed lifecycle record")
    return value


def states(store: Store) -> tuple[dict[bytes, dict[str, Any]], list[bytes]]:
    """(cube id -> lifecycle record, keys of unreadable records). Cubes without one are active."""
    found, bad = {}, []
    for key, raw in store.records(TABLE):
        try:
            found[key] = decode_record(raw)
        except StoreError:
            bad.append(key)
    return found, bad


def state_names(store: Store) -> dict[bytes, str]:
    """cube id -> state, for the cubes not active (what `memnet ls` shows)."""
    return {key: record["state"] for key, record in states(store)[0].items()}


def views(store: Store) -> tuple[list[CubeView], list[bytes]]:
    """Every stored cube as the policy sees it, and the stale lifecycle record keys."""
    records, bad = states(store)
    out = []
    for e in store.entries():
        m, stats, record = e.manifest, e.stats, records.pop(e.cube_id, None)
        out.append(CubeView(
            cube_id=e.cube_id, kind=m.kind, size=m.size, created=stats.get("added") or m.created,
            last_used=stats.get("last", 0), hits=stats.get("hits", 0), pinned=e.pin is not None,
            expires=m.expires, author=m.author, name=m.name, version=m.version,
            state=record["state"] if record else policy.ACTIVE, since=record["since"] if record else 0,
        ))
    return out, bad + list(records)  # records left over belong to cubes no longer stored


# -- one pass -----------------------------------------------------------------------------------

def plan(store: Store, config: Lifecycle, now: int | None = None) -> Pass:
    """Decide a pass without writing anything (what --dry-run shows)."""
    now = int(time.time()) if now is None else now
    cubes, stale = views(store)
    changes = policy.transitions(cubes, now, config)
    after = policy.with_transitions(cubes, changes, now)
    eviction = policy.evict(after, config.store_budget_bytes, config.eviction, now)
    return Pass(now, config, cubes, changes, eviction, stale)


def execute(store: Store, p: Pass) -> Pass:
    """Record the transitions (one transaction), delete the evicted cubes (one each: a cube
    pinned meanwhile is skipped), and drop records of cubes that are gone."""
    if p.transitions:
        store.put_records(TABLE, [(t.cube_id, encode_record(t.new_state, p.now, t.reason))
                                  for t in p.transitions])
    for e in p.plan.evictions:
        try:
            store.delete(e.cube_id)
            p.evicted.append(e.cube_id)
        except (PolicyError, NotFoundError) as exc:
            p.skipped.append((e.cube_id, str(exc)))
    gone = p.stale_records + p.evicted
    if gone:
        store.delete_records(TABLE, gone)
    p.executed = True
    return p


def apply(store: Store, config: Lifecycle, now: int | None = None, dry_run: bool = False) -> Pass:
    """One upkeep pass: transitions, then eviction under the budget."""
    p = plan(store, config, now)
    return p if dry_run else execute(store, p)


# -- memory-set usage, for promotion ------------------------------------------------------------

def record_set_use(store: Store, set_key: bytes, now: int | None = None) -> UsageCount:
    """Count one use of a memory set. Read-then-write: two processes counting the same set at
    the same instant may lose one count, which only delays a promotion."""
    now = int(time.time()) if now is None else now
    raw = store.get_record(USAGE_TABLE, set_key)
    old = decode_usage(raw) if raw is not None else UsageCount(0, 0)
    new = UsageCount(old.count + 1, now)
    store.put_records(USAGE_TABLE, [(set_key, canonical.encode({"count": new.count, "last": new.last}))])
    return new


def set_uses(store: Store, set_key: bytes) -> int:
    """How many uses of a memory set were counted (without counting one)."""
    raw = store.get_record(USAGE_TABLE, set_key)
    return decode_usage(raw).count if raw is not None else 0


def decode_usage(raw: bytes) -> UsageCount:
    try:
        value = canonical.decode(raw, MAX_RECORD)
        if isinstance(value, dict) and set(value) == {"count", "last"} and all(
                _is_int(v) and v >= 0 for v in value.values()):
            return UsageCount(value["count"], value["last"])
    except FormatError:
        pass
    return UsageCount(0, 0)  # unreadable: count again from zero


def mark_promoted(store: Store, set_key: bytes, cube_id: bytes, now: int | None = None) -> None:
    now = int(time.time()) if now is None else now
    store.put_records(PROMOTED_TABLE, [(set_key, canonical.encode({"cube": cube_id, "at": now}))])
