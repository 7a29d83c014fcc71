"""The daemon's upkeep task: every upkeep_interval seconds one lifecycle pass (scheduler/lifecycle.py)
— state transitions, eviction under the store budget — and no more providing of cubes that were
evicted or expired (fetchers refuse expired cubes, so announcing them only wastes peers' time);
then the audit log is cut to its newest audit_keep entries."""

from __future__ import annotations

import logging
from typing import Any

import trio

from memnet.cube import cid
from memnet.governance import audit
from memnet.render import human_size
from memnet.scheduler import lifecycle
from memnet.scheduler.policy import Config

log = logging.getLogger("memnet.upkeep")


async def run(daemon: Any, config: Config | None = None) -> None:
    """Run passes until cancelled; a failed pass is logged and the next one comes as usual."""
    config = config or daemon.config.lifecycle
    budget_met = True
    while True:
        try:
            budget_met = await one_pass(daemon, config, budget_met)
        except Exception as exc:  # upkeep must never take the daemon down
            log.warning("upkeep pass failed: %r", exc)
        await trio.sleep(config.upkeep_interval)


async def one_pass(daemon: Any, config: Config, budget_was_met: bool = True) -> bool:
    """Plan, withdraw announcements (while the manifests still name every key), execute, log.
    Returns whether the budget is met, so a budget that cannot be met is logged once, not every pass."""
    store = daemon.node.store
    p = await trio.to_thread.run_sync(lifecycle.plan, store, config)
    provided = [c for c in p.withdrawn() if c in daemon.providing]
    if provided:
        await daemon.cmd_unannounce({"cubes": provided}, None)
    await trio.to_thread.run_sync(lifecycle.execute, store, p)
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
        pruned = await trio.to_thread.run_sync(audit.prune, daemon.node, config.audit_keep)
        if pruned:
            log.info("upkeep: pruned %d audit entries (keeping the newest %d)", pruned, config.audit_keep)
    if not p.plan.budget_met and budget_was_met:
        log.warning("upkeep: pinned cubes alone hold %s, over the store budget of %s",
                    human_size(p.plan.kept_bytes), human_size(config.store_budget_bytes or 0))
    return p.plan.budget_met
