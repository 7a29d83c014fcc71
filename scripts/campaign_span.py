#!/usr/bin/env python
"""Campaign: hostile clients of a span server (reliability issue 17, extended to the span servers
of distributed inference).

    .venv/bin/python scripts/campaign_span.py [--attacks fuzz,bigframe,...] [--window 20]
                                              [--inputs 3000] [--models DIR] [--json PATH]

Two memnet daemons on loopback, each with its hivemind bridge (separate processes): a span server
`s1` serving all 30 layers of SmolLM2-135M, and a client node `a`. This process generates through
a's bridge again and again (a 40-token prompt, 4 new tokens, the chain through s1: the honest
user), while each attack (scripts/span_adversaries.py, its own process with its own hivemind
identities) runs for --window seconds against s1's span protocol; before the first attack and
after the last, the same generations alone. Attacks:

    fuzz       --inputs generated and mutated span streams (runs until done, at least --window)
    bigframe   streams announcing a 60 MiB frame before their open, sent at full speed
    hog        identities opening the most sessions they may at the server's max_length, silent
    flood      open+close sessions without pause, and more silent streams than a peer may hold
    trickle    steps a byte at a time

Reported per phase: honest generations (count, failures and why, median and max time), `status`
p50/p99 of s1's daemon, s1's bridge process (where the spans run) anonymous memory and RSS,
idle → peak, and what the attacker managed. At the end: every process alive, tracebacks in logs.
Exit status 1 on a finding: a failed honest generation, a process gone, a traceback, the bridge
300 MB above its idle.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_distributed import LISTEN, bridge_ready, generate_ids, wait_servers  # noqa: E402
from bench_memory import Sampler, rss  # noqa: E402
from bench_swarm import BenchError, Children  # noqa: E402
from campaign_adversary import Attacker, Probe  # noqa: E402
from campaign_fuzz import percentile  # noqa: E402
from memnet import api  # noqa: E402
from memnet import home as home_mod  # noqa: E402

print = functools.partial(print, flush=True)  # noqa: A001
ATTACKS = ("fuzz", "bigframe", "hog", "flood", "trickle")
BOUND_MB = 300
PROMPT = "A span server holds some layers of a model and passes the hidden state along the chain to the next. "


class Honest(threading.Thread):
    """Generations through a's bridge, one after another, until stopped."""

    def __init__(self, node, loaded, ids: list[int]):
        super().__init__(daemon=True)
        self.node, self.loaded, self.ids = node, loaded, ids
        self.stop, self.times, self.failures = threading.Event(), [], []

    def run(self) -> None:
        while not self.stop.is_set():
            t0 = time.perf_counter()
            try:
                result = generate_ids(self.node, self.loaded, self.ids, n=4, local=False, distributed=True,
                                      result_wanted=True)
                if len(result.new_ids) != 4:
                    raise RuntimeError(f"{len(result.new_ids)} tokens, not 4")
                self.times.append(time.perf_counter() - t0)
            except Exception as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}"[:200])
                self.stop.wait(0.5)
            self.stop.wait(0.2)


def attack_args(name: str, target: dict, args) -> dict:
    return target | {
        "fuzz": {"inputs": args.inputs, "seed": 1},
        "bigframe": {"identities": 2, "streams": 8},
        "hog": {"identities": 3, "sessions": 8},
        "flood": {"identities": 3, "streams": 8, "silent": 24},
        "trickle": {"identities": 2, "streams": 8, "delay": 0.02},
    }[name]


def phase(label: str, attack: tuple | None, ctx: dict, args) -> dict:
    bridge_pid, s1 = ctx["bridge_pid"], ctx["s1_state"]
    idle = rss(bridge_pid)
    sampler, probe = Sampler(bridge_pid), Probe(s1)
    honest = Honest(ctx["node"], ctx["loaded"], ctx["ids"])
    attacker, ready = None, None
    sampler.start()
    probe.start()
    try:
        if attack is not None:
            attacker = Attacker(ctx["root"], attack[0], attack[1], script="span_adversaries.py")
            ready = attacker.wait_ready(120)
            time.sleep(2.0)
        honest.start()
        t0 = time.monotonic()
        while time.monotonic() - t0 < args.window or (
                label == "fuzz" and not attacker.said.get("finished") and attacker.proc.poll() is None):
            time.sleep(0.5)
        honest.stop.set()
        honest.join()
    finally:
        if attacker is not None:
            attacker.stop()
        for thread in (sampler, probe):
            thread.stop.set()
            thread.join()
    times = honest.times
    return {
        "attack": label, "ready": ready, "attacker": attacker.stats if attacker else {},
        "answers": attacker.said.get("answers", {}) if attacker else {},
        "generations": len(times), "failures": honest.failures,
        "gen_median_s": statistics.median(times) if times else None, "gen_max_s": max(times) if times else None,
        "status_n": len(probe.latencies), "status_failures": probe.failures,
        "status_p50_ms": 1000 * percentile(probe.latencies, 0.5), "status_p99_ms": 1000 * percentile(probe.latencies, 0.99),
        "anon_idle_mb": idle["RssAnon"] / 1e6, "anon_peak_mb": sampler.peak["RssAnon"] / 1e6,
        "rss_idle_mb": idle["VmRSS"] / 1e6, "rss_peak_mb": sampler.peak["VmRSS"] / 1e6,
    }


def print_row(row: dict, alone: float | None) -> None:
    med, worst = row["gen_median_s"], row["gen_max_s"]
    times = "none done" if med is None else f"median {med:.2f} s, max {worst:.2f} s"
    if med is not None and alone and row["attack"] not in ("alone", "after"):
        times += f" ({med - alone:+.2f} s on alone)"
    print(f"  {row['attack']}: {row['generations']} generations, {times}; failed {len(row['failures'])} "
          f"{row['failures'][:2]}")
    print(f"    s1: status p50 {row['status_p50_ms']:.1f} ms p99 {row['status_p99_ms']:.1f} ms ({row['status_n']} asked, "
          f"{row['status_failures']} failed); bridge anonymous {row['anon_idle_mb']:.0f} -> {row['anon_peak_mb']:.0f} MB, "
          f"RSS {row['rss_idle_mb']:.0f} -> {row['rss_peak_mb']:.0f} MB")
    if row["attacker"]:
        print(f"    attacker: {row['ready']} {json.dumps(row['attacker'])}")
    for kind, n in sorted(row["answers"].items(), key=lambda kv: -kv[1])[:40]:
        print(f"      {n:6d}  {kind}")


def setup(root: Path, children: Children) -> dict:
    homes = {name: home_mod.init(root / name) for name in ("a", "s1")}
    started = time.perf_counter()
    for node in homes.values():
        node.models.pin("smollm2")
    children.daemon("a", homes["a"].home, "--hivemind", "--hivemind-listen", LISTEN)
    a = bridge_ready(children, "a", homes["a"].home)
    children.daemon("s1", homes["s1"].home, "--serve-blocks", "0:30", "--hivemind-listen", LISTEN,
                    "--hivemind-peer", a["maddrs"][0], "--bootstrap", a["state_obj"].addrs[0])
    s1 = bridge_ready(children, "s1", homes["s1"].home)
    found = wait_servers(homes["a"].home, 1)
    node = home_mod.open_node(homes["a"].home)
    loaded, _ = api.load(node)
    server = found[0]
    print(f"a and s1 up in {time.perf_counter() - started:.1f} s; s1 serves [0, 30) of SmolLM2, bridge pid {s1['pid']}")
    target = {"maddr": s1["maddrs"][0], "peer": s1["peer_id"], "model": loaded.pinned.fingerprint.hex(),
              "start": 0, "end": 30, "hidden": loaded.model.config.hidden_size,
              "max_length": server.get("max_length", 8192) if isinstance(server, dict) else 8192}
    return {"root": root, "node": node, "loaded": loaded, "ids": loaded.encode(PROMPT * 2)[:40],
            "bridge_pid": s1["pid"], "s1_state": s1["state_obj"], "target": target}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--attacks", default=",".join(ATTACKS))
    ap.add_argument("--window", type=float, default=20.0, help="seconds per phase")
    ap.add_argument("--inputs", type=int, default=3000, help="fuzzed streams")
    ap.add_argument("--models", type=Path, help="a models folder to reuse (else SmolLM2 is converted)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    attacks = [a for a in args.attacks.split(",") if a]
    if set(attacks) - set(ATTACKS):
        ap.error(f"unknown attacks: {', '.join(sorted(set(attacks) - set(ATTACKS)))}")
    root = Path(tempfile.mkdtemp(prefix="memnet-span-campaign-"))
    os.environ["MEMNET_MODELS"] = str(args.models or root / "models")
    children = Children(root)
    rows: list[dict] = []
    try:
        ctx = setup(root, children)
        for label in ["alone", *attacks, "after"]:
            attack = None if label in ("alone", "after") else (label, attack_args(label, ctx["target"], args))
            rows.append(phase(label, attack, ctx, args))
            print_row(rows[-1], rows[0]["gen_median_s"])
        dead = children.dead()
        if not os.path.exists(f"/proc/{ctx['bridge_pid']}"):
            dead.append("s1 bridge")
    except BenchError as exc:
        print(f"error: {exc}")
        if exc.child:
            print(children.tail(exc.child))
        return 1
    finally:
        children.stop()
    tracebacks = {name: path.read_text(errors="replace").count("Traceback")
                  for name, (_, path) in children.procs.items()}
    print(f"processes dead: {dead or 'none'}; tracebacks in logs: {sum(tracebacks.values())} {tracebacks}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "dead": dead, "tracebacks": tracebacks, "work": str(root)},
                                        indent=2, default=str) + "\n")
    finding = dead or any(tracebacks.values()) or any(r["failures"] for r in rows) or any(
        r["anon_peak_mb"] - r["anon_idle_mb"] > BOUND_MB for r in rows)
    print("FINDINGS: see above" if finding else "no findings")
    return 1 if finding else 0


if __name__ == "__main__":
    raise SystemExit(main())
