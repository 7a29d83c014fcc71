#!/usr/bin/env python
"""Campaign: churn (reliability issue 17, item 3).

    .venv/bin/python scripts/campaign_churn.py [--nodes 20] [--duration 180] [--every 8]
                                               [--share 0.3] [--seed 1] [--json PATH]

--nodes daemons on loopback (separate processes), all bootstrapping to node 0, which stays up
(a swarm's seed). Each publishes and pins two cubes first. Then for --duration seconds, every
--every seconds a random --share of the others is killed with SIGKILL and restarted on its own
port a second later, while, on whichever nodes are up, workers
- get (and so pin) cubes other nodes published, found through the DHT,
- publish new pinned cubes (the real `memnet publish`, then `memnet announce`'s control call),
- unpin one of their fetched cubes now and then, and run `memnet gc`.
Every operation's outcome is counted: done, failed (and why), or cut short by a kill.

Afterwards, every node up again and settled:
- no pin is lost: every cube a node pinned and did not unpin is still pinned in its store;
- every pinned cube can be got from the swarm by a node that joins fresh;
- every store opens and every cube in it verifies chunk by chunk (daemons stopped);
- staged chunks left by fetches a kill cut short: how many, whether a later get of the same
  cube took them over, and that GC reclaims the rest once the staging grace has passed.
Exit status 1 if a pin was lost, a pinned cube could not be got, or a store did not verify.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_swarm import Children, write_daemon_config  # noqa: E402
from validate_sim import start_swarm  # noqa: E402

from memnet import home as home_mod  # noqa: E402
from memnet.cube import cid, payloads  # noqa: E402
from memnet.daemon.control import ControlClient  # noqa: E402
from memnet.store import Store, gc  # noqa: E402

print = functools.partial(print, flush=True)  # noqa: A001
KIB = 1024


def cli(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "MEMNET_HOME": str(home)})


def notes(path: Path, rng: random.Random, size: int) -> Path:
    path.write_text("\n\n".join(rng.randbytes(16 * KIB).hex() for _ in range(max(1, size // (32 * KIB)))))
    return path


class Swarm:
    """The daemons, which are up, and the ground truth of what each pinned."""

    def __init__(self, root: Path, n: int):
        self.root, self.children = root, Children(root)
        self.names = [f"node{i:02d}" for i in range(n)]
        self.homes = [root / name for name in self.names]
        self.states: list = [None] * n
        self.up = [False] * n
        self.lock = threading.Lock()
        self.pinned: list[set[bytes]] = [set() for _ in range(n)]     # what each node must still pin
        self.published: list[bytes] = []                             # every cube published (for gets)
        self.owner: dict[bytes, int] = {}                            # cube -> the node that published it
        self.outcomes: Counter = Counter()
        self.failures: list[str] = []
        self.cut: list[tuple[int, bytes]] = []                       # gets a kill cut short: (node, cube)

    def client(self, i: int) -> ControlClient:
        return ControlClient(self.states[i])

    def live(self, rng: random.Random, but: int | None = None) -> int | None:
        with self.lock:
            choices = [i for i, ok in enumerate(self.up) if ok and i != but]
        return rng.choice(choices) if choices else None

    def record(self, what: str, outcome: str, detail: str = "") -> None:
        with self.lock:
            self.outcomes[(what, outcome)] += 1
            if outcome == "failed" and len(self.failures) < 40:
                self.failures.append(f"{what}: {detail[:200]}")

    def kill(self, i: int) -> None:
        with self.lock:
            self.up[i] = False
        os.kill(self.states[i].pid, signal.SIGKILL)
        self.children.procs[self.names[i]][0].wait()
        del self.children.procs[self.names[i]]

    def restart(self, victims: list[int], boot: str) -> None:
        """Start them all, then wait for each: they come back together, as after a power cut."""
        for i in victims:
            listen = self.states[i].addrs[0].split("/p2p/")[0]   # its own port, as memnet's fixed default gives
            self.children.daemon(self.names[i], self.homes[i], "--bootstrap", boot, listen=listen)
        for i in victims:
            self.states[i] = self.children.wait_state(self.names[i], self.homes[i], timeout=120)
            with self.lock:
                self.up[i] = True


def worker(swarm: Swarm, stop: threading.Event, seed: int, work: Path) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        i = swarm.live(rng)
        if i is None:
            time.sleep(0.5)
            continue
        roll = rng.random()
        try:
            if roll < 0.6:                                  # get a cube another node published
                with swarm.lock:
                    mine = swarm.pinned[i]
                    wanted = [c for c in swarm.published if c not in mine]
                if not wanted:
                    continue
                cube = rng.choice(wanted)
                try:
                    swarm.client(i).call("get", timeout=60, cube=cube)
                    with swarm.lock:
                        swarm.pinned[i].add(cube)
                    swarm.record("get", "done")
                except Exception as exc:
                    if not swarm.up[i]:
                        with swarm.lock:
                            swarm.cut.append((i, cube))
                        swarm.record("get", "cut by a kill")
                    else:
                        swarm.record("get", "failed", f"{type(exc).__name__}: {exc}")
            elif roll < 0.8:                                # publish a new pinned cube
                path = notes(work / f"n{i}-{rng.randrange(10**9)}.md", rng, rng.choice((16, 64, 300)) * KIB)
                done = cli(swarm.homes[i], "publish", str(path))
                if done.returncode != 0:
                    swarm.record("publish", "failed", done.stderr.strip())
                    continue
                cube = cid.from_text(done.stdout.strip())
                with swarm.lock:
                    swarm.pinned[i].add(cube)
                    swarm.published.append(cube)
                    swarm.owner[cube] = i
                # `memnet publish` announces through the running daemon; with it killed, the
                # cube is announced when the daemon starts again (every pinned cube is)
                swarm.record("publish", "done" if swarm.up[i] else "done, daemon down")
            elif roll < 0.9:                                # unpin a fetched cube
                with swarm.lock:
                    fetched = [c for c in swarm.pinned[i] if swarm.owner.get(c) != i]
                if not fetched:
                    continue
                cube = rng.choice(fetched)
                done = cli(swarm.homes[i], "unpin", cid.to_text(cube))
                if done.returncode == 0:
                    with swarm.lock:
                        swarm.pinned[i].discard(cube)
                    swarm.record("unpin", "done")
                else:
                    swarm.record("unpin", "failed", done.stderr.strip())
            else:                                           # garbage collection
                done = cli(swarm.homes[i], "gc")
                swarm.record("gc", "done" if done.returncode == 0 else "failed", done.stderr.strip())
        except Exception as exc:   # the campaign's own trouble: counted, never fatal
            swarm.record("worker", "failed", f"{type(exc).__name__}: {exc}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--duration", type=float, default=180)
    ap.add_argument("--every", type=float, default=8)
    ap.add_argument("--share", type=float, default=0.3)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--settle", type=float, default=20, help="seconds after the churn before the checks")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="memnet-churn-"))
    work = root / "files"
    work.mkdir()
    swarm = Swarm(root, args.nodes)
    row: dict = {"nodes": args.nodes, "duration_s": args.duration, "every_s": args.every, "share": args.share}
    try:
        for i, home in enumerate(swarm.homes):
            node = home_mod.init(home)
            write_daemon_config(node, mdns=False)
            for k in range(2):
                items = [{"text": f"node {i} cube {k} " + rng.randbytes(8 * KIB).hex()} for _ in range(8)]
                cube = node.publisher.publish("plaintext", payloads.encode_items(items), {"items": 8}).cube_id
                swarm.pinned[i].add(cube)
                swarm.published.append(cube)
                swarm.owner[cube] = i
            node.store.close()
        states, boot = start_swarm(swarm.children, [SimpleNamespace(home=h) for h in swarm.homes], swarm.names,
                                   0, args.nodes, None)
        for i, st in enumerate(states):
            swarm.states[i], swarm.up[i] = st, True
        print(f"{args.nodes} daemons up; {len(swarm.published)} cubes published and pinned; work in {root}")
        time.sleep(5)
        stop = threading.Event()
        workers = [threading.Thread(target=worker, args=(swarm, stop, args.seed * 100 + w, work), daemon=True)
                   for w in range(args.workers)]
        for t in workers:
            t.start()
        started, rounds, kills = time.time(), 0, 0
        while time.time() - started < args.duration:
            victims = rng.sample(range(1, args.nodes), max(1, round(args.share * (args.nodes - 1))))
            for i in victims:
                swarm.kill(i)
            kills += len(victims)
            time.sleep(1.0)
            swarm.restart(victims, boot)
            rounds += 1
            print(f"  {time.time() - started:5.0f} s: round {rounds}, killed and restarted {len(victims)}; "
                  f"so far {dict(swarm.outcomes)}")
            time.sleep(max(0.0, args.every - 1.0))
        stop.set()
        for t in workers:
            t.join(timeout=120)
        churn_s = time.time() - started
        print(f"churn over: {rounds} rounds, {kills} SIGKILLs in {churn_s:.0f} s; settling {args.settle:g} s")
        time.sleep(args.settle)

        # no pin lost
        lost = []
        for i, home in enumerate(swarm.homes):
            store = Store(str(home / "store"))
            try:
                node_pins = {e.cube_id for e in store.entries(pinned=True)}
            finally:
                store.close()
            lost += [(swarm.names[i], cid.to_text(c)) for c in swarm.pinned[i] - node_pins]
        # every pinned cube from the swarm, by a newcomer
        newcomer = home_mod.init(root / "newcomer")
        write_daemon_config(newcomer, mdns=False)
        newcomer.store.close()
        swarm.children.daemon("newcomer", newcomer.home, "--bootstrap", boot)
        fresh = ControlClient(swarm.children.wait_state("newcomer", newcomer.home, timeout=120))
        wanted = sorted(set().union(*swarm.pinned))
        unreachable = []
        t0 = time.time()
        for cube in wanted:
            try:
                fresh.call("get", timeout=60, cube=cube, pin=False)
            except Exception as exc:
                unreachable.append(f"{cid.to_text(cube)}: {exc}")
        got_s = time.time() - t0
        swarm.children.stop()
        # stores open, everything verifies; staged chunks of cut fetches
        bad, staged_left, resumed, reclaimed = [], 0, 0, 0
        for i, home in enumerate(swarm.homes):
            store = Store(str(home / "store"))
            try:
                for entry in store.entries():
                    try:
                        store.verify(entry.cube_id)
                    except Exception as exc:
                        bad.append(f"{swarm.names[i]} {cid.to_text(entry.cube_id)}: {exc}")
                staged = store._read(lambda txn: txn.stat(store._db["staged"])["entries"])
                staged_left += staged
                resumed += sum(1 for node, cube in swarm.cut if node == i and store.has(cube))
                store.clock = lambda: time.time() + gc.STAGING_GRACE + 1
                store.gc()
                after = store._read(lambda txn: txn.stat(store._db["staged"])["entries"])
                reclaimed += staged - after
                if after:
                    bad.append(f"{swarm.names[i]}: {after} staged chunk(s) left after GC past the grace")
            finally:
                store.close()
        row |= {"rounds": rounds, "sigkills": kills, "churn_s": churn_s,
                "outcomes": {f"{w}: {o}": n for (w, o), n in sorted(swarm.outcomes.items())},
                "failures": swarm.failures, "pins_checked": sum(len(p) for p in swarm.pinned), "pins_lost": lost,
                "pinned_cubes": len(wanted), "unreachable": unreachable, "newcomer_get_s": got_s,
                "stores_bad": bad, "cut_gets": len(swarm.cut), "cut_gets_completed_later": resumed,
                "staged_chunks_left": staged_left, "staged_reclaimed_by_gc": reclaimed}
        print("operations: " + ", ".join(f"{k} {v}" for k, v in row["outcomes"].items()))
        for failure in swarm.failures[:8]:
            print(f"  failed: {failure}")
        print(f"pins: {row['pins_checked']} checked, {len(lost)} lost {lost[:3]}")
        print(f"a newcomer got {len(wanted) - len(unreachable)} of the {len(wanted)} pinned cubes from the swarm "
              f"in {got_s:.0f} s; unreachable: {unreachable[:3]}")
        print(f"stores: all {args.nodes} opened; {len(bad)} problems {bad[:3]}")
        print(f"gets cut by a kill: {len(swarm.cut)}, of which {resumed} completed by a later get; staged chunks "
              f"left at the end {staged_left}, of them reclaimed by GC past the grace {reclaimed}")
    finally:
        swarm.children.stop()
    if args.json:
        args.json.write_text(json.dumps(row, indent=2, default=str) + "\n")
    finding = bool(row.get("pins_lost") or row.get("unreachable") or row.get("stores_bad")) or "rounds" not in row
    print("FINDINGS: see above" if finding else "no findings")
    return 1 if finding else 0


if __name__ == "__main__":
    raise SystemExit(main())
