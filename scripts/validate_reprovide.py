#!/usr/bin/env python
"""Validation (not a test): what the re-provide interval does on a real swarm of memnet daemons.

    .venv/bin/python scripts/validate_reprovide.py [--nodes 40] [--intervals 30,120] [--window 150]
                                                   [--probe 3] [--ports same|new] [--json PATH]

The swarm simulator (docs/simulation.md §4) moved memnet's reprovide_interval from 22 h to 4 h
on one assumption about py-libp2p: a provider record lives only in the memory of the peers that
took it, so when those peers restart the record is gone until its provider announces again. This
checks that assumption, and the recovery the interval buys, on real daemons (separate processes,
real py-libp2p DHT on loopback). For each interval R (in seconds, standing for hours):
1. --nodes daemons start with reprovide_interval R; a pinner publishes and announces a small
   pinned cube whose DHT key's 20 nearest daemons (py-libp2p's XOR distance of the sha256 of peer
   id and key) include neither it nor the bootstrap node: the record lives at those 20 only.
2. Probe finds from the other daemons must name the pinner (the record is there).
3. The 20 holders are killed with SIGKILL and restarted (same identities; on the port each had,
   as memnet's fixed default listen port gives, or with --ports new on a new one, as an address
   that changed), and for --window seconds a probe find runs every --probe seconds, traced: how
   many of the holders its walk ended at, and how many of those answered (a peer kept at a stale
   address does not).
The simulator's model predicts: every probe fails until the pinner's first re-provide after the
holders are back (read from its log), and they succeed from then on. Reported per R: the share of
probes after the kill that found the cube, the seconds to the first that did, the re-provides,
and the probes that found it before and after that first re-provide.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import random
import signal
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_swarm import LOOPBACK, Children, write_daemon_config  # noqa: E402
from validate_sim import start_swarm  # noqa: E402

from libp2p.peer.id import ID  # noqa: E402

from memnet import home as home_mod  # noqa: E402
from memnet.cube import payloads  # noqa: E402
from memnet.daemon.control import ControlClient  # noqa: E402
from memnet.net.dht_keys import cube_key  # noqa: E402

K = 20   # py-libp2p's bucket size: a provide stores its record at the 20 nearest peers

print = functools.partial(print, flush=True)  # noqa: A001 (progress shows up in a log file too)


def distance(peer_id_text: str, key: bytes) -> int:
    peer = hashlib.sha256(ID.from_base58(peer_id_text).to_bytes()).digest()
    return int.from_bytes(peer, "big") ^ int.from_bytes(hashlib.sha256(key).digest(), "big")


def publish_far(home, pinner: int, bootstrap: int, peer_ids: list[str], rng: random.Random):
    """Publish small pinned cubes at the pinner until one's 20 nearest exclude it and the
    bootstrap node; returns (cube id, the indices of its 20 nearest daemons)."""
    node = home_mod.open_node(home)
    try:
        for attempt in range(64):
            items = [{"text": f"reprovide probe {attempt} {rng.random()}"}]
            cube = node.publisher.publish("plaintext", payloads.encode_items(items), {"items": 1})
            key = cube_key(cube.cube_id)
            nearest = sorted(range(len(peer_ids)), key=lambda i: distance(peer_ids[i], key))[:K]
            if pinner not in nearest and bootstrap not in nearest:
                return cube.cube_id, nearest
    finally:
        node.store.close()
    ranks = sorted(range(len(peer_ids)), key=lambda i: distance(peer_ids[i], key))
    raise SystemExit(f"no cube with a key far from the pinner in 64 tries (last: pinner at rank "
                     f"{ranks.index(pinner)}, bootstrap at {ranks.index(bootstrap)}; {len(set(peer_ids))} ids)")


def probe(client: ControlClient, cube_id: bytes, pinner_id: str, holder_ids: set[str]) -> dict:
    """One find, traced: did it name the pinner, and how many of the record's holders did its
    walk end at and hear from."""
    try:
        answer = client.call("find", timeout=60, cube=cube_id, stats=True)
    except Exception as exc:  # a finder that is busy or restarting: not an answer either way
        print(f"    probe failed: {exc!r}")
        return {"found": False, "reached": 0, "heard": 0, "closest": 0}
    stats = answer["stats"]
    closest = set(stats["closest"])
    return {"found": any(p["peer_id"] == pinner_id for p in answer["providers"]),
            "closest": len(closest), "reached": len(closest & holder_ids),
            "heard": len((closest - set(stats["silent"])) & holder_ids)}


def announce_times(log: Path) -> list[float]:
    """When the pinner's reprovide loop announced its pinned cubes (wall-clock seconds)."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if "announced" in line and "pinned cubes" in line:
            out.append(datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp())
    return out


def run_interval(args, interval: int, rng: random.Random) -> dict:
    root = Path(tempfile.mkdtemp(prefix=f"memnet-reprovide-{interval}-"))
    children = Children(root)
    names = [f"node{i:02d}" for i in range(args.nodes)]
    try:
        homes = [home_mod.init(root / n) for n in names]
        for node in homes:
            write_daemon_config(node, reprovide_interval=interval)
            node.store.close()
        states, boot = start_swarm(children, homes, names, 0, args.nodes, None)
        peer_ids = [s.peer_id for s in states]
        pinner = rng.randrange(1, args.nodes)
        cube_id, holders = publish_far(homes[pinner].home, pinner, 0, peer_ids, rng)
        clients = [ControlClient(s) for s in states]
        time.sleep(args.settle)
        clients[pinner].call("announce", timeout=120, cubes=[cube_id])
        finders = [i for i in range(args.nodes) if i not in holders and i != pinner]
        holder_ids = {peer_ids[i] for i in holders}
        before = [probe(clients[rng.choice(finders)], cube_id, peer_ids[pinner], holder_ids)["found"]
                  for _ in range(5)]
        print(f"R = {interval} s: pinner node{pinner:02d}, record at {len(holders)} daemons; "
              f"before the restart {sum(before)}/5 probes found it")
        killed_at = time.time()
        for i in holders:
            os.kill(states[i].pid, signal.SIGKILL)
        for i in holders:
            children.procs[names[i]][0].wait()
            del children.procs[names[i]]
        for lo in range(0, len(holders), 6):
            chunk = holders[lo:lo + 6]
            for i in chunk:
                # same port: what a daemon on memnet's fixed default port does; else a new one
                listen = states[i].addrs[0].split("/p2p/")[0] if args.ports == "same" else LOOPBACK
                children.daemon(names[i], homes[i].home, "--bootstrap", boot, listen=listen)
            for i in chunk:
                states[i] = children.wait_state(names[i], homes[i].home)
        back_at = time.time()
        print(f"  holders killed and back in {back_at - killed_at:.1f} s")
        probes, traces = [], []
        while time.time() - killed_at < args.window:
            at = time.time()
            traced = probe(clients[rng.choice(finders)], cube_id, peer_ids[pinner], holder_ids)
            probes.append((at - killed_at, traced["found"]))
            traces.append({"at_s": at - killed_at, **traced})
            print(f"    {at - killed_at:6.1f} s  {'found' if traced['found'] else 'not found':9}  walk ended at "
                  f"{traced['reached']:2d} of the {len(holders)} holders, heard from {traced['heard']:2d}")
            time.sleep(max(0.0, args.probe - (time.time() - at)))
        announced = [t - killed_at for t in announce_times(root / f"{names[pinner]}.log") if t > killed_at]
        first = next((t for t, ok in probes if ok), None)
        found = sum(ok for _, ok in probes) / max(1, len(probes))
        print(f"  {len(probes)} probes over {args.window:g} s after the kill: {100 * found:.0f} % found it; "
              f"first at {first if first is None else round(first, 1)} s; pinner re-provided at "
              f"{[round(t, 1) for t in announced]} s")
        # the first re-provide once every holder was back: the model says it restores the record
        back = [t for t in announced if t > back_at - killed_at]
        early = [ok for t, ok in probes if back and t < back[0]]
        late = [ok for t, ok in probes if back and t > back[0] + args.probe]
        return {"interval_s": interval, "pinner": pinner, "holders": holders, "found_before": sum(before),
                "restart_s": back_at - killed_at, "probes": probes, "found_share": found,
                "first_found_s": first, "reprovided_s": announced,
                "found_before_reprovide": sum(early), "probes_before_reprovide": len(early),
                "found_after_reprovide": sum(late), "probes_after_reprovide": len(late),
                "ports": args.ports, "traces": traces}
    finally:
        children.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=40)
    ap.add_argument("--intervals", default="30,120", help="reprovide intervals to try, seconds")
    ap.add_argument("--window", type=float, default=150.0, help="seconds of probes after the kill")
    ap.add_argument("--probe", type=float, default=3.0, help="seconds between probes")
    ap.add_argument("--settle", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ports", choices=("same", "new"), default="same",
                    help="restart the holders on the port they had (memnet's default listen port is "
                         "fixed) or on a new one (an address that changed)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.nodes < K + 3:
        raise SystemExit(f"--nodes must be at least {K + 3}: the record's 20 holders, a pinner, finders")
    rng = random.Random(args.seed)
    results = [run_interval(args, int(r), rng) for r in args.intervals.split(",")]
    print("\nR (s)  found after the kill  first found (s)  re-provided (s)  found before / after the first "
          "re-provide with every holder back")
    for r in results:
        print(f"{r['interval_s']:5d}  {100 * r['found_share']:19.0f} %  {str(r['first_found_s'] and round(r['first_found_s'], 1)):>15}"
              f"  {str([round(t) for t in r['reprovided_s']]):>15}  "
              f"{r['found_before_reprovide']}/{r['probes_before_reprovide']} / "
              f"{r['found_after_reprovide']}/{r['probes_after_reprovide']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
