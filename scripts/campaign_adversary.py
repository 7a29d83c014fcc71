#!/usr/bin/env python
"""Campaign: hostile peers (reliability issue 17, item 4).

    .venv/bin/python scripts/campaign_adversary.py [--attacks poison,sybil,...] [--cube-mib 16]
                                                   [--gets 3] [--scale 1.0] [--json PATH]

Real daemons on loopback, each its own process: a provider holding the cubes, an honest
fetcher, and --helpers more DHT nodes, all in one DHT. Each attack (scripts/adversaries.py) runs
as its own process against them, and while it is in effect the fetcher gets --gets fresh cubes
of --cube-mib from the provider, found through the DHT (no hint). Before the first attack and
after the last, the same gets alone: the time an attack adds is its gets' median against that.

    stall      five identities named as providers beside the honest one (first), answering
               nothing (finding 2: a 16 MiB get must finish within 2 s of its time alone)
    poison     provider records of the cubes at every node but the fetcher, from identities whose
               addresses are dead, a black hole, or a host that stalls (issue: DHT poisoning)
    sybil      identities ground nearer each cube's key than any honest node, dropping records
    slowloris  many identities holding the most MIP streams each may, saying nothing
    trickle    valid requests a byte at a time
    flood      requests pipelined without pause, and identities connecting without pause
    overrun    writes past the yamux window after a malformed frame (finding 1)
    control    huge frames and idle connections at the control port (finding 3)

Reported per attack: the honest gets (and failures), `status` latency p50/p99 on the provider
(and on the fetcher), peak anonymous memory of both above their idle, the provider's open
connections and streams at the peak (py-libp2p's resource manager counts), what the attacker
managed. At the end: every daemon alive, tracebacks in their logs, and the issue's targets
where the run measured them: the provider's peak RSS under the overrun and the control flood
(against its RSS as the attack began), and the get beside five stallers against the get alone.

Exit status 1 on a finding: a failed honest get, a daemon gone, a traceback, memory past 300 MB
above idle.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_memory import Sampler, plaintext_cube_args, rss  # noqa: E402
from bench_swarm import LOOPBACK, Children, write_daemon_config  # noqa: E402
from campaign_fuzz import percentile  # noqa: E402

from memnet import home as home_mod  # noqa: E402
from memnet.cube import cid  # noqa: E402
from memnet.daemon.control import ControlClient  # noqa: E402
from memnet.net.dht_keys import cube_key  # noqa: E402

print = functools.partial(print, flush=True)  # noqa: A001
MIB = 1 << 20
ATTACKS = ("stall", "poison", "sybil", "slowloris", "trickle", "flood", "overrun", "control")
BOUND_MB = 300
ATTACKER_ADDRESS = "127.0.0.2"   # the DHT attackers' own network (loopback: any 127.x address is this machine)


class Probe(threading.Thread):
    """`status` every 0.25 s: latencies, and the largest connection and stream counts seen."""

    def __init__(self, state):
        super().__init__(daemon=True)
        self.client, self.stop = ControlClient(state), threading.Event()
        self.latencies: list[float] = []
        self.failures = 0
        self.connections = self.streams = 0

    def run(self) -> None:
        while not self.stop.is_set():
            t0 = time.perf_counter()
            try:
                status = self.client.call("status", timeout=30)
                self.latencies.append(time.perf_counter() - t0)
                use = status.get("resources", {})
                self.connections = max(self.connections, _count(use.get("connections")))
                self.streams = max(self.streams, _count(use.get("streams")))
            except Exception:
                self.failures += 1
            self.stop.wait(0.25)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _count(value) -> int:
    if isinstance(value, dict):   # py-libp2p counts inbound and outbound apart
        return sum(v for v in value.values() if isinstance(v, int))
    return value if isinstance(value, int) else 0


class Attacker:
    """scripts/adversaries.py ATTACK as a child process; its last stats line kept."""

    def __init__(self, root: Path, name: str, args: dict, script: str = "adversaries.py"):
        self.log = (root / f"attack-{name}.log").open("w")
        # a session of its own: stop() ends its children too (hivemind's p2pd daemons)
        self.proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / script), name, json.dumps(args)],
                                     stdout=subprocess.PIPE, stderr=self.log, text=True, cwd=REPO,
                                     start_new_session=True)
        self.ready: dict | None = None
        self.stats: dict = {}
        self.said: dict = {}   # anything else it printed, the latest of each field
        self._seen = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                fields = json.loads(line)
            except ValueError:
                continue
            if "ready" in fields:
                self.ready = fields
                self._seen.set()
            self.stats = fields.get("stats", self.stats)
            self.said |= {k: v for k, v in fields.items() if k not in ("ready", "stats")}
        self._seen.set()

    def wait_ready(self, timeout: float) -> dict:
        if not self._seen.wait(timeout) or self.ready is None:
            self.stop()
            raise SystemExit(f"the attacker did not get ready in {timeout:.0f} s (see {self.log.name})")
        return self.ready

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.log.close()


class Swarm:
    def __init__(self, root: Path, helpers: int, cubes: int, cube_mib: int):
        self.root, self.children = root, Children(root)
        provider = home_mod.init(root / "provider")
        t0 = time.perf_counter()
        self.cubes = []
        for _ in range(cubes):
            payload, meta = plaintext_cube_args(cube_mib * MIB)
            self.cubes.append(provider.publisher.publish("plaintext", payload, meta).cube_id)
        print(f"provider: {cubes} cubes of {cube_mib} MiB published in {time.perf_counter() - t0:.1f} s")
        self.homes = {"provider": provider.home}
        write_daemon_config(provider, listen=[LOOPBACK], mdns=False)
        provider.store.close()
        self.children.daemon("provider", provider.home)
        self.provider = self.children.wait_state("provider", provider.home)
        boot = self.provider.addrs[0]
        names = ["fetcher"] + [f"helper-{i}" for i in range(helpers)]
        for name in names:
            node = home_mod.init(root / name)
            write_daemon_config(node, listen=[LOOPBACK], mdns=False)
            node.store.close()
            self.homes[name] = node.home
            self.children.daemon(name, node.home, "--bootstrap", boot)
        self.states = {"provider": self.provider, **{n: self.children.wait_state(n, self.homes[n], timeout=120)
                                                     for n in names}}
        self.fetcher = self.states["fetcher"]

    def dht_addrs(self, but: tuple[str, ...] = ()) -> list[str]:
        return [s.addrs[0] for n, s in self.states.items() if n not in but]

    def wait_found(self, cube: bytes, timeout: float = 60) -> float:
        """Until the fetcher's DHT lookup finds the provider for cube; seconds taken."""
        client, t0 = ControlClient(self.fetcher), time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            found = client.call("find", timeout=60, cube=cube, stats=True)
            if any(p["peer_id"] == self.provider.peer_id for p in found["providers"]):
                return time.perf_counter() - t0
            time.sleep(0.5)
        raise SystemExit(f"the provider's record for {cid.to_text(cube)} never reached the fetcher: {found}")


def get_all(swarm: Swarm, cubes: list[bytes], hints: list[dict] | None = None) -> tuple[list[float], list[str]]:
    """Get each cube, through the DHT (or from the providers hinted, in that order)."""
    client, times, failures = ControlClient(swarm.fetcher), [], []
    for cube in cubes:
        t0 = time.perf_counter()
        try:
            client.call("get", timeout=300, cube=cube, wait_announce=False, **({"providers": hints} if hints else {}))
            times.append(time.perf_counter() - t0)
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc}"[:200])
    return times, failures


def phase(swarm: Swarm, label: str, cubes: list[bytes], attack: tuple[str, dict] | None) -> dict:
    pids = {"provider": swarm.provider.pid, "fetcher": swarm.fetcher.pid}
    idle = {n: rss(pid) for n, pid in pids.items()}
    samplers = {n: Sampler(pid) for n, pid in pids.items()}
    probes = {n: Probe(swarm.states[n]) for n in pids}
    attacker, ready, cpu = None, None, {}
    for thread in (*samplers.values(), *probes.values()):
        thread.start()
    try:
        if attack is not None:
            attacker = Attacker(swarm.root, *attack)
            ready = attacker.wait_ready(300)
            time.sleep(2.0)   # let it take hold
        pids["attacker"] = attacker.proc.pid if attacker else None
        cpu0, t0 = {n: cpu_seconds(p) for n, p in pids.items() if p}, time.perf_counter()
        hints = None
        if label == "stall":   # the stallers first, then the honest provider
            hints = ready["peers"] + [{"peer_id": swarm.provider.peer_id, "addrs": swarm.provider.addrs}]
        times, failures = get_all(swarm, cubes, hints)
        if attacker is not None:
            time.sleep(1.0)
        wall = time.perf_counter() - t0
        cpu = {n: (cpu_seconds(p) - cpu0[n]) / wall for n, p in pids.items() if p}
        pids.pop("attacker")
    finally:
        if attacker is not None:
            attacker.stop()
        for thread in (*samplers.values(), *probes.values()):
            thread.stop.set()
            thread.join()
    row = {"attack": label, "ready": ready, "attacker": attacker.stats if attacker else {},
           "get_s": times, "failures": failures, "cores_busy": cpu}
    for name in pids:
        probe, sampler = probes[name], samplers[name]
        row[name] = {
            "anon_idle_mb": idle[name]["RssAnon"] / 1e6, "anon_peak_mb": sampler.peak["RssAnon"] / 1e6,
            "rss_idle_mb": idle[name]["VmRSS"] / 1e6, "rss_peak_mb": sampler.peak["VmRSS"] / 1e6,
            "file_idle_mb": idle[name]["RssFile"] / 1e6, "file_peak_mb": sampler.peak["RssFile"] / 1e6,
            "status_n": len(probe.latencies), "status_failures": probe.failures,
            "status_p50_ms": 1000 * percentile(probe.latencies, 0.5),
            "status_p99_ms": 1000 * percentile(probe.latencies, 0.99),
            "connections_peak": probe.connections, "streams_peak": probe.streams,
        }
    return row


def attack_args(name: str, swarm: Swarm, cubes: list[bytes], scale: float) -> dict:
    n = lambda base: max(1, round(base * scale))  # noqa: E731
    target = swarm.cubes[0].hex()
    provider = swarm.provider.addrs[0]
    return {
        "stall": {"identities": 5},
        "poison": {"keys": [cube_key(c).hex() for c in cubes], "victims": swarm.dht_addrs(but=("fetcher",)),
                   "identities": n(30), "every": 5.0, "source": ATTACKER_ADDRESS},
        "sybil": {"key": cube_key(cubes[0]).hex(), "victims": swarm.dht_addrs(), "identities": n(20), "bits": 10,
                  "source": ATTACKER_ADDRESS},
        "slowloris": {"victim": provider, "cube": target, "identities": n(40), "streams": 16},
        "trickle": {"victim": provider, "cube": target, "identities": n(20), "streams": 16, "delay": 0.05},
        "flood": {"victim": provider, "cube": target, "identities": n(8), "streams": 16, "churners": n(16)},
        "overrun": {"victim": provider, "identities": n(8), "streams": 16},
        "control": {"port": swarm.provider.control_port, "big": n(64), "idle": n(256)},
    }[name]


def print_row(row: dict, alone: float) -> None:
    times = row["get_s"]
    median = statistics.median(times) if times else float("nan")
    added = f", +{median - alone:.2f} s on the median alone" if times and row["attack"] not in ("alone", "after") else ""
    print(f"  {row['attack']}: gets {', '.join(f'{t:.2f}' for t in times)} s{added}; failed {len(row['failures'])} "
          f"{row['failures'][:2]}; cores busy: " + ", ".join(f"{n} {v:.2f}" for n, v in row["cores_busy"].items()))
    for name in ("provider", "fetcher"):
        r = row[name]
        print(f"    {name}: status p50 {r['status_p50_ms']:.1f} ms p99 {r['status_p99_ms']:.1f} ms "
              f"({r['status_n']} asked, {r['status_failures']} failed); anonymous {r['anon_idle_mb']:.0f} -> "
              f"{r['anon_peak_mb']:.0f} MB (RSS {r['rss_idle_mb']:.0f} -> {r['rss_peak_mb']:.0f} MB, LMDB's file pages "
              f"{r['file_idle_mb']:.0f} -> {r['file_peak_mb']:.0f} MB); at most {r['connections_peak']} "
              f"connections, {r['streams_peak']} streams")
    if row["attacker"]:
        print(f"    attacker: {row['ready']} {json.dumps(row['attacker'])}")


def print_targets(rows: list[dict], cube_mib: int) -> None:
    """The figures the reliability issue's "done when" asks for, where this run measured them."""
    by = {r["attack"]: r for r in rows}
    for attack, what in (("overrun", "the window overrun"), ("control", "the control flood")):
        if attack in by:
            r = by[attack]["provider"]
            print(f"target: provider's peak RSS under {what}: {r['rss_peak_mb']:.0f} MB, {r['rss_idle_mb']:.0f} MB "
                  f"as it began: +{r['rss_peak_mb'] - r['rss_idle_mb']:.0f} MB (anonymous +"
                  f"{r['anon_peak_mb'] - r['anon_idle_mb']:.0f} MB; the rest LMDB's pages of the cubes served, "
                  f"mapped and reclaimable); bound {BOUND_MB} MB above idle")
    if "stall" in by and by["alone"]["get_s"] and by["stall"]["get_s"]:
        alone, stall = statistics.median(by["alone"]["get_s"]), statistics.median(by["stall"]["get_s"])
        print(f"target: a {cube_mib} MiB get with five stalling providers beside the honest one: median "
              f"{stall:.2f} s against {alone:.2f} s alone ({stall - alone:+.2f} s; target within 2 s)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--attacks", default=",".join(ATTACKS))
    ap.add_argument("--helpers", type=int, default=3)
    ap.add_argument("--cube-mib", type=int, default=16)
    ap.add_argument("--gets", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies the attackers' identities")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    attacks = [a for a in args.attacks.split(",") if a]
    unknown = set(attacks) - set(ATTACKS)
    if unknown:
        ap.error(f"unknown attacks: {', '.join(sorted(unknown))}")
    root = Path(tempfile.mkdtemp(prefix="memnet-adversary-"))
    phases = ["alone", *attacks, "after"]
    swarm = Swarm(root, args.helpers, 1 + args.gets * len(phases), args.cube_mib)
    rows = []
    try:
        print(f"swarm: provider, fetcher, {args.helpers} helpers; work in {root}")
        for i, label in enumerate(phases):
            cubes = swarm.cubes[1 + i * args.gets: 1 + (i + 1) * args.gets]
            for cube in cubes:
                swarm.wait_found(cube)
            attack = None if label in ("alone", "after") else (label, attack_args(label, swarm, cubes, args.scale))
            row = phase(swarm, label, cubes, attack)
            rows.append(row)
            print_row(row, statistics.median(rows[0]["get_s"]) if rows[0]["get_s"] else 0.0)
        dead = swarm.children.dead()
        tracebacks = {n: swarm.children.procs[n][1].read_text(errors="replace").count("Traceback")
                      for n in swarm.states}
    finally:
        swarm.children.stop()
    print_targets(rows, args.cube_mib)
    summary = {"dead": dead, "tracebacks": tracebacks, "work": str(root)}
    print(f"daemons dead: {dead or 'none'}; tracebacks in logs: {sum(tracebacks.values())} {tracebacks}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, **summary}, indent=2, default=str) + "\n")
    finding = dead or any(tracebacks.values()) or any(r["failures"] for r in rows) or any(
        r[n]["anon_peak_mb"] - r[n]["anon_idle_mb"] > BOUND_MB for r in rows for n in ("provider", "fetcher"))
    print("FINDINGS: see above" if finding else "no findings")
    return 1 if finding else 0


if __name__ == "__main__":
    raise SystemExit(main())
