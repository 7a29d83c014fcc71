"""The upkeep service: every upkeep_interval seconds one lifecycle pass (scheduler/lifecycle.py)
— state transitions, eviction under the store budget — and no more providing of cubes that were
evicted or expired (fetchers refuse expired cubes, so announcing them only wastes peers' time);
then the audit log is cut to its newest audit_keep entries."""

from __future__ import annotations

import logging

import trio

from memnet.config import Config, Lifecycle
from memnet.cube import cid
from memnet.daemon.announcer import Announcer
from memnet.daemon.base import Service
from memnet.governance import audit
from memnet.render import human_size
from memnet.scheduler import lifecycle
from memnet.store import Store

log = logging.getLogger("memnet.upkeep")


class Upkeep(Service):
    name = "upkeep"

    def __init__(self, store: Store, announcer: Announcer, config: Config):
        super().__init__()
        self.store, self.announcer = store, announcer
        self.budget_met = True
        self.configure(config)

    def configure(self, config: Config) -> None:
        self.config: Lifecycle = config.lifecycle

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Run passes until cancelled; a failed pass is logged and the next one comes as usual."""
        task_status.started()
        while True:
            try:
                await self.one_pass()
            except Exception as exc:  # upkeep must never take the daemon down
                log.warning("upkeep pass failed: %r", exc)
            await trio.sleep(self.config.upkeep_interval)

    async def one_pass(self) -> bool:
        """Plan, withdraw announcements (while the manifests still name every key), execute, log.
        Returns whether the budget is met; a budget that cannot be met is logged once, not every
        pass."""
        config = self.config
        p = await trio.to_thread.run_sync(lifecycle.plan, self.store, config)
        provided = [c for c in p.withdrawn() if c in self.announcer.providing]
        if provided:
            self.announcer.unannounce(provided)
        await trio.to_thread.run_sync(lifecycle.execute, self.store, p)
        reasons = {e.cube_id: e.reason for e in p.plan.evictions}
        for t in p.transitions:
            log.info("upkeep: %s is now %s (%s)", cid.to_text(t.cube_id), t.new_state, t.reason)
        for cube_id in p.evicted:
            log.info("upkeep: evicted %s (%s)", cid.to_text(cube_id), reasons[cube_id])
        for cube_id, why in p.skipped:
            log.info("upkeep: kept %s: %s", cid.to_text(cube_id), why)
        for cube_id in provided:
            log.info("upkeep: stopped providing %s", cid.to_text(cube_id))
        if config.audit_keep is not None:
            pruned = await trio.to_thread.run_sync(audit.prune, self.store, config.audit_keep)
            if pruned:
                log.info("upkeep: pruned %d audit entries (keeping the newest %d)", pruned, config.audit_keep)
        if not p.plan.budget_met and self.budget_met:
            log.warning("upkeep: pinned cubes alone hold %s, over the store budget of %s",
                        human_size(p.plan.kept_bytes), human_size(config.store_budget_bytes or 0))
        self.budget_met = p.plan.budget_met
        return p.plan.budget_met
