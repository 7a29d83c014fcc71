#!/usr/bin/env python
"""Benchmark (not a test): time to first token (TTFT) on SmolLM2-135M-Instruct with a KV cube
against a full prefill, side by side in one run.

    .venv/bin/python scripts/bench_kv.py [--lengths 512,1024,2048] [--suffix 16] [--reps 3]
                                         [--dtypes float16,int8] [--models DIR] [--json PATH]

For each prefix length N, the prompt is N prefix tokens + --suffix more (token ids of this repo's
docs, so every length is real text). Three ways to the first token of the same prompt, all with
the same loaded model in this process and memnet.model.generate.generate (max_new_tokens=1):
  full   no reuse: prefill all N+suffix tokens;
  local  node A holds the activation cube of the N-token prefix (one per --dtypes): look it
         up in LMDB, read and check the payload, rebuild the cache, prefill the suffix;
  peer   node B does not hold it: local lookup (miss), then through B's daemon (a separate
         process) a swarm lookup (DHT provider records for the prompt's prefix keys, then MIP
         get_prefix and the manifest from the provider), B's fetch-or-recompute decision from
         its own measured prefill and bandwidth, the fetch from node A's daemon (another
         process, loopback), then load + suffix as local. Before each peer run B unpins and
         GCs the cube, so every run fetches every byte. After each peer run the bench waits
         SETTLE s: B's daemon announces a fetched prefix (and looks up its revocation) 2 s after
         the fetch, and that DHT traffic would otherwise land inside the next run's TTFT.
TTFT runs from the start of the lookup to the first generated token (the model is loaded
before; model load time is printed separately). Ratios = full TTFT / cube TTFT (medians over
--reps). Also printed: KV bytes per token for each dtype (measured payload sizes), the peer
steps (swarm lookup, fetch, load, suffix prefill) and, per length, the largest |Δlogit| of the
cube's first-token logits against the full prefill's and whether top-1 agrees.
Targets at 2048 tokens: local >= 25x, peer >= 10x.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_swarm import BenchError, Children  # noqa: E402
from memnet import home as home_mod  # noqa: E402
from memnet.api import DaemonSwarm  # noqa: E402
from memnet.daemon.control import ControlClient  # noqa: E402
from memnet.daemon.announcer import ANNOUNCE_DELAY  # noqa: E402
from memnet import config as config_mod  # noqa: E402
from memnet.model import generate, kv, loader  # noqa: E402

SETTLE = ANNOUNCE_DELAY + 1.5
TEXT_FILES = ("docs/MIP.md", "README.md", "memnet/net/fetch.py", "memnet/store/lmdb_store.py",
              "memnet/cube/manifest.py", "memnet/daemon/service.py")


def corpus_ids(loaded, n: int) -> list[int]:
    text = "\n\n".join((REPO / f).read_text() for f in TEXT_FILES)
    ids = loaded.encode(text)
    if len(ids) < n:
        raise BenchError(f"the corpus has {len(ids)} tokens, {n} needed")
    return ids[:n]


def ttft(node, loaded, ids, swarm=None, **options) -> generate.Generation:
    return generate.generate(node.store, node.gate(), node.perf, loaded, ids,
                             generate.Options(max_new_tokens=1, **options), swarm)


def wait_for_swarm(swarm: DaemonSwarm, loaded, ids: list[int], dtype: str, timeout: float = 60) -> None:
    """Until B's daemon finds A's cube for ids (A announces at start)."""
    binding = kv.binding_for(loaded, None, dtype)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if swarm.find_prefix([binding.keys(ids)]):
            return
        time.sleep(0.5)
    raise BenchError("node B's daemon never found node A's KV cubes in the DHT", "a")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="512,1024,2048")
    parser.add_argument("--suffix", type=int, default=16)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--dtypes", default="float16,int8", help="KV cube dtypes to measure (comma list).")
    parser.add_argument("--models", type=Path, help="A models folder to reuse (else SmolLM2 is converted into a temporary one).")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]
    args.dtypes = [d for d in args.dtypes.split(",") if d]
    if any(d not in kv.DTYPE_NAMES for d in args.dtypes):
        parser.error(f"--dtypes takes {', '.join(kv.DTYPE_NAMES)}")
    root = Path(tempfile.mkdtemp(prefix="memnet-bench-kv-"))
    os.environ["MEMNET_MODELS"] = str(args.models or root / "models")
    children = Children(root)
    try:
        run(args, lengths, root, children)
    except BenchError as exc:
        print(f"error: {exc}")
        if exc.child:
            print(children.tail(exc.child))
        sys.exit(1)
    finally:
        children.stop()
        import shutil
        shutil.rmtree(root, ignore_errors=True)


def run(args, lengths: list[int], root: Path, children: Children) -> None:
    a, b = home_mod.init(root / "a"), home_mod.init(root / "b")
    # B injects (and pins) A's cubes: by default a node injects only its own (memnet trust)
    config_mod.update(b.home, "trust", config_mod.load(b.home).trust.add(a.peer_id, ("pin", "inject")).to_config())
    b = home_mod.open_node(b.home)
    start = time.perf_counter()
    model, _ = a.models.pin("smollm2", print)
    b.models.pin("smollm2")
    print(f"model {model.name} {model.short}: pinned in {time.perf_counter() - start:.1f} s", end="")
    loaded = loader.load(model)
    print(f", loaded in {loaded.load_seconds:.2f} s; torch threads {__import__('torch').get_num_threads()}, "
          f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}")
    ids = corpus_ids(loaded, max(lengths) + args.suffix)

    sizes = {}
    cache, _, _ = kv.prefill(loaded, ids[:512])
    for dtype in kv.DTYPE_NAMES:  # whole payloads (safetensors header included) / tokens
        sizes[dtype] = len(kv.payload_from_cache(cache, 512, dtype)) / 512
    cubes = {}
    for n in lengths:
        for dtype in args.dtypes:
            cube, seconds = generate.build(a.publisher, a.perf, loaded, ids[:n], dtype)
            cubes[n, dtype] = cube
            print(f"built {dtype} cube of {n} tokens: {cube.manifest.size / 2**20:.1f} MiB, prefill {seconds:.2f} s")

    full = {n: [] for n in lengths}
    rows = {(n, d): {"local": [], "peer": [], "steps": [], "check": None} for n in lengths for d in args.dtypes}
    for n in lengths:
        prompt = ids[:n + args.suffix]
        ttft(b, loaded, prompt, use_local=False)  # B measures its own prefill rate
        for rep in range(args.reps):
            full[n].append(ttft(a, loaded, prompt, use_local=False).ttft)
            for dtype in args.dtypes:
                local = ttft(a, loaded, prompt, dtypes=(dtype,), check=rep == 0)
                if local.reused != n or local.source != "local":
                    raise BenchError(f"local run reused {local.reused} tokens from {local.source}")
                rows[n, dtype]["local"].append(local.ttft)
                if rep == 0:
                    rows[n, dtype]["check"] = (local.max_logit_diff, local.same_top1)

    children.daemon("a", a.home)
    state_a = children.wait_state("a", a.home)
    children.daemon("b", b.home, "--bootstrap", state_a.addrs[0])
    children.wait_state("b", b.home)
    swarm = DaemonSwarm(ControlClient.for_home(b.home))
    wait_for_swarm(swarm, loaded, ids[:max(lengths)], args.dtypes[0])
    for n in lengths:
        prompt = ids[:n + args.suffix]
        for rep in range(args.reps):
            for dtype in args.dtypes:
                cube_id = cubes[n, dtype].cube_id
                if b.store.has(cube_id):
                    b.store.unpin(cube_id)
                    b.store.gc()
                peer = ttft(b, loaded, prompt, swarm, dtypes=(dtype,))
                if peer.reused != n or peer.source != "peer":
                    raise BenchError(f"peer run reused {peer.reused} tokens from {peer.source} ({peer.decision})", "b")
                rows[n, dtype]["peer"].append(peer.ttft)
                rows[n, dtype]["steps"].append(peer.steps)
                time.sleep(SETTLE)

    print(f"\nTTFT, prompt = N prefix tokens + {args.suffix}, median of {args.reps} "
          f"(full = no reuse; local / peer = with the cube; ratio = full / with)")
    print(f"{'N':>6} {'dtype':>8} {'full':>9} {'local':>9} {'ratio':>7} {'peer':>9} {'ratio':>7}   "
          f"peer steps (median s)                          max|Δlogit| top-1")
    report = {"model": model.fingerprint.hex(), "dtypes": args.dtypes, "suffix": args.suffix, "reps": args.reps,
              "kv_bytes_per_token": sizes, "full": full, "rows": []}
    for n in lengths:
        for dtype in args.dtypes:
            r = rows[n, dtype]
            f, local, peer = statistics.median(full[n]), statistics.median(r["local"]), statistics.median(r["peer"])
            steps = {k: statistics.median(s.get(k, 0.0) for s in r["steps"])
                     for k in ("lookup_swarm", "fetch", "load", "prefill")}
            diff, same = r["check"]
            print(f"{n:>6} {dtype:>8} {f * 1000:>7.0f}ms {local * 1000:>7.0f}ms {f / local:>6.1f}x "
                  f"{peer * 1000:>7.0f}ms {f / peer:>6.1f}x   " + " ".join(f"{k} {v:.2f}" for k, v in steps.items())
                  + f"   {diff:.1e} {'same' if same else 'DIFF'}")
            report["rows"].append({"n": n, "dtype": dtype, "local": r["local"], "peer": r["peer"],
                                   "peer_steps": r["steps"], "ratio_local": f / local, "ratio_peer": f / peer,
                                   "max_logit_diff": diff, "same_top1": same})
    print("\nKV payload bytes per token at 512 tokens (SmolLM2-135M: 30 layers x 3 KV heads x 64):")
    print("  " + "  ".join(f"{d} {v:,.0f}" for d, v in sizes.items()))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
