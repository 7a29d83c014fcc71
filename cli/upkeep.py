"""`memnet upkeep`: one lifecycle pass (state transitions, eviction under the budget, the audit log
cut to audit_keep entries) run here, without a daemon — the pass a running daemon makes every
upkeep_interval seconds."""

from __future__ import annotations

import typer

from cli.common import _node, _print_json, app, daemon_client, out
from memnet import render
from memnet.cube import cid
from memnet.governance import audit
from memnet.scheduler import consolidate, lifecycle


@app.command()
def upkeep(dry_run: bool = typer.Option(False, "--dry-run", help="Show what would change; change nothing."),
           as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Archive, expire and supersede cubes, evict unpinned ones over store_budget_bytes, and cut
    the audit log to its newest audit_keep entries."""
    node = _node()
    config = node.config.lifecycle
    p = lifecycle.plan(node.store, config)
    pruned, demoted = 0, []
    if dry_run and config.audit_keep is not None:
        pruned = max(0, len(node.store.records(audit.TABLE)) - config.audit_keep)
    if not dry_run:
        client = daemon_client(required=False)
        withdrawn = p.withdrawn()
        if client is not None and withdrawn:  # stop providing while the manifests still name every key
            client.call("unannounce", cubes=withdrawn)
        lifecycle.execute(node.store, p)
        demoted = consolidate.upkeep(node.store, node.config.consolidation)
        if config.audit_keep is not None:
            pruned = audit.prune(node.store, config.audit_keep)
    if as_json:
        _print_json({**p.as_json(), "audit_pruned": pruned,
                     "adapters": [{"memory_set": t.set_key.hex(), "state": t.new_state, "reason": t.reason} for t in demoted]})
        return
    for t in p.transitions:
        out.print(f"{t.new_state:<11} {cid.to_text(t.cube_id)}  {t.reason}")
    for e in p.plan.evictions:
        out.print(f"{'would evict' if dry_run else 'evicted':<11} {cid.to_text(e.cube_id)}  {e.reason}")
    for cube_id, why in p.skipped:
        out.print(f"{'kept':<11} {cid.to_text(cube_id)}  {why}")
    for t in demoted:
        out.print(f"{t.new_state:<11} adapter of memory set {t.set_key.hex()[:12]}  {t.reason}")
    if pruned:
        out.print(f"{'would prune' if dry_run else 'pruned':<11} {pruned} audit entries (audit_keep {config.audit_keep})")
    budget = config.store_budget_bytes
    line = f"store: {render.human_size(p.total_bytes)} in {len(p.views)} cube(s)"
    if budget is not None:
        line += f", budget {render.human_size(budget)} ({config.eviction}), {render.human_size(p.plan.kept_bytes)} kept"
        if not p.plan.budget_met:
            line += "; pinned cubes alone exceed the budget"
    out.print(line)
