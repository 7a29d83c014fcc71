"""The command line: python -m simulations.swarm [run|lookups|retrieval] [options].

    run        one scenario: prints the findings; writes result.json, asks.csv and plots to --out
    lookups    DHT walks against the swarm size (--sizes), no workload
    retrieval  the scenario once per share of nodes offline (--offline-shares), pinned cubes probed
Any scenario knob can be set with --set name=value (see simulations/swarm/params.py).
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import time
from dataclasses import fields
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from simulations.swarm.params import HOUR, MODELS, Scenario

COMMANDS = ("run", "lookups", "retrieval")


def _value(current, text: str):
    if text.lower() in ("none", "null"):
        return None
    if isinstance(current, bool):
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"{text!r} is not true or false")
        return text.lower() in ("true", "1", "yes")
    if isinstance(current, int):
        return int(float(text))
    if isinstance(current, float) or current is None:
        return float(text)
    return text


def _current(sc: Scenario, name: str):
    for part in (sc, sc.kad, sc.churn, sc.workload, sc.policy):
        if name in {f.name for f in fields(part)}:
            return getattr(part, name)
    raise ValueError(f"unknown scenario option {name!r}")


def scenario_from(args) -> Scenario:
    sc = Scenario(nodes=args.nodes, hours=args.hours, seed=args.seed, model=args.model,
                  warmup=min(args.warmup * HOUR, args.hours * HOUR / 2))
    options = {k: v for k, v in {"offline_share": args.offline, "asks_per_hour": args.asks_per_hour}.items()
               if v is not None}
    if args.flash_at is not None:
        options["flash_at"] = None if args.flash_at < 0 else args.flash_at * HOUR
    for item in args.set:   # "none" is a value here (find_grace=none: wait for every answer)
        name, _, text = item.partition("=")
        options[name] = _value(_current(sc, name), text)
    return sc.with_options(**options)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m simulations.swarm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=COMMANDS)
    p.add_argument("--nodes", type=int, default=10_000)
    p.add_argument("--hours", type=float, default=24.0, help="simulated hours (default 24)")
    p.add_argument("--warmup", type=float, default=2.0, help="hours run before counting (default 2)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--model", choices=sorted(MODELS), default="llama-8b")
    p.add_argument("--offline", type=float, help="mean share of churning nodes offline (default 0.5)")
    p.add_argument("--asks-per-hour", type=float, help="asks per online node per hour (default 2)")
    p.add_argument("--flash-at", type=float, help="hour of the flash crowd (negative: none; default 12)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="any scenario knob")
    p.add_argument("--out", type=Path, help="folder for result.json, asks.csv and plots")
    p.add_argument("--sizes", default="1000,3000,10000,30000,100000", help="lookups: swarm sizes")
    p.add_argument("--walks", type=int, default=2000, help="lookups: walks per size")
    p.add_argument("--offline-shares", default="0.1,0.3,0.5", help="retrieval: shares of nodes offline")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS + ("-h", "--help"):
        argv.insert(0, "run")
    args = _parser().parse_args(argv)
    gc.set_threshold(*GC_THRESHOLDS)
    console = Console(stderr=True)
    try:
        sc = scenario_from(args)
    except ValueError as exc:
        console.print(f"error: {exc}")
        return 2
    out = args.out or Path("simulations/results") / f"{args.command}-{sc.nodes}-seed{sc.seed}"
    return {"run": _run, "lookups": _lookups, "retrieval": _retrieval}[args.command](sc, args, out, console)


def _progress(console, quiet: bool, total: float):
    if quiet:
        return None, None
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[note]}"),
                   TimeElapsedColumn(), console=console, transient=True)
    task = bar.add_task("simulating", total=total, note="")
    return bar, task


# A run allocates millions of short-lived lists and keeps millions of objects (windows, records,
# per-ask figures): with CPython's default thresholds the collector spent a fifth of a 10^5-node
# run walking that heap. The young generation is collected every 100 000 allocations instead of
# 700 (SimPy's processes and events form cycles that still need collecting), and a built world
# is frozen out of collection.
GC_THRESHOLDS = (100_000, 50, 100)


def _run(sc: Scenario, args, out: Path, console) -> int:
    from simulations.swarm.report import write_run
    from simulations.swarm.swarm import Swarm

    swarm = Swarm(sc)
    gc.collect()
    gc.freeze()
    bar, task = _progress(console, args.quiet, sc.hours * HOUR)
    started = time.perf_counter()

    def progress(now: float) -> None:
        if bar is not None:
            bar.update(task, completed=now, note=f"{now / HOUR:.1f} h · {swarm.ask_count} asks · "
                                                  f"{swarm.world.online_count} online")

    if bar is not None:
        with bar:
            metrics = swarm.run(progress)
    else:
        metrics = swarm.run()
    wall = time.perf_counter() - started
    speed = {"wall_s": round(wall, 1), "events": swarm.env.events,
             "events_per_s": round(swarm.env.events / wall), "asks": swarm.ask_count,
             "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    result = write_run(out, sc, metrics, speed)
    print(findings(result))
    print(f"files: {out}/result.json, asks.csv, ttft.png, lookups.png, load.png")
    return 0


def findings(result: dict) -> str:
    s, sp, sc = result["summary"], result["speed"], result["scenario"]
    pre, t = s["prefill"], s["ttft"]
    pct = lambda x: "n/a" if x is None else f"{100 * x:.1f} %"  # noqa: E731
    sec = lambda q, k="p50": f"{q.get(k, float('nan')):.2f} s"  # noqa: E731
    lines = [
        f"{sc['nodes']} nodes, {sc['hours']:g} h (counted after {sc['warmup'] / HOUR:g} h), seed {sc['seed']}, "
        f"model {sc['model']}, online share {pct(s['online_share'])}",
        f"prefill saved: {pct(pre['saved_of_limit'])} of the limit (limit: {pct(pre['limit_of_all'])} of prefix "
        f"tokens were computed by a node online; saved {pct(pre['saved_of_all'])} of all); "
        f"{pct(pre.get('saved_of_worth'))} of the tokens worth fetching ({pct(pre.get('worth_of_limit'))} of the limit: "
        f"fetching the rest is slower than prefilling it)",
        f"TTFT p50/p90: swarm {sec(t['swarm'])} / {sec(t['swarm'], 'p90')}, on its own "
        f"{sec(t['solo'])} / {sec(t['solo'], 'p90')}",
        f"decisions: {s['decisions']}",
        f"DHT walk: rounds mean {s['walks']['rounds'].get('mean', 0):.2f}, queries {s['walks']['queries'].get('mean', 0):.1f}, "
        f"dead contacts {s['walks']['dead'].get('mean', 0):.1f}, p50 {sec(s['walks']['seconds'])}; "
        f"find p50 {sec(s['find_seconds'])}; prefix lookup per ask p50 {sec(s['ask_lookup_seconds'])}",
        f"pinned cubes found: {pct(s['pinned_retrieval']['success'])} of {sum(v for k, v in s['pinned_retrieval'].items() if k in ('ok', 'lost', 'unavailable'))} probes "
        f"(lost by the DHT {s['pinned_retrieval'].get('lost', 0)}, no holder online {s['pinned_retrieval'].get('unavailable', 0)})",
        f"provider load Gini {s['load']['gini_up_all']:.2f} (among nodes that served: {s['load']['gini_up_serving']:.2f}); "
        f"flash crowd TTFT p50 {sec(s['flash_crowd_seconds'])}" if s["flash_crowd_seconds"] else
        f"provider load Gini {s['load']['gini_up_all']:.2f} (among nodes that served: {s['load']['gini_up_serving']:.2f})",
        f"speed: {sp['wall_s']} s wall, {sp['events']} events ({sp['events_per_s']}/s), {sp['asks']} asks, "
        f"peak RSS {sp['peak_rss_mb']} MB",
    ]
    return "\n".join(lines)


def _lookups(sc: Scenario, args, out: Path, console) -> int:
    from simulations.swarm.report import line_plot
    from simulations.swarm.sweeps import lookups

    sizes = [int(x) for x in args.sizes.split(",")]
    rows = lookups(sc, sizes, args.walks)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lookups.json").write_text(json.dumps(rows, indent=2) + "\n")
    line_plot(out / "rounds_vs_n.png", sizes, {"rounds": [r["rounds_mean"] for r in rows],
                                               "dead contacts asked": [r["dead_mean"] for r in rows]},
              "nodes", "per walk (mean)", logx=True)
    line_plot(out / "seconds_vs_n.png", sizes, {"p50": [r["seconds_p50"] for r in rows],
                                                "p90": [r["seconds_p90"] for r in rows]},
              "nodes", "walk seconds", logx=True)
    for r in rows:
        print(f"{r['nodes']:>7} nodes: rounds {r['rounds_mean']:.2f} (max {r['rounds_max']}), queries "
              f"{r['queries_mean']:.1f}, dead {r['dead_mean']:.1f}, p50 {r['seconds_p50']:.2f} s, p90 "
              f"{r['seconds_p90']:.2f} s, nearest 20 reached {100 * r['nearest_reached']:.0f} %")
    print(f"files: {out}/lookups.json, rounds_vs_n.png, seconds_vs_n.png")
    return 0


def _retrieval(sc: Scenario, args, out: Path, console) -> int:
    from simulations.swarm.report import line_plot
    from simulations.swarm.sweeps import retrieval

    shares = [float(x) for x in args.offline_shares.split(",")]
    rows = retrieval(sc, shares)
    out.mkdir(parents=True, exist_ok=True)
    (out / "retrieval.json").write_text(json.dumps(rows, indent=2) + "\n")
    line_plot(out / "retrieval.png", [100 * s for s in shares],
              {"found": [100 * (r["success"] or 0) for r in rows]}, "% of nodes offline", "% of probes that found a live holder")
    for r in rows:
        print(f"{100 * r['offline_share']:.0f} % offline (measured {100 * r['measured_offline']:.0f} %): "
              f"{100 * (r['success'] or 0):.1f} % found; lost by the DHT {r.get('lost', 0)}, no holder online "
              f"{r.get('unavailable', 0)}")
    print(f"files: {out}/retrieval.json, retrieval.png")
    return 0
