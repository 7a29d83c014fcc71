#!/usr/bin/env python
"""Campaign: load on one provider (reliability issue 17, item 2).

    .venv/bin/python scripts/campaign_load.py [--fetchers 50] [--big-mib 64] [--small 1000]
                                              [--small-kib 64] [--small-per-fetcher 40] [--no-pin] [--json PATH]

Real daemons on loopback, each its own process: one provider and --fetchers fetchers, joined in
one DHT (each get names the provider, so no lookup finds it; but as in any memnet swarm each
fetcher checks a fetched cube for a revocation and announces what it pinned, both in the DHT:
--no-pin leaves the announcement out, to show its share). Two phases:

big:   the provider holds one --big-mib parameter cube; every fetcher is asked to get it at the
       same moment. Reported: each get's completion time (min / median / max: the spread across
       fetchers), the provider's peak RSS, and `status` latency on the provider (p50 / p99, asked
       every 0.25 s) during the load. Afterwards every fetcher's store is opened and the cube
       verified chunk by chunk against its CIDs.
small: the provider holds --small cubes of --small-kib each (plaintext, nothing shared); each
       fetcher gets --small-per-fetcher of them one after another, all fetchers at once (a
       different slice each, so every cube is fetched by several). Per-request costs: gets per
       second in all, per-get latency p50 / p99, provider RSS, status latency.

Exit status 1 if a get failed, a cube did not verify, or a daemon died.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_memory import Sampler, rss  # noqa: E402
from bench_swarm import LOOPBACK, Children, lora_cube_args, write_daemon_config  # noqa: E402
from campaign_fuzz import StatusProbe, percentile  # noqa: E402

from memnet import home as home_mod  # noqa: E402
from memnet.cube import payloads  # noqa: E402
from memnet.daemon.control import ControlClient  # noqa: E402
from memnet.store import Store  # noqa: E402

print = functools.partial(print, flush=True)  # noqa: A001
MIB = 1 << 20


def start_swarm(root: Path, children: Children, fetchers: int, wave: int = 5, verbose: bool = False):
    """The provider (already initialised at root/provider) and fetcher daemons, started a wave
    at a time (each imports libp2p: 2 cores are busy for a second or two per daemon)."""
    children.daemon("provider", root / "provider", *(["--verbose"] if verbose else []))
    provider = children.wait_state("provider", root / "provider")
    states = []
    for start in range(0, fetchers, wave):
        names = []
        for i in range(start, min(fetchers, start + wave)):
            node = home_mod.init(root / f"fetcher-{i:02}")
            write_daemon_config(node, listen=[LOOPBACK], mdns=False)
            node.store.close()
            children.daemon(f"fetcher-{i:02}", node.home, *(["--verbose"] if verbose else []))
            names.append(f"fetcher-{i:02}")
        states += [children.wait_state(n, root / n, timeout=120) for n in names]
    return provider, states


PIN = True   # --no-pin: fetchers neither pin nor announce what they get


def get(state, provider, cube: bytes) -> float:
    t0 = time.perf_counter()
    ControlClient(state).call("get", timeout=600, cube=cube, wait_announce=False, pin=PIN,
                              providers=[{"peer_id": provider.peer_id, "addrs": provider.addrs}])
    return time.perf_counter() - t0


def measured(provider_pid: int, provider_state, work) -> tuple[object, dict]:
    """Run work() while sampling the provider's RSS and status latency."""
    idle = rss(provider_pid)
    sampler, probe = Sampler(provider_pid), StatusProbe(provider_state)
    sampler.start()
    probe.start()
    try:
        result = work()
    finally:
        probe.stop.set()
        sampler.stop.set()
        probe.join()
        sampler.join()
    return result, {
        "provider_rss_idle_mb": idle["VmRSS"] / 1e6, "provider_rss_peak_mb": sampler.peak["VmRSS"] / 1e6,
        "provider_anon_idle_mb": idle["RssAnon"] / 1e6, "provider_anon_peak_mb": sampler.peak["RssAnon"] / 1e6,
        "status_n": len(probe.latencies), "status_failures": probe.failures,
        "status_p50_ms": 1000 * percentile(probe.latencies, 0.5),
        "status_p99_ms": 1000 * percentile(probe.latencies, 0.99),
        "status_max_ms": 1000 * max(probe.latencies, default=float("nan")),
    }


def report(label: str, row: dict) -> None:
    print(f"  provider RSS idle {row['provider_rss_idle_mb']:.0f} MB, peak {row['provider_rss_peak_mb']:.0f} MB "
          f"(anonymous {row['provider_anon_idle_mb']:.0f} -> {row['provider_anon_peak_mb']:.0f} MB)")
    print(f"  status during {label}: {row['status_n']} asked, p50 {row['status_p50_ms']:.1f} ms, "
          f"p99 {row['status_p99_ms']:.1f} ms, max {row['status_max_ms']:.1f} ms, {row['status_failures']} failed")


def big_phase(states, provider, pid: int, cube: bytes, size: int) -> dict:
    failures: list[str] = []

    def one(state) -> float | None:
        try:
            return get(state, provider, cube)
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
            return None

    def work():
        barrier = threading.Barrier(len(states))

        def started(state):
            barrier.wait()
            return one(state)

        t0 = time.perf_counter()
        with ThreadPoolExecutor(len(states)) as pool:
            times = list(pool.map(started, states))
        return times, time.perf_counter() - t0

    (times, wall), row = measured(pid, provider, work)
    done = sorted(t for t in times if t is not None)
    row |= {"phase": "big", "fetchers": len(states), "cube_mib": size / MIB, "wall_s": wall, "failures": failures,
            "get_s_min": done[0] if done else None, "get_s_median": statistics.median(done) if done else None,
            "get_s_max": done[-1] if done else None, "get_s_all": done,
            "aggregate_mib_s": len(done) * size / MIB / wall}
    print(f"big: {len(done)} of {len(states)} fetchers got the {size / MIB:.0f} MiB cube in {wall:.1f} s "
          f"({row['aggregate_mib_s']:.0f} MiB/s out of the provider); each get {row['get_s_min']:.1f} / "
          f"{row['get_s_median']:.1f} / {row['get_s_max']:.1f} s (min / median / max); failed {len(failures)} {failures[:2]}")
    report("the big gets", row)
    return row


def small_phase(states, provider, pid: int, cubes: list[bytes], per_fetcher: int, size: int) -> dict:
    failures: list[str] = []
    latencies: list[float] = []
    lock = threading.Lock()

    def fetcher(index_state):
        index, state = index_state
        start = index * len(cubes) // len(states)
        mine = [cubes[(start + k) % len(cubes)] for k in range(per_fetcher)]
        for cube in mine:
            try:
                seconds = get(state, provider, cube)
                with lock:
                    latencies.append(seconds)
            except Exception as exc:
                with lock:
                    failures.append(f"{type(exc).__name__}: {exc}")

    def work():
        t0 = time.perf_counter()
        with ThreadPoolExecutor(len(states)) as pool:
            list(pool.map(fetcher, enumerate(states)))
        return time.perf_counter() - t0

    wall, row = measured(pid, provider, work)
    row |= {"phase": "small", "fetchers": len(states), "cubes": len(cubes), "cube_kib": size / 1024,
            "gets": len(latencies), "failures": failures, "wall_s": wall, "gets_per_s": len(latencies) / wall,
            "get_ms_p50": 1000 * percentile(latencies, 0.5), "get_ms_p99": 1000 * percentile(latencies, 0.99)}
    print(f"small: {len(latencies)} gets of {size // 1024} KiB cubes ({len(cubes)} distinct) by {len(states)} fetchers "
          f"in {wall:.1f} s: {row['gets_per_s']:.0f} gets/s; each get p50 {row['get_ms_p50']:.0f} ms, p99 "
          f"{row['get_ms_p99']:.0f} ms; failed {len(failures)} {failures[:2]}")
    report("the small gets", row)
    return row


def verify_all(root: Path, fetchers: int, cubes_by_fetcher: dict[int, list[bytes]]) -> list[str]:
    """Open every fetcher's store (daemons stopped) and verify what it got, chunk by chunk."""
    problems = []
    for i in range(fetchers):
        store = Store(str(root / f"fetcher-{i:02}" / "store"))
        try:
            for cube in cubes_by_fetcher.get(i, []):
                try:
                    store.verify(cube)
                except Exception as exc:
                    problems.append(f"fetcher-{i:02}: {type(exc).__name__}: {exc}")
        finally:
            store.close()
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fetchers", type=int, default=50)
    ap.add_argument("--big-mib", type=int, default=64)
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--small-kib", type=int, default=64)
    ap.add_argument("--small-per-fetcher", type=int, default=40)
    ap.add_argument("--no-pin", action="store_true",
                    help="fetchers do not pin, so do not announce, what they get (the DHT's share of a get)")
    ap.add_argument("--skip-big", action="store_true")
    ap.add_argument("--verbose", action="store_true", help="daemons log libp2p's own messages too")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    global PIN
    PIN = not args.no_pin
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="memnet-load-"))
    children = Children(root)
    rows = []
    try:
        provider_node = home_mod.init(root / "provider")
        t0 = time.perf_counter()
        big = provider_node.publisher.publish("parameter", *lora_cube_args(args.big_mib * MIB, seed=3)).cube_id
        big_size = provider_node.store.manifest(big).size
        small = []
        for _ in range(args.small):
            text = rng.randbytes(args.small_kib * 512 - 64).hex()   # args.small_kib KiB of text
            small.append(provider_node.publisher.publish("plaintext", payloads.encode_items([{"text": text}]),
                                                         {"items": 1}).cube_id)
        small_size = provider_node.store.manifest(small[0]).size
        write_daemon_config(provider_node, listen=[LOOPBACK], mdns=False)
        provider_node.store.close()
        print(f"provider: one {big_size / MIB:.0f} MiB parameter cube and {args.small} plaintext cubes of "
              f"{small_size / 1024:.0f} KiB, published in {time.perf_counter() - t0:.0f} s (untimed); work in {root}")
        t0 = time.perf_counter()
        provider, states = start_swarm(root, children, args.fetchers, verbose=args.verbose)
        pid = children.procs["provider"][0].pid
        print(f"{args.fetchers} fetcher daemons started in {time.perf_counter() - t0:.0f} s")
        time.sleep(2.0)
        if not args.skip_big:
            rows.append(big_phase(states, provider, pid, big, big_size))
        if args.small:
            rows.append(small_phase(states, provider, pid, small, args.small_per_fetcher, small_size))
        dead = children.dead()
        children.stop()
        got = {}
        for i in range(args.fetchers):
            start = i * len(small) // args.fetchers
            got[i] = ([] if args.skip_big else [big]) + [small[(start + k) % len(small)] for k in range(args.small_per_fetcher)]
        t0 = time.perf_counter()
        problems = verify_all(root, args.fetchers, got)
        checked = sum(len(v) for v in got.values())
        print(f"verified {checked} stored cubes in the {args.fetchers} fetchers' stores in "
              f"{time.perf_counter() - t0:.0f} s: {len(problems)} problems {problems[:3]}; daemons that died: {dead}")
        rows.append({"phase": "verify", "checked": checked, "problems": problems, "dead": dead})
    finally:
        children.stop()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    failed = any(r.get("failures") for r in rows) or rows[-1].get("problems") or rows[-1].get("dead")
    print("FINDINGS: see above" if failed else "no findings")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
