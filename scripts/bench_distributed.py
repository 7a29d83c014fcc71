#!/usr/bin/env python
"""Benchmark (not a test): distributed inference through span servers on hivemind, with and without
a seed, against local generation, side by side in one run.

    .venv/bin/python scripts/bench_distributed.py [--prefix 2048] [--suffix 16] [--reps 3]
                                                  [--decode 32] [--dtype int8] [--models DIR] [--json PATH]

Four nodes on loopback (separate processes: a memnet daemon and its hivemind bridge each): the
client `a`, and span servers s1, s2, s3 serving SmolLM2-135M's layers [0, 10), [10, 20), [20, 30).
The prompt is --prefix tokens of this repo's docs + --suffix more. Measured from this process (the
client: embeddings and LM head here, every layer on the servers):
  local full       no servers: the whole prompt prefilled here (the baseline of every ratio)
  chain full       the whole prompt prefilled through the chain (no seed)
  chain seeded     a --dtype KV cube of the prefix, built on `a`, seeds each server's layers:
                   cold = the servers fetch their share of the cube first (a new cube each rep),
                   warm = they already hold it; only the suffix then runs through the chain
  decode           tokens/s of the next --decode tokens, chain vs local
  bytes moved      what each server fetched to seed, against the whole cube
Targets: seeded TTFT >= 10x the chain's full prefill; decode through the chain >= 0.6x local.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_swarm import BenchError, Children  # noqa: E402
from memnet import api  # noqa: E402
from memnet import home as home_mod  # noqa: E402
from memnet.daemon.control import ControlClient  # noqa: E402
from memnet.span.local_client import BridgeClient  # noqa: E402

SPANS = {"s1": "0:10", "s2": "10:20", "s3": "20:30"}
LISTEN = "/ip4/127.0.0.1/tcp/0"
TEXT_FILES = ("docs/MIP.md", "README.md", "docs/architecture.md", "memnet/net/fetch.py")


def bridge_ready(children: Children, name: str, home: Path, timeout: float = 180) -> dict:
    state = children.wait_state(name, home)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = ControlClient(state).call("bridge_status", timeout=10)
        if info.get("state") == "ready":
            return {**info, "state_obj": state}
        time.sleep(0.3)
    raise BenchError(f"the bridge of {name} did not get ready", name)


def wait_servers(home: Path, count: int, timeout: float = 60) -> list[dict]:
    """The span records a's bridge reads from the DHT, once there are count of them."""
    deadline = time.monotonic() + timeout
    while True:
        client = BridgeClient.for_home(home)
        try:
            found = client.servers()
        finally:
            client.close()
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise BenchError(f"only {len(found)} span servers found, {count} expected")
        time.sleep(0.5)


def corpus(loaded, n: int, offset: int = 0) -> list[int]:
    text = "\n\n".join((REPO / f).read_text() for f in TEXT_FILES)
    ids = loaded.encode(text)
    if len(ids) < n + offset:
        raise BenchError(f"the corpus has {len(ids)} tokens, {n + offset} needed")
    return ids[offset:offset + n]


def run(args, root: Path, children: Children) -> dict:
    homes = {name: home_mod.init(root / name) for name in ["a", *SPANS]}
    started = time.perf_counter()
    model, _ = homes["a"].models.pin("smollm2", print)
    for name in SPANS:
        homes[name].models.pin("smollm2")
    children.daemon("a", homes["a"].home, "--hivemind", "--hivemind-listen", LISTEN)
    a = bridge_ready(children, "a", homes["a"].home)
    for name, span in SPANS.items():
        children.daemon(name, homes[name].home, "--serve-blocks", span, "--hivemind-listen", LISTEN,
                        "--hivemind-peer", a["maddrs"][0], "--bootstrap", a["state_obj"].addrs[0])
    infos = {name: bridge_ready(children, name, homes[name].home) for name in SPANS}
    wait_servers(homes["a"].home, len(SPANS))
    print(f"4 nodes up in {time.perf_counter() - started:.1f} s; span servers: " + ", ".join(
        f"{n} [{s}) {infos[n]['layer_seconds'] * 1e3:.3f} ms/token/layer" for n, s in SPANS.items()))
    node = home_mod.open_node(homes["a"].home)
    loaded, _ = api.load(node)
    print(f"torch threads {__import__('torch').get_num_threads()}, {os.cpu_count()} cores, "
          f"{platform.processor() or platform.machine()}")

    rows = {"local": [], "chain": [], "cold": [], "warm": [], "moved": [], "cube_bytes": []}
    for rep in range(args.reps):
        prefix = corpus(loaded, args.prefix, offset=rep * 37)
        prompt = prefix + corpus(loaded, args.suffix, offset=args.prefix + rep * 37 + 1000)
        rows["local"].append(generate_ids(node, loaded, prompt, local=False))
        rows["chain"].append(generate_ids(node, loaded, prompt, local=False, distributed=True))
        cube, _ = build_cube(node, loaded, prefix, args.dtype)
        ControlClient(node_state(node)).call("announce", cubes=[cube.cube_id])
        cold = generate_ids(node, loaded, prompt, distributed=True, detail=True)
        warm = generate_ids(node, loaded, prompt, distributed=True)
        if cold[1]["reused"] != args.prefix:
            raise BenchError(f"the seeded run reused {cold[1]['reused']} tokens, not {args.prefix}: {cold[1]}")
        rows["cold"].append(cold[0])
        rows["warm"].append(warm)
        rows["moved"].append([h["fetched"] for h in cold[1]["route"]])
        rows["cube_bytes"].append(cube.manifest.size)
        print(f"  rep {rep + 1}: local {rows['local'][-1] * 1e3:.0f} ms, chain full {rows['chain'][-1] * 1e3:.0f} ms, "
              f"seeded cold {cold[0] * 1e3:.0f} ms, warm {warm * 1e3:.0f} ms; moved "
              + ", ".join(f"{m / 2**20:.1f}" for m in rows["moved"][-1]) + f" of {cube.manifest.size / 2**20:.1f} MiB")
    decode = {}
    prompt = corpus(loaded, 64)
    for label, kw in (("local", {"local": False}), ("chain", {"local": False, "distributed": True})):
        result = generate_ids(node, loaded, prompt, n=args.decode, result_wanted=True, **kw)
        tokens = len(result.new_ids) - 1
        decode[label] = tokens / max(1e-9, result.seconds - result.ttft)
    return {"rows": rows, "decode": decode}


def node_state(node):
    from memnet.daemon import state
    return state.read(node.home)


def build_cube(node, loaded, prefix: list[int], dtype: str):
    from memnet.model import generate
    return generate.build(node.publisher, node.perf, loaded, prefix, dtype)


def generate_ids(node, loaded, ids: list[int], detail: bool = False, n: int = 1, result_wanted: bool = False,
                 **kw):
    from memnet.model import generate as gen
    from memnet.model.distributed import generate_distributed

    options = gen.Options(max_new_tokens=n, use_local=kw.get("local", True), use_swarm=False)
    if kw.get("distributed"):
        chain = BridgeClient.for_home(node.home)
        try:
            result = generate_distributed(node.store, node.gate(), loaded, ids, options, chain, None,
                                          lambda c: api.seed_hints(node, None, c))
        finally:
            chain.close()
    else:
        result = gen.generate(node.store, node.gate(), node.perf, loaded, ids, options, None)
    if result_wanted:
        return result
    return (result.ttft, {"route": result.route, "reused": result.reused}) if detail else result.ttft


def report(out: dict, args) -> None:
    rows, med = out["rows"], statistics.median
    local, chain, cold, warm = (med(rows[k]) for k in ("local", "chain", "cold", "warm"))
    print(f"\nTTFT, prompt = {args.prefix} + {args.suffix} tokens, SmolLM2-135M, 3 span servers, median of {args.reps}"
          f" (ratio = baseline / this)")
    print(f"  {'local full prefill (baseline)':38} {local * 1e3:8.0f} ms")
    print(f"  {'chain, full prefill':38} {chain * 1e3:8.0f} ms   local/chain {local / chain:5.2f}")
    print(f"  {'chain, seeded (' + args.dtype + ' cube), cold':38} {cold * 1e3:8.0f} ms   chain full/this {chain / cold:6.1f}x"
          f"   local/this {local / cold:6.1f}x")
    print(f"  {'chain, seeded, warm (servers hold it)':38} {warm * 1e3:8.0f} ms   chain full/this {chain / warm:6.1f}x"
          f"   local/this {local / warm:6.1f}x")
    target = chain / cold >= 10
    print(f"  target seeded >= 10x chain full prefill: {'PASS' if target else 'FAIL'} (cold {chain / cold:.1f}x)")
    moved = [statistics.median(m[i] for m in rows["moved"]) for i in range(len(SPANS))]
    cube = statistics.median(rows["cube_bytes"])
    print("  bytes moved to seed per server (median): " + ", ".join(
        f"{n} {m / 2**20:.2f} MiB ({m / cube:.0%})" for n, m in zip(SPANS, moved)) + f" of a {cube / 2**20:.1f} MiB cube")
    d = out["decode"]
    print(f"decode: chain {d['chain']:.1f} tokens/s vs local {d['local']:.1f} tokens/s: "
          f"{d['chain'] / d['local']:.2f} (target >= 0.6: {'PASS' if d['chain'] / d['local'] >= 0.6 else 'FAIL'})")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, **out}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", type=int, default=2048)
    parser.add_argument("--suffix", type=int, default=16)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--decode", type=int, default=32)
    parser.add_argument("--dtype", default="int8", help="KV cube dtype of the seed")
    parser.add_argument("--models", type=Path, help="A models folder to reuse (else SmolLM2 is converted).")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="memnet-bench-dist-"))
    os.environ["MEMNET_MODELS"] = str(args.models or root / "models")
    children = Children(root)
    try:
        report(run(args, root, children), args)
    except BenchError as exc:
        print(f"error: {exc}")
        if exc.child:
            print(children.tail(exc.child))
        sys.exit(1)
    finally:
        children.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
