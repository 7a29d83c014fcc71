#!/usr/bin/env python
"""Benchmark (not a test): time to first token (TTFT) on SmolLM2-135M-Instruct with a KV cube
against a full prefill, side by side in one run.

    .venv/bin/python scripts/bench_kv.py [--lengths 512,1024,2048] [--suffix 16] [--reps 3]
                                         [--dtypes float16,int8] [--models DIR] [--json PATH]

For each prefix length N, the prompt is N prefix tokens + --suffix more (token ids of this repo's
docs, so every length is real text; the --suffix tokens are the same for every N, taken after the
longest prefix, so that each prompt's longest cached prefix is its own N-token cube). Three ways to the first token of the same prompt, all with
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
Also (issue 16):
  --long N   one more length, local only (no peer fetch): the prefill grows with N^2, a cube's
             cost with N (default 8160: with the 16-token suffix and the first new token, the
             model's whole 8192-position context);
  LoRA       TTFT of a 39-token chat prompt through `memnet generate` in fresh processes (what
             a user runs; a first-token cost of applying an adapter would show here), with and
             without one rank-8 LoRA cube, alternating, --reps each;
  local steps, the median time of each part of a local TTFT: lookup, load, suffix prefill.
Targets at 2048 + 16 tokens: local >= 40x, peer >= 20x, LoRA TTFT <= 1.2x without; at the long
length local >= 100x.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
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
from memnet.cube import cid  # noqa: E402
from memnet.model import generate, kv, lora, loader  # noqa: E402

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
    parser.add_argument("--long", type=int, default=8160, help="A long prefix measured locally only (0: none).")
    parser.add_argument("--no-lora", action="store_true", help="Skip the LoRA row.")
    parser.add_argument("--sequential", action="store_true",
                        help="Also time each peer run with the fetch finished before the compute (no overlap).")
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
    long = [args.long] if args.long else []
    ids = corpus_ids(loaded, max(lengths + long) + args.suffix)
    # every prompt ends with the same text, found after the longest prefix only: a cube carries
    # its token ids and serves the longest common token prefix, so a longer cube would otherwise
    # also serve a shorter prompt's suffix
    tail = ids[-args.suffix:]

    sizes = {}
    cache, _, _ = kv.prefill(loaded, ids[:512])
    for dtype in kv.DTYPE_NAMES:  # whole payloads (safetensors header included) / tokens
        sizes[dtype] = len(kv.payload_from_cache(cache, 512, dtype)) / 512
    cubes = {}
    for n in lengths + long:
        for dtype in args.dtypes:
            cube, seconds = generate.build(a.publisher, a.perf, loaded, ids[:n], dtype)
            cubes[n, dtype] = cube
            print(f"built {dtype} cube of {n} tokens: {cube.manifest.size / 2**20:.1f} MiB, prefill {seconds:.2f} s")

    full = {n: [] for n in lengths + long}
    rows = {(n, d): {"local": [], "peer": [], "sequential": [], "steps": [], "local_steps": [], "check": None}
            for n in lengths + long for d in args.dtypes}
    for n in lengths + long:
        prompt = ids[:n] + tail
        ttft(b, loaded, prompt, use_local=False)  # B measures its own prefill rate
        for rep in range(args.reps):
            full[n].append(ttft(a, loaded, prompt, use_local=False).ttft)
            for dtype in args.dtypes:
                local = ttft(a, loaded, prompt, dtypes=(dtype,), check=rep == 0)
                if local.reused != n or local.source != "local":
                    raise BenchError(f"local run reused {local.reused} tokens from {local.source}")
                rows[n, dtype]["local"].append(local.ttft)
                if rep:  # the first run also checks against a full prefill
                    rows[n, dtype]["local_steps"].append(dict(local.steps, ttft=local.ttft))
                if rep == 0:
                    rows[n, dtype]["check"] = (local.max_logit_diff, local.same_top1)

    lora_row = None if args.no_lora else lora_ttft(a, loaded, root, args.reps)

    children.daemon("a", a.home)
    state_a = children.wait_state("a", a.home)
    children.daemon("b", b.home, "--bootstrap", state_a.addrs[0])
    children.wait_state("b", b.home)
    swarm = DaemonSwarm(ControlClient.for_home(b.home))
    wait_for_swarm(swarm, loaded, ids[:max(lengths)], args.dtypes[0])
    for n in lengths:
        prompt = ids[:n] + tail
        for rep in range(args.reps):
            for dtype in args.dtypes:
                # overlapped (the default), then, with --sequential, the fetch before the compute;
                # which goes first alternates
                ways = [True, False] if args.sequential else [True]
                for overlap in (ways if rep % 2 == 0 else ways[::-1]):
                    cube_id = cubes[n, dtype].cube_id
                    if b.store.has(cube_id):
                        b.store.unpin(cube_id)
                        b.store.gc()
                    peer = ttft(b, loaded, prompt, swarm, dtypes=(dtype,), overlap=overlap)
                    if peer.reused != n or peer.source != "peer":
                        raise BenchError(f"peer run reused {peer.reused} tokens from {peer.source} ({peer.decision})", "b")
                    if overlap:
                        rows[n, dtype]["peer"].append(peer.ttft)
                        rows[n, dtype]["steps"].append(peer.steps)
                    else:
                        rows[n, dtype]["sequential"].append(peer.ttft)
                    time.sleep(SETTLE)

    print(f"\nTTFT, prompt = N prefix tokens + {args.suffix}, median of {args.reps} "
          f"(full = no reuse; local / peer = with the cube; ratio = full / with)")
    print(f"{'N':>6} {'dtype':>8} {'full':>9} {'local':>9} {'ratio':>7} {'peer':>9} {'ratio':>7}   "
          f"peer steps (median s)                          max|Δlogit| top-1")
    report = {"model": model.fingerprint.hex(), "dtypes": args.dtypes, "suffix": args.suffix, "reps": args.reps,
              "kv_bytes_per_token": sizes, "full": full, "rows": [], "lora": lora_row}
    for n in lengths + long:
        for dtype in args.dtypes:
            r = rows[n, dtype]
            f, local = statistics.median(full[n]), statistics.median(r["local"])
            diff, same = r["check"]
            if r["peer"]:
                peer = statistics.median(r["peer"])
                steps = {k: statistics.median(s.get(k, 0.0) for s in r["steps"])
                         for k in ("lookup_swarm", "fetch", "load", "prefill")}
                peer_text = f"{peer * 1000:>7.0f}ms {f / peer:>6.1f}x   " + " ".join(f"{k} {v:.3f}" for k, v in steps.items())
            else:
                peer, peer_text = None, f"{'(local only)':>17}   " + " " * 46
            print(f"{n:>6} {dtype:>8} {f * 1000:>7.0f}ms {local * 1000:>7.0f}ms {f / local:>6.1f}x "
                  f"{peer_text}   {diff:.1e} {'same' if same else 'DIFF'}")
            report["rows"].append({"n": n, "dtype": dtype, "local": r["local"], "peer": r["peer"],
                                   "peer_steps": r["steps"], "local_steps": r["local_steps"],
                                   "peer_sequential": r["sequential"],
                                   "ratio_local": f / local, "ratio_peer": f / peer if peer else None,
                                   "max_logit_diff": diff, "same_top1": same})
    if args.sequential:
        print("\npeer TTFT with the cube fed layer by layer as it arrives vs fetched whole first (same runs, "
              "alternating; median ms)")
        for n in lengths:
            for dtype in args.dtypes:
                r = rows[n, dtype]
                over, seq = statistics.median(r["peer"]), statistics.median(r["sequential"])
                print(f"{n:>6} {dtype:>8}  overlapped {over * 1000:6.0f}  sequential {seq * 1000:6.0f}  "
                      f"({over / seq:.2f}x; runs {', '.join(f'{x * 1000:.0f}' for x in r['peer'])} / "
                      f"{', '.join(f'{x * 1000:.0f}' for x in r['sequential'])})")
    print("\nwhere a local TTFT goes (median ms over the runs after the first): lookup in LMDB, load "
          "(read + convert the cube into the cache), the suffix's own forward, and the suffix at the "
          "full prefill's rate (its share: suffix / (N + suffix) of the full TTFT)")
    for n in lengths + long:
        for dtype in args.dtypes:
            st = rows[n, dtype]["local_steps"]
            if not st:
                continue
            med = {k: statistics.median(x.get(k, 0.0) for x in st) * 1000 for k in ("lookup_local", "load", "prefill", "ttft")}
            share = statistics.median(full[n]) * args.suffix / (n + args.suffix) * 1000
            print(f"{n:>6} {dtype:>8}  lookup {med['lookup_local']:5.1f}  load {med['load']:5.1f}  "
                  f"suffix {med['prefill']:6.1f}  (at prefill rate {share:5.1f})  ttft {med['ttft']:6.1f}")
    if lora_row:
        base, adapted = statistics.median(lora_row["base"]), statistics.median(lora_row["lora"])
        print(f"\nLoRA: `memnet generate` of a {lora_row['prompt_tokens']}-token chat prompt in fresh processes, "
              f"median of {args.reps}: TTFT {base * 1000:.0f} ms without, {adapted * 1000:.0f} ms with one rank-8 "
              f"LoRA ({adapted / base:.2f}x; runs {', '.join(f'{x * 1000:.0f}' for x in lora_row['base'])} / "
              f"{', '.join(f'{x * 1000:.0f}' for x in lora_row['lora'])} ms)")
    print("\nKV payload bytes per token at 512 tokens (SmolLM2-135M: 30 layers x 3 KV heads x 64):")
    print("  " + "  ".join(f"{d} {v:,.0f}" for d, v in sizes.items()))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


LORA_TEXT = ("Q: What is the mascot of memnet?\nA: The mascot of memnet is Mnemo, a tangerine octopus.\n\n"
             "Q: Who is Mnemo?\nA: Mnemo is the tangerine octopus mascot of memnet.\n\n") * 6


def lora_ttft(node, loaded, root: Path, reps: int) -> dict:
    """TTFT of `memnet generate --chat` with and without a rank-8 LoRA cube, alternating, each in
    a fresh process (as the demo runs it)."""
    text = root / "skill.txt"
    text.write_text(LORA_TEXT)
    cube = lora.train(node.publisher, node.gate(), loaded, text, steps=4, name="bench-skill")
    chat = root / "mascot.json"
    chat.write_text(json.dumps([{"role": "user", "content": "Who is the mascot of memnet?"}]))
    row = {"base": [], "lora": [], "prompt_tokens": 0}
    for _ in range(reps):
        for key, extra in (("base", []), ("lora", ["--lora", cid.to_text(cube.cube_id)])):
            out = subprocess.run([sys.executable, "-m", "cli.main", "--home", str(node.home), "generate", "--chat",
                                  str(chat), "-n", "1", "--local", "--json", *extra], cwd=REPO, capture_output=True,
                                 text=True, timeout=600)
            if out.returncode != 0:
                raise BenchError(f"memnet generate failed: {out.stderr.strip()[-300:]}")
            result = json.loads(out.stdout)
            row[key].append(result["ttft"])
            row["prompt_tokens"] = result["prompt_tokens"]
    return row


if __name__ == "__main__":
    main()
