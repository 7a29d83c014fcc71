"""The upkeep service: every upkeep_interval seconds one lifecycle pass (scheduler/lifecycle.py)
— state transitions, eviction under the store budget — and no more providing of cubes that were
evicted or expired (fetchers refuse expired cubes, so announcing them only wastes peers' time);
then the audit log is cut to its newest audit_keep entries; then consolidation: adapters unused
or with changed notes are demoted, and the memory set the policy picks next is distilled in the
background (scheduler/consolidate.py).

A distillation runs as its own process (`memnet consolidate SET --progress-lines`): it loads the
model and trains for a minute or more, which must not stall the daemon serving peers. It runs at
the lowest CPU priority (nice 19), under RLIMIT_CPU = what is left of the day's CPU budget (the
kernel stops it there), reports progress as JSON lines (`memnet status` shows them), and is
killed when the daemon stops or consolidation is turned off."""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

from memnet.config import Config, Lifecycle
from memnet.cube import cid
from memnet.daemon.announcer import Announcer
from memnet.daemon.base import Service
from memnet.governance import audit
from memnet.render import human_size
from memnet.scheduler import consolidate, lifecycle
from memnet.scheduler import consolidation as consolidation_policy
from memnet.store import Store

log = logging.getLogger("memnet.upkeep")


class Upkeep(Service):
    name = "upkeep"

    def __init__(self, store: Store, announcer: Announcer, config: Config, home: Path | None = None,
                 has_model: Any = None):
        """home: the node's home, for the distillation process (None: no background
        consolidation); has_model(): whether a model is pinned to distil with."""
        super().__init__()
        self.store, self.announcer, self.home = store, announcer, home
        self.has_model = has_model or (lambda: False)
        self.budget_met = True
        self.distilling: dict[str, Any] | None = None   # the running distillation, for status
        self.last_distilled: dict[str, Any] | None = None
        self._distil_scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self.configure(config)

    def configure(self, config: Config) -> None:
        self.config: Lifecycle = config.lifecycle
        self.consolidation = config.consolidation
        if not self.consolidation.enabled and self._distil_scope is not None:
            self._distil_scope.cancel()

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Run passes until cancelled; a failed pass is logged and the next one comes as usual."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                try:
                    await self.one_pass()
                    await self.consolidation_pass()
                except Exception as exc:  # upkeep must never take the daemon down
                    log.warning("upkeep pass failed: %r", exc)
                await trio.sleep(self.config.upkeep_interval)

    # -- consolidation ---------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {"enabled": self.consolidation.enabled, "running": self.distilling, "last": self.last_distilled,
                "cpu_today": round(consolidate.spent_today(self.store), 1),
                "cpu_budget": self.consolidation.cpu_budget_per_day}

    async def consolidation_pass(self) -> bytes | None:
        """Demote adapters; start distilling the next candidate if none is running. Returns the
        set key started, if any."""
        settings = self.consolidation
        await trio.to_thread.run_sync(consolidate.upkeep, self.store, settings)
        if (self.distilling is not None or self._nursery is None or self.home is None or not settings.enabled
                or not self.has_model()):
            return None
        if not await trio.to_thread.run_sync(consolidate.any_used, self.store, settings.after_uses):
            return None   # nothing is hot enough: spare the pass a read of the whole audit log
        now = int(time.time())
        facts = await trio.to_thread.run_sync(consolidate.set_facts, self.store)
        records = await trio.to_thread.run_sync(consolidate.records, self.store)
        spent = consolidate.spent_today(self.store, now)
        key = consolidation_policy.next_candidate(facts, records, spent, settings, now)
        if key is None:
            return None
        self.distilling = {"memory_set": key.hex(), "stage": "starting", "done": 0, "total": 0, "since": now}
        self._distil_scope = trio.CancelScope()   # now: configure() may cancel it before the task runs
        self._nursery.start_soon(self._distil, key, consolidation_policy.remaining_cpu(spent, settings))
        return key

    async def _distil(self, key: bytes, cpu_seconds: float) -> None:
        command = [sys.executable, "-m", "cli.main", "--home", str(self.home), "consolidate", key.hex(), "--progress-lines"]
        limit = max(1, math.ceil(cpu_seconds))

        def lower_priority() -> None:   # in the child, before exec
            os.nice(19)
            resource.setrlimit(resource.RLIMIT_CPU, (limit, limit + 5))

        log.info("upkeep: distilling memory set %s (CPU budget left %d s)", key.hex()[:12], limit)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        outcome, code = None, None
        errors = open(self.home / "consolidate.log", "ab")
        try:
            with self._distil_scope:
                process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE, stderr=errors,
                                                           stdin=subprocess.DEVNULL, preexec_fn=lower_priority)
                try:
                    outcome = await self._follow(process)
                    code = await process.wait()
                finally:
                    if process.returncode is None:
                        process.kill()
                        with trio.CancelScope(shield=True):
                            await process.wait()
        finally:
            errors.close()
            self._distil_scope = None
            self.distilling = None
        if outcome is not None and code == 0:
            self.last_distilled = {**outcome, "at": int(time.time())}
            log.info("upkeep: memory set %s %s: %s", key.hex()[:12],
                     "consolidated into " + outcome["adapter"] if outcome.get("published") else "not consolidated",
                     outcome.get("reason"))
            return
        # stopped (budget, cancelled) or failed: its CPU still counts, and the set waits retry_after
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        why = "over the day's CPU budget" if code in (-9, -24) else \
            ("cancelled" if code is None else f"the distillation process exited with {code} (see consolidate.log)")
        await trio.to_thread.run_sync(consolidate.record_stopped, self.store, key, why, used)
        self.last_distilled = {"memory_set": key.hex(), "published": False, "reason": why, "at": int(time.time())}
        log.info("upkeep: distilling memory set %s stopped: %s", key.hex()[:12], why)

    async def _follow(self, process) -> dict[str, Any] | None:
        """Read the child's JSON lines: progress updates, then its outcome."""
        buffer, outcome = b"", None
        async for data in process.stdout:
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                try:
                    value = json.loads(line)
                except ValueError:
                    continue
                if isinstance(value, dict) and "stage" in value and self.distilling is not None:
                    self.distilling.update(stage=value["stage"], done=value.get("done"), total=value.get("total"))
                elif isinstance(value, dict) and "memory_set" in value:
                    outcome = value
            if len(buffer) > 1 << 20:   # not ours: a line that long is no progress report
                buffer = b""
        if buffer.strip():
            try:
                value = json.loads(buffer)
                outcome = value if isinstance(value, dict) and "memory_set" in value else outcome
            except ValueError:
                pass
        return outcome

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
