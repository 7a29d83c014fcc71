#!/usr/bin/env python
"""Campaign: fuzzing the Memory Interchange Protocol (reliability issue 17, item 1).

    .venv/bin/python scripts/campaign_fuzz.py sans-io [--runs 100000] [--seed 1] [--json PATH]
    .venv/bin/python scripts/campaign_fuzz.py live [--inputs 10000] [--concurrency 16] [--json PATH]

sans-io: coverage-guided fuzzing (atheris, libFuzzer's engine) of the sans-IO MIP decoder and both
session state machines (tests/fuzz_targets.py: the server's request side, a client waiting on one
request of each kind, the frame decoder, bare frame bodies incl. the chunk fast path), starting
from valid streams of every message type and cut byte-at-a-time to whole. A finding is any
exception other than a memnet error, or a decoder holding more than one frame of its limit.
Reported: inputs run, time, coverage, outcomes, message types decoded, peak RSS.

live: a real provider daemon (its own process) on loopback, and fuzzed MIP streams from this
process over real libp2p connections (Noise, yamux), a new identity every few hundred inputs:
mutated requests, garbage, truncated and oversized frames, replies sent as requests (the wrong
order), unknown message types, valid requests, byte-at-a-time writes, pipelined floods. Meanwhile
an honest daemon gets 1 MiB cubes from the provider, one every --pause seconds, and `status` is asked every
0.25 s. Reported: how each input ended, the honest gets' times before/during/after, status
latency p50/p99, the provider's peak RSS, and every traceback in its log (a finding).

Exit status 1 on a finding (a crash, a traceback, a failed honest get, the provider gone).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

print = functools.partial(print, flush=True)  # noqa: A001
MIB = 1 << 20


# -- sans-IO, coverage-guided ------------------------------------------------------------------

def atheris_child(argv: list[str]) -> None:
    """Runs inside the fuzzing child: libFuzzer owns the process and exits it when done."""
    import atheris

    with atheris.instrument_imports(include=["memnet"]):
        from tests import fuzz_targets
    stats_path, outcomes, runs = os.environ["CAMPAIGN_STATS"], Counter(), 0

    def test_one_input(data: bytes) -> None:
        nonlocal runs
        outcomes[fuzz_targets.one_input(data)] += 1
        runs += 1
        if runs % 2000 == 0:
            Path(stats_path).write_text(json.dumps({"runs": runs, "outcomes": outcomes,
                                                    "seen": fuzz_targets.SEEN}))

    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


def sans_io(args) -> dict:
    from tests import fuzz_targets

    root = Path(tempfile.mkdtemp(prefix="memnet-fuzz-"))
    corpus = root / "corpus"
    corpus.mkdir()
    for i, seed in enumerate(fuzz_targets.seeds()):
        (corpus / f"seed-{i:03}").write_bytes(seed)
    stats = root / "stats.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "_atheris", f"-runs={args.runs}", f"-seed={args.seed}",
           "-max_len=70000", "-rss_limit_mb=2048", "-timeout=20", "-print_final_stats=1",
           f"-artifact_prefix={root}/", str(corpus)]
    print(f"sans-io: {args.runs} inputs, seed {args.seed}, {len(fuzz_targets.seeds())} seeds; work in {root}")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, "CAMPAIGN_STATS": str(stats)},
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    log = proc.stderr
    (root / "libfuzzer.log").write_text(log)
    done = re.search(r"Done (\d+) runs in (\d+) second", log)
    finals = dict(re.findall(r"stat::(\w+):\s+(\d+)", log))
    cov = re.findall(r"cov: (\d+) ft: (\d+) corp: (\d+)", log)
    crashes = sorted(p.name for p in root.iterdir() if p.name.startswith(("crash-", "oom-", "timeout-", "leak-")))
    partial = json.loads(stats.read_text()) if stats.exists() else {"outcomes": {}, "seen": {}}
    row = {"mode": "sans-io", "runs": int(done.group(1)) if done else int(finals.get("number_of_executed_units", 0)),
           "seconds": seconds, "exit": proc.returncode, "crashes": crashes,
           "coverage_edges": int(cov[-1][0]) if cov else None, "features": int(cov[-1][1]) if cov else None,
           "corpus": int(cov[-1][2]) if cov else None, "peak_rss_mb": int(finals.get("peak_rss_mb", 0)),
           "outcomes": partial["outcomes"], "message_types_decoded": partial["seen"], "work": str(root)}
    print(f"  {row['runs']} inputs in {seconds:.0f} s ({row['runs'] / seconds:.0f}/s); libFuzzer exit "
          f"{proc.returncode}; coverage {row['coverage_edges']} edges, {row['features']} features, corpus "
          f"{row['corpus']}; peak RSS {row['peak_rss_mb']} MB")
    print(f"  outcomes (of the first {sum(partial['outcomes'].values())}): {dict(partial['outcomes'])}")
    print(f"  message types decoded: {dict(sorted(partial['seen'].items()))}")
    if crashes or proc.returncode != 0:
        print("  FINDING: " + (", ".join(crashes) or "libFuzzer exited non-zero") + "\n" + log[-3000:])
    return row


# -- live, against a daemon over real libp2p streams -------------------------------------------

def _mutate(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        if op == 0 and data:                       # flip a bit
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1 and data:                     # set a byte to an edge value
            data[rng.randrange(len(data))] = rng.choice((0, 0x7F, 0x80, 0xC0, 0xFF, rng.randrange(256)))
        elif op == 2:                              # insert random bytes
            i = rng.randrange(len(data) + 1)
            data[i:i] = rng.randbytes(rng.randint(1, 16))
        elif op == 3 and data:                     # cut a run out
            i = rng.randrange(len(data))
            del data[i:i + rng.randint(1, 16)]
        elif op == 4 and data:                     # repeat a run
            i = rng.randrange(len(data))
            data[i:i] = data[i:i + rng.randint(1, 64)]
        elif data:                                 # truncate
            del data[rng.randrange(len(data)):]
    return bytes(data)


def live_inputs(rng: random.Random, n: int, cube_id: bytes, chunk_ids: list[bytes]) -> list[tuple[str, bytes]]:
    """n (category, bytes) pairs. Requests name the provider's real cube, so the valid ones are
    served (manifest, chunks) and the mutated ones start from a frame the server acts on."""
    from memnet.cube import canonical
    from memnet.net import frames, session, wire

    from tests import fuzz_targets

    def frame(m) -> bytes:
        return wire.encode_frame(m)

    def request(rid: int) -> bytes:
        kind = rng.randrange(4)
        if kind == 0:
            return frame(wire.get_manifest(rid, rng.choice((cube_id, fuzz_targets.CUBE))))
        if kind == 1:
            return frame(wire.get_chunks(rid, cube_id, rng.sample(chunk_ids, rng.randint(1, min(4, len(chunk_ids))))))
        if kind == 2:
            return frame(wire.get_have(rid, cube_id))
        return frame(wire.get_prefix(rid, rng.randbytes(32)))

    replies = [s[2:] for s in fuzz_targets.seeds() if s[0] == 1]
    weights = {"mutated": 40, "garbage": 8, "truncated": 10, "oversized": 5, "reply as request": 10,
               "unknown type": 5, "valid": 12, "byte at a time": 4, "pipelined flood": 6}
    categories = rng.choices(list(weights), list(weights.values()), k=n)
    out = []
    for category in categories:
        if category == "mutated":
            data = _mutate(rng, b"".join(request(i) for i in range(1, rng.randint(2, 4))))
        elif category == "garbage":
            data = rng.randbytes(rng.randint(0, 2048))
        elif category == "truncated":
            whole = request(1)
            data = whole[:rng.randrange(len(whole))]
        elif category == "oversized":
            data = frames.varint(rng.choice((session.MAX_REQUEST_FRAME + 1, wire.MAX_FRAME + 1, 2**40))) + rng.randbytes(64)
        elif category == "reply as request":
            data = rng.choice(replies)
        elif category == "unknown type":
            body = canonical.encode({"t": rng.choice(("bogus", "get_everything", "GET_MANIFEST")), "id": 1})
            data = frames.varint(len(body)) + body
        elif category == "valid":
            data = b"".join(request(i) for i in range(1, rng.randint(2, 5)))
        elif category == "byte at a time":
            data = request(1)
        else:
            data = b"".join(frame(wire.get_have(i, cube_id)) for i in range(1, 101))
        out.append((category, data))
    return out


def classify(data: bytes) -> str:
    """What the provider answered: the first frame's type (an error's code), or silence."""
    from memnet.errors import MemnetError
    from memnet.net import wire

    if not data:
        return "no answer in 1 s, or closed"
    decoder = wire.FrameDecoder()
    decoder.feed(data)
    try:
        message = decoder.next()
    except MemnetError:
        return "unparsable answer"   # an honest server never sends one: counted as a finding
    if message is None:
        return "a frame cut off"
    return f"error {message.code}" if message.t == "error" else f"{message.t}"


async def fuzz_streams(provider: str, inputs: list[tuple[str, bytes]], concurrency: int, per_identity: int,
                       results: Counter, progress) -> None:
    import multiaddr
    import trio
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from memnet.net import wire
    from memnet.net.host import build_host, peer_info

    info = peer_info(provider)
    local = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]

    async def one(host, category: str, data: bytes, limit: trio.Semaphore) -> None:
        async with limit:
            stream = None
            try:
                with trio.fail_after(5):
                    stream = await host.new_stream(info.peer_id, [wire.PROTOCOL_ID])
                if category == "byte at a time":
                    for i in range(len(data)):
                        await stream.write(data[i:i + 1])
                        await trio.sleep(0.002)
                elif data:
                    await stream.write(data)
                got = b""
                with trio.move_on_after(1.0):
                    try:
                        while len(got) < 2 * MIB:   # room for a whole chunk frame
                            piece = await stream.read(65536)
                            if not piece:
                                break
                            got += piece
                    except Exception:   # reset after its answer: what came before still counts
                        pass
                answer = classify(got)
            except trio.TooSlowError:
                answer = "stream not opened in 5 s"
            except Exception as exc:   # the provider reset or refused: how it ended, not a finding
                answer = f"{type(exc).__name__}"
            finally:
                if stream is not None:
                    with trio.move_on_after(2):
                        try:
                            await stream.reset()
                        except Exception:
                            pass
            results[(category, answer)] += 1
            progress()

    for start in range(0, len(inputs), per_identity):
        host = build_host(Ed25519PrivateKey.generate())
        async with host.run(local):
            await host.connect(info)
            limit = trio.Semaphore(concurrency)
            async with trio.open_nursery() as nursery:
                for category, data in inputs[start:start + per_identity]:
                    nursery.start_soon(one, host, category, data, limit)


class StatusProbe(threading.Thread):
    """Asks a daemon for `status` every `every` seconds; keeps each latency."""

    def __init__(self, state, every: float = 0.25):
        super().__init__(daemon=True)
        from memnet.daemon.control import ControlClient

        self.client, self.every, self.stop = ControlClient(state), every, threading.Event()
        self.latencies: list[float] = []
        self.failures = 0

    def run(self) -> None:
        while not self.stop.is_set():
            t0 = time.perf_counter()
            try:
                self.client.call("status", timeout=30)
                self.latencies.append(time.perf_counter() - t0)
            except Exception:
                self.failures += 1
            self.stop.wait(self.every)


class HonestFetcher(threading.Thread):
    """Gets the given cubes from the provider one after another (a pause between), timing each."""

    def __init__(self, state, cubes: list[bytes], provider, pause: float = 1.5):
        super().__init__(daemon=True)
        from memnet.daemon.control import ControlClient

        self.client, self.cubes, self.provider, self.pause = ControlClient(state), list(cubes), provider, pause
        self.stop = threading.Event()
        self.times: list[float] = []
        self.failures: list[str] = []

    def get_one(self) -> None:
        cube = self.cubes.pop(0)
        t0 = time.perf_counter()
        try:
            self.client.call("get", timeout=120, cube=cube, wait_announce=False,
                             providers=[{"peer_id": self.provider.peer_id, "addrs": self.provider.addrs}])
            self.times.append(time.perf_counter() - t0)
        except Exception as exc:
            self.failures.append(f"{type(exc).__name__}: {exc}")

    def run(self) -> None:
        while not self.stop.is_set() and self.cubes:
            self.get_one()
            self.stop.wait(self.pause)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def live(args) -> dict:
    import trio

    from bench_memory import Sampler, rss
    from bench_swarm import LOOPBACK, Children, write_daemon_config
    from memnet import home as home_mod
    from memnet.cube import payloads

    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="memnet-fuzz-live-"))
    children = Children(root)
    try:
        provider, fetcher = home_mod.init(root / "provider"), home_mod.init(root / "fetcher")
        honest = []
        for i in range(args.honest_cubes):
            texts = [rng.randbytes(MIB // 8 - 64).hex() for _ in range(4)]   # 1 MiB of text
            honest.append(provider.publisher.publish("plaintext", payloads.encode_items([{"text": t} for t in texts]),
                                                     {"items": 4}).cube_id)
        target = provider.store.manifest(honest[0])
        for node in (provider, fetcher):
            write_daemon_config(node, listen=[LOOPBACK], mdns=False)
            node.store.close()
        children.daemon("provider", provider.home)
        pstate = children.wait_state("provider", provider.home)
        children.daemon("fetcher", fetcher.home)
        fstate = children.wait_state("fetcher", fetcher.home)
        time.sleep(2.0)
        idle = rss(pstate.pid)
        sampler, probe = Sampler(pstate.pid), StatusProbe(pstate)
        kept_for_after = honest[-args.before:]
        gets = HonestFetcher(fstate, honest[1:-args.before], pstate, args.pause)
        sampler.start()
        for _ in range(args.before):
            gets.get_one()
        before = list(gets.times)
        inputs = live_inputs(rng, args.inputs, honest[0], list(target.chunks))
        results: Counter = Counter()
        done = [0]
        t_start = time.perf_counter()

        def progress() -> None:
            done[0] += 1
            if done[0] % 1000 == 0:
                print(f"  {done[0]} inputs, {time.perf_counter() - t_start:.0f} s; provider RSS "
                      f"{rss(pstate.pid)['VmRSS'] / 1e6:.0f} MB; honest gets so far {len(gets.times)}")

        print(f"live: {args.inputs} inputs, {args.concurrency} streams at once, a new identity every "
              f"{args.per_identity}; provider {pstate.peer_id}; work in {root}")
        probe.start()
        gets.start()
        trio.run(fuzz_streams, pstate.addrs[0], inputs, args.concurrency, args.per_identity, results, progress)
        fuzz_seconds = time.perf_counter() - t_start
        gets.stop.set()
        gets.join()
        during = gets.times[len(before):]
        after_start = len(gets.times)
        gets.cubes = kept_for_after
        for _ in range(args.before):
            gets.get_one()
        after = gets.times[after_start:]
        probe.stop.set()
        probe.join()
        time.sleep(1.0)
        sampler.stop.set()
        sampler.join()
        alive = children.procs["provider"][0].poll() is None
        log = children.procs["provider"][1].read_text(errors="replace")
        tracebacks = log.count("Traceback")
        row = {
            "mode": "live", "inputs": args.inputs, "seconds": fuzz_seconds, "provider_alive": alive,
            "tracebacks_in_log": tracebacks, "unparsable_answers": sum(v for (c, a), v in results.items() if a == "unparsable answer"),
            "outcomes": {f"{c} -> {a}": v for (c, a), v in sorted(results.items())},
            "rss_idle_mb": idle["VmRSS"] / 1e6, "rss_peak_mb": sampler.peak["VmRSS"] / 1e6,
            "anon_idle_mb": idle["RssAnon"] / 1e6, "anon_peak_mb": sampler.peak["RssAnon"] / 1e6,
            "status_n": len(probe.latencies), "status_failures": probe.failures,
            "status_p50_ms": 1000 * percentile(probe.latencies, 0.5), "status_p99_ms": 1000 * percentile(probe.latencies, 0.99),
            "honest_before_s": before, "honest_during_s": during, "honest_after_s": after,
            "honest_failures": gets.failures, "work": str(root),
        }
        print(f"  {args.inputs} inputs in {fuzz_seconds:.0f} s ({args.inputs / fuzz_seconds:.0f}/s); provider alive: "
              f"{alive}; tracebacks in its log: {tracebacks}")
        by_category: dict[str, Counter] = {}
        for (category, answer), count in results.items():
            by_category.setdefault(category, Counter())[answer] += count
        for category, answers in sorted(by_category.items()):
            print(f"    {category:17} {sum(answers.values()):5}: " + ", ".join(f"{a} {n}" for a, n in answers.most_common()))
        print(f"  provider RSS idle {row['rss_idle_mb']:.0f} MB, peak {row['rss_peak_mb']:.0f} MB "
              f"(anonymous {row['anon_idle_mb']:.0f} -> {row['anon_peak_mb']:.0f} MB)")
        print(f"  status: {row['status_n']} asked, p50 {row['status_p50_ms']:.1f} ms, p99 {row['status_p99_ms']:.1f} ms, "
              f"{probe.failures} failed")

        def spread(times: list[float]) -> str:
            return f"{len(times)} gets, median {statistics.median(times):.3f} s, max {max(times):.3f} s" if times else "none"

        print(f"  honest 1 MiB gets: before {spread(before)}; during {spread(during)}; after {spread(after)}; "
              f"failed {len(gets.failures)} {gets.failures[:3]}")
        return row
    finally:
        children.stop()


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_atheris":
        atheris_child([sys.argv[0], *sys.argv[2:]])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("sans-io")
    s.add_argument("--runs", type=int, default=100_000)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--json", type=Path)
    lv = sub.add_parser("live")
    lv.add_argument("--inputs", type=int, default=10_000)
    lv.add_argument("--concurrency", type=int, default=16)
    lv.add_argument("--per-identity", type=int, default=500)
    lv.add_argument("--honest-cubes", type=int, default=300)
    lv.add_argument("--pause", type=float, default=1.5, help="seconds between two honest gets")
    lv.add_argument("--before", type=int, default=3, help="honest gets before the fuzzing and after it")
    lv.add_argument("--seed", type=int, default=1)
    lv.add_argument("--json", type=Path)
    args = ap.parse_args()
    row = sans_io(args) if args.mode == "sans-io" else live(args)
    if args.json:
        args.json.write_text(json.dumps(row, indent=2, default=str) + "\n")
    if row["mode"] == "sans-io":
        finding = bool(row["crashes"]) or row["exit"] != 0 or row["runs"] < args.runs
    else:
        finding = (not row["provider_alive"] or row["tracebacks_in_log"] or row["unparsable_answers"]
                   or row["honest_failures"] or not row["honest_during_s"])
    print("FINDINGS: see above" if finding else "no findings")
    return 1 if finding else 0


if __name__ == "__main__":
    raise SystemExit(main())
