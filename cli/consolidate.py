"""`memnet consolidate`: hot memory sets distilled into LoRA cubes, by hand (the daemon's upkeep
does the same in the background, within consolidation.cpu_budget_per_day)."""

from __future__ import annotations

import json
import sys
import time
from typing import Optional

import typer

from cli.common import _node, _print_json, app, out
from memnet.cube import cid
from memnet.errors import UsageError


@app.command()
def consolidate(
    memory_set: Optional[str] = typer.Argument(None, help="Memory set key (hex prefix) to distil; "
                                               "none: list the sets and what the policy says of each."),
    due: bool = typer.Option(False, "--due", help="Distil the set the policy picks next, if any."),
    model: Optional[str] = typer.Option(None, "--model", help="Pinned model name or fingerprint."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps (default: consolidation.steps)."),
    progress_lines: bool = typer.Option(False, "--progress-lines", help="Progress as JSON lines on stdout (the daemon)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Distil a memory set used often into a LoRA cube that answers without the notes in the
    prompt; published only if it passes the gate on held-back questions."""
    from dataclasses import replace

    from memnet import api
    from memnet.scheduler import consolidate as cons

    node = _node()
    settings = node.config.consolidation
    if steps is not None:
        if steps < 1:
            raise UsageError("--steps must be at least 1")
        settings = replace(settings, steps=steps)
    if memory_set is None and not due:
        _list(node, settings, as_json)
        return
    if memory_set is not None and due:
        raise UsageError("give a memory set or --due, not both")
    if due:
        from memnet.scheduler import consolidation as policy

        now = int(time.time())
        key = policy.next_candidate(cons.set_facts(node.store), cons.records(node.store),
                                    cons.spent_today(node.store, now), settings, now)
        if key is None:
            _done({"consolidated": None, "reason": "no memory set is due"}, as_json or progress_lines,
                  "no memory set is due (see `memnet consolidate`)")
            return
    else:
        key = cons.find_set(node.store, memory_set)
    material = cons.material(node.publisher, key)   # fails early, before the model loads
    if not material.questions:
        raise UsageError(f"memory set {key.hex()[:12]} has no questions on record to learn from")
    loaded, _ = api.load(node, model)
    outcome = cons.distil(node.publisher, node.gate(), node.perf, loaded, key, settings,
                          progress=_progress(progress_lines))
    _report(outcome, as_json, progress_lines)


def _progress(lines: bool):
    last = {"stage": None, "at": 0.0}

    def say(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if lines:
            print(json.dumps({"stage": stage, "done": done, "total": total}), flush=True)
        elif stage != last["stage"] or done == total or now - last["at"] > 2:
            sys.stderr.write(f"{stage}: {done}/{total}\n")
            last.update(stage=stage, at=now)
    return say


def _done(value: dict, as_json: bool, line: str) -> None:
    if as_json:
        _print_json(value)
    else:
        out.print(line)


def _report(o, as_json: bool, one_line: bool = False) -> None:
    value = {"memory_set": o.set_key.hex(), "published": o.cube is not None,
             "adapter": cid.to_text(o.cube.cube_id) if o.cube else None, "reason": o.gate.reason,
             "accuracy": round(o.gate.accuracy, 4), "judged": o.gate.judged, "correct": o.gate.correct,
             "pairs": o.pairs, "held_back": o.held_back, "cpu_seconds": round(o.cpu_seconds, 2),
             "seconds": round(o.seconds, 2), "loss": [round(x, 4) for x in o.loss], "examples": o.examples}
    if one_line:    # the daemon reads it
        print(json.dumps(value), flush=True)
        return
    if as_json:
        _print_json(value)
        return
    verdict = f"published {value['adapter']}" if o.cube else "discarded"
    out.print(f"memory set {o.set_key.hex()[:12]}: {verdict}: {o.gate.reason}", markup=False)
    out.print(f"trained on {o.pairs} pairs, {o.held_back} held back; loss {o.loss[0]:.3f} -> {o.loss[1]:.3f}; "
              f"{o.seconds:.1f} s, {o.cpu_seconds:.1f} CPU-s", markup=False)


def _list(node, settings, as_json: bool) -> None:
    from memnet.scheduler import consolidate as cons

    now = int(time.time())
    verdicts = cons.candidates(node.store, settings, now)
    facts = {s.set_key: s for s in cons.set_facts(node.store)}
    records = cons.records(node.store)
    spent = cons.spent_today(node.store, now)
    rows = []
    for v in verdicts:
        s, r = facts[v.set_key], records.get(v.set_key)
        members = cons.members_of(node.store, v.set_key)
        rows.append({"memory_set": v.set_key.hex(), "uses": s.uses, "notes": len(members[0]) if members else 0,
                     "repeated": s.repeated, "agreeing": s.agreeing, "candidate": v.candidate, "reason": v.reason,
                     "state": r.state if r else None, "adapter": cid.to_text(r.adapter) if r and r.adapter else None,
                     "accuracy": round(r.accuracy, 4) if r else None, "record": r.reason if r else None})
    if as_json:
        _print_json({"sets": rows, "cpu_spent_today": round(spent, 1), "cpu_budget": settings.cpu_budget_per_day,
                     "enabled": settings.enabled})
        return
    if not rows:
        out.print("no memory sets on record yet (`memnet ask` records the sets it uses)")
    for row in rows:
        mark = "due" if row["candidate"] else "   "
        line = f"{mark} {row['memory_set'][:12]}  {row['uses']:>4} uses  {row['notes']} notes  {row['reason']}"
        if row["state"]:
            line += f"  [{row['state']}" + (f" {row['adapter']}" if row["adapter"] else "") + f": {row['record']}]"
        out.print(line, markup=False)
    out.print(f"CPU today: {spent:.0f}/{settings.cpu_budget_per_day:.0f} s"
              + ("" if settings.enabled else " (background consolidation is off)"))
