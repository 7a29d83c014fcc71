#!/usr/bin/env python
"""Validation (not a test): the swarm simulator against a real loopback swarm of memnet daemons.

    .venv/bin/python scripts/validate_sim.py [--nodes 40] [--keys 20] [--stopped 0.3]
                                             [--query-timeout S] [--find-grace S|none] [--json PATH]

1. Calibrate: the first --calib nodes (5) form a swarm; finds there give the CPU seconds one DHT
   request costs on this machine (find seconds / requests), the simulator's one free parameter.
2. All --nodes daemons (separate processes, real py-libp2p DHT, bootstrapped to node 0): for each
   key, a random node publishes and announces a tiny cube, another finds it (the daemon's find
   with stats: the walk's rounds and FIND_NODE queries, its seconds, the GET_PROVIDERS wave).
3. A --stopped share of the daemons is hung with SIGSTOP (a peer that is there but never answers,
   as a home machine that went to sleep looks), and the finds are repeated.
The simulator runs the same scenarios (loopback, same node count and hung share, the calibrated
CPU cost, the daemons' query timeout and find grace) and the medians are compared side by side;
the target is within 20 % on medians. Every child is stopped by pid at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_swarm import Children, write_daemon_config  # noqa: E402

from memnet import config as config_mod  # noqa: E402
from memnet import home as home_mod  # noqa: E402
from memnet.cube import payloads  # noqa: E402
from memnet.daemon.control import ControlClient  # noqa: E402
from simulations.swarm.validation import predict  # noqa: E402


def start_swarm(children: Children, homes, names, first: int, last: int, boot: str | None, batch: int = 6):
    """Daemons first … last-1, a few at a time, each bootstrapping to node 0 (started alone
    first when boot is None)."""
    states = []
    if boot is None:
        children.daemon(names[first], homes[first].home)
        states.append(children.wait_state(names[first], homes[first].home))
        boot, first = states[0].addrs[0], first + 1
    for lo in range(first, last, batch):
        chunk = range(lo, min(last, lo + batch))
        for i in chunk:
            children.daemon(names[i], homes[i].home, "--bootstrap", boot)
        for i in chunk:
            states.append(children.wait_state(names[i], homes[i].home))
    return states, boot


def finds(homes, clients, states, live: list[int], keys: int, rng: random.Random, tag: str) -> list[dict]:
    rows = []
    for k in range(keys):
        p, q = rng.sample(live, 2)
        node = home_mod.open_node(homes[p].home)
        cube = node.publisher.publish("plaintext", payloads.encode_items([{"text": f"{tag} {k} {os.urandom(8).hex()}"}]),
                                      {"items": 1})
        node.store.close()
        clients[p].call("announce", timeout=120, cubes=[cube.cube_id])
        t = time.perf_counter()
        answer = clients[q].call("find", timeout=120, cube=cube.cube_id, stats=True)
        seconds = time.perf_counter() - t
        s = answer["stats"]
        rows.append({"rounds": s["rounds"], "queries": s["queries"], "walk_s": s["walk_seconds"],
                     "find_s": seconds, "asked": s["asked"], "answered": s["answered"],
                     "found": states[p].peer_id in {f["peer_id"] for f in answer["providers"]}})
        time.sleep(0.2)
    return rows


def medians(rows: list[dict]) -> dict:
    med = lambda k: statistics.median(r[k] for r in rows)  # noqa: E731
    return {"n": len(rows), "rounds": med("rounds"), "queries": med("queries"), "walk_s": med("walk_s"),
            "find_s": med("find_s"), "found": sum(r["found"] for r in rows) / len(rows)}


def compare(label: str, real: dict, sim: dict) -> dict:
    out = {}
    print(f"  {label}")
    for key in ("rounds", "queries", "walk_s", "find_s", "found"):
        err = (sim[key] - real[key]) / real[key] if real[key] else (0.0 if sim[key] == 0 else float("inf"))
        out[key] = {"real": real[key], "sim": sim[key], "error": err}
        print(f"    {key:8} real {real[key]:8.3f}   simulated {sim[key]:8.3f}   error {100 * err:+6.1f} %")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=40)
    ap.add_argument("--calib", type=int, default=5)
    ap.add_argument("--keys", type=int, default=20)
    ap.add_argument("--stopped", type=float, default=0.3)
    ap.add_argument("--query-timeout", type=float, default=config_mod.Config().daemon.dht_query_timeout)
    ap.add_argument("--find-grace", default=str(config_mod.Config().daemon.find_grace),
                    help='seconds, or "none" to wait for every GET_PROVIDERS answer (memnet before the simulation)')
    ap.add_argument("--settle", type=float, default=15.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    grace = None if args.find_grace.lower() in ("none", "null") else float(args.find_grace)
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="memnet-validate-"))
    children = Children(root)
    names = [f"node{i:02d}" for i in range(args.nodes)]
    result: dict = {"nodes": args.nodes, "keys": args.keys, "stopped": args.stopped,
                    "query_timeout": args.query_timeout, "find_grace": grace}
    stopped: list[int] = []
    try:
        homes = [home_mod.init(root / n) for n in names]
        for node in homes:
            write_daemon_config(node, dht_query_timeout=args.query_timeout, find_grace=grace)
            node.store.close()
        t0 = time.perf_counter()
        states, boot = start_swarm(children, homes, names, 0, args.calib, None)
        time.sleep(args.settle / 2)
        clients = [ControlClient(s) for s in states]
        calib = finds(homes, clients, states, list(range(args.calib)), max(6, args.keys // 2), rng, "calib")
        # two constants of this machine: the CPU one DHT request costs (from the walks), and what a
        # find costs besides its requests (the control call, the local provider store)
        rpc_cpu = statistics.median(r["walk_s"] / max(1, r["queries"]) for r in calib)
        overhead = statistics.median(max(0.0, r["find_s"] - r["walk_s"] - rpc_cpu * r["answered"]) for r in calib)
        print(f"calibration on {args.calib} daemons: {statistics.median(r['find_s'] for r in calib):.3f} s per find; "
              f"{1000 * rpc_cpu:.1f} ms of CPU per DHT request, {1000 * overhead:.1f} ms besides")
        more, _ = start_swarm(children, homes, names, args.calib, args.nodes, boot)
        states += more
        clients = [ControlClient(s) for s in states]
        print(f"{args.nodes} daemons up in {time.perf_counter() - t0:.0f} s; settling {args.settle:g} s")
        time.sleep(args.settle)
        everyone = list(range(args.nodes))
        real_up = medians(finds(homes, clients, states, everyone, args.keys, rng, "up"))
        sim_up = predict(args.nodes, args.keys, 0.0, rpc_cpu, args.query_timeout, grace, args.seed, overhead)
        stopped = rng.sample(everyone[1:], int(round(args.stopped * args.nodes)))
        for i in stopped:
            os.kill(states[i].pid, signal.SIGSTOP)
        live = [i for i in everyone if i not in stopped]
        real_hung = medians(finds(homes, clients, states, live, args.keys, rng, "hung"))
        sim_hung = predict(args.nodes, args.keys, args.stopped, rpc_cpu, args.query_timeout, grace, args.seed,
                           overhead)
        print(f"\n{args.nodes} daemons, query timeout {args.query_timeout:g} s, find grace {grace} s; medians of {args.keys} finds")
        result |= {"rpc_cpu_s": rpc_cpu, "find_overhead_s": overhead,
                   "all_up": compare("all daemons up", real_up, sim_up),
                   "hung": compare(f"{len(stopped)} of {args.nodes} daemons hung (SIGSTOP)", real_hung, sim_hung)}
        worst = max(abs(v["error"]) for part in ("all_up", "hung") for k, v in result[part].items()
                    if k in ("walk_s", "find_s", "rounds"))
        result["worst_median_error"] = worst
        print(f"\nworst error on the medians of rounds, walk and find time: {100 * worst:.0f} % (target: 20 %)")
    finally:
        for i in stopped:
            try:
                os.kill(states[i].pid, signal.SIGCONT)
            except (ProcessLookupError, NameError):
                pass
        children.stop()
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
