"""A simulated node's store: which cubes it holds, under which prefix keys, within its budget.
Eviction is memnet's own policy (scheduler/policy.py), called exactly as the daemon's upkeep does.
"""

from __future__ import annotations

from dataclasses import replace

from memnet.scheduler import policy
from memnet.scheduler.policy import CubeView
from simulations.swarm.workload import Cube


class NodeStore:
    __slots__ = ("views", "cubes", "by_key", "by_prefix", "size")

    def __init__(self):
        self.views: dict[bytes, CubeView] = {}
        self.cubes: dict[bytes, Cube] = {}
        self.by_key: dict[bytes, list[bytes]] = {}     # prefix key -> cube ids (what a neighbour is asked)
        self.by_prefix: dict[int, bytes] = {}          # prefix -> one cube caching it
        self.size = 0

    def has(self, cube_id: bytes) -> bool:
        return cube_id in self.cubes

    def put(self, cube: Cube, now: float, pinned: bool) -> None:
        if cube.cube_id in self.cubes:
            return
        self.cubes[cube.cube_id] = cube
        self.views[cube.cube_id] = CubeView(cube.cube_id, cube.kind, cube.size, int(now), pinned=pinned)
        for key in cube.prefix_keys:
            self.by_key.setdefault(key, []).append(cube.cube_id)
        if cube.prefix is not None:
            self.by_prefix.setdefault(cube.prefix, cube.cube_id)
        self.size += cube.size

    def use(self, cube_id: bytes, now: float) -> None:
        view = self.views.get(cube_id)
        if view is None:   # evicted the moment it arrived (it alone is over the budget)
            return
        self.views[cube_id] = replace(view, last_used=int(now), hits=view.hits + 1)

    def evict(self, budget: int, strategy: str, now: float) -> list[Cube]:
        """Bring the store within budget with memnet's policy; the cubes that went."""
        if self.size <= budget:
            return []
        plan = policy.evict(self.views.values(), budget, strategy, int(now))
        gone = [self._remove(e.cube_id) for e in plan.evictions]
        assert self.size == plan.kept_bytes, "the store and the plan disagree on what stays"
        return gone

    def _remove(self, cube_id: bytes) -> Cube:
        cube = self.cubes.pop(cube_id)
        del self.views[cube_id]
        for key in cube.prefix_keys:
            ids = self.by_key[key]
            ids.remove(cube_id)
            if not ids:
                del self.by_key[key]
        if cube.prefix is not None and self.by_prefix.get(cube.prefix) == cube_id:
            del self.by_prefix[cube.prefix]
            other = next((c for c in self.cubes.values() if c.prefix == cube.prefix), None)
            if other is not None:
                self.by_prefix[cube.prefix] = other.cube_id
        self.size -= cube.size
        return cube
