#!/usr/bin/env python
"""Benchmark (not a test): memnet's LMDB cube store against raw py-lmdb, side by side.

    .venv/bin/python scripts/bench_store.py [--size-mib 256] [--runs 3]

What it measures, all in one process so the ratios compare like with like:

  publish  build.build(key, "parameter", payload, meta) + Store(path).put(cube, "published")
           into a fresh directory, against RAW: lmdb.open(fresh dir, map_size = the size the
           store ended up with) and one write transaction putting the same 256 KiB chunks under
           the same CIDs (computed once, outside every timing: the raw side hashes nothing).
           A second ratio, "put only", leaves out build (chunk hashing, payload checks, signing).
           Both sides open the environment inside the timing and commit with LMDB's default
           durability (sync=True, metasync=True: fdatasync at commit).
  read     Store.read_payload(cube_id) against one raw read transaction that gets every chunk
           (in payload order) and joins them into one bytes object (py-lmdb defaults: each get
           returns a copy, so the raw side copies every byte twice).
  verify   Store.verify(cube_id): manifest hash, signature, every chunk re-hashed, payload
           structure; reported as MiB/s, next to this machine's bare sha256 speed.
  cold     (information, no target; --no-cold skips it) the same two reads after evicting
           data.mdb from the page cache with posix_fadvise(DONTNEED) on the closed file, so the
           environments' readahead settings show: the store opens with readahead=False, the raw
           side with py-lmdb's default (True).
  gc       publish, unpin, gc, five times in one store, then one more publish: data.mdb's size
           after each step, as a multiple of the payload, shows whether freed pages are reused.

Ratios are raw_time / store_time (1.0 = the store costs nothing over raw LMDB); the targets are
>= 0.5. Times are medians over --runs runs; store and raw runs alternate (and swap which goes
first each run) so background noise lands on both. Page cache: nothing is dropped (that needs
root). Writes go to fresh files; reads hit pages that the preceding publish left in the page
cache, so read numbers are warm-cache numbers for both sides alike, i.e. they measure CPU and
memory copying, not the disk; only the optional "cold" rows evict the file (no root needed:
posix_fadvise on data.mdb alone, with both environments closed). One untimed warm-up of each
side runs first.

The payload is a PEFT-style LoRA safetensors file (float32 attention and float16 MLP lora_A /
lora_B tensors) generated once with numpy before any timing. Data directories live under /tmp
(or --dir) and are deleted at the end.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lmdb  # noqa: E402
import numpy as np  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from safetensors.numpy import save  # noqa: E402

from memnet.cube import build, cid, limits, payloads  # noqa: E402
from memnet.store.lmdb_store import Store  # noqa: E402

MiB = 1024 * 1024
TARGET = 0.5
HIDDEN, INTERMEDIATE = 4096, 11008
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")   # float32, self_attn
MLP = ("gate_proj", "up_proj", "down_proj")             # float16, mlp


# -- payload -----------------------------------------------------------------------------------

def _features(module: str) -> tuple[int, int]:
    """(in_features, out_features) of the adapted Linear: lora_A is [r, in], lora_B is [out, r]."""
    if module == "down_proj":
        return INTERMEDIATE, HIDDEN
    if module in ("gate_proj", "up_proj"):
        return HIDDEN, INTERMEDIATE
    return HIDDEN, HIDDEN


def _layer_bytes(r: int) -> int:
    total = 0
    for module in ATTENTION + MLP:
        fan_in, fan_out = _features(module)
        total += (fan_in + fan_out) * r * (4 if module in ATTENTION else 2)
    return total


def make_lora(size: int, seed: int = 0) -> tuple[dict, bytes, int]:
    """(adapter_config, adapter_model.safetensors, tensor count) of about size bytes, PEFT naming."""
    layers = max(1, -(-size // _layer_bytes(32)))
    r = max(1, round(size / (layers * _layer_bytes(1))))
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    for layer in range(layers):
        for module in ATTENTION + MLP:
            block = "self_attn" if module in ATTENTION else "mlp"
            base = f"base_model.model.model.layers.{layer}.{block}.{module}"
            fan_in, fan_out = _features(module)
            dtype = np.float32 if module in ATTENTION else np.float16
            tensors[f"{base}.lora_A.weight"] = rng.standard_normal((r, fan_in), dtype=np.float32).astype(dtype)
            tensors[f"{base}.lora_B.weight"] = rng.standard_normal((fan_out, r), dtype=np.float32).astype(dtype)
    config = {"peft_type": "LORA", "r": r, "lora_alpha": 2 * r, "target_modules": list(ATTENTION + MLP),
              "base_model_name_or_path": "bench-base-7b", "task_type": "CAUSAL_LM"}
    return config, save(tensors, metadata={"format": "pt"}), len(tensors)


# -- helpers -----------------------------------------------------------------------------------

def timed(fn: Callable[[], object]) -> tuple[float, object]:
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        result = fn()
        return time.perf_counter() - start, result
    finally:
        gc.enable()


def data_size(path: str) -> int:
    return os.path.getsize(os.path.join(path, "data.mdb"))


def evict(path: str) -> None:
    """Drop data.mdb's clean pages from the page cache (the environment must be closed: mapped
    pages stay)."""
    fd = os.open(os.path.join(path, "data.mdb"), os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def live_pages(env: lmdb.Environment, names: list[str]) -> int:
    """Pages reachable from the main DB and the named DBs (excludes the freelist and metas)."""
    with env.begin() as txn:
        stats = [txn.stat(env.open_db(n.encode(), txn=txn, create=False)) for n in names]
        stats.append(txn.stat())
    return sum(s["branch_pages"] + s["leaf_pages"] + s["overflow_pages"] for s in stats)


class Bench:
    def __init__(self, root: str, size: int, runs: int):
        self.root, self.runs, self.counter = root, runs, 0
        self.key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"bench-store").digest())
        t, (config, weights, self.n_tensors) = timed(lambda: make_lora(size))
        self.payload = payloads.build_parameter_payload(config, weights)
        del weights
        self.config = config
        self.meta = {"base_model": hashlib.sha256(b"bench-base-7b").digest(), "peft": payloads.peft_summary(config)}
        self.gen_time = t
        # The raw side's keys: same chunking and CIDs as build, computed here, outside timings.
        view = memoryview(self.payload)
        step = limits.DEFAULT_CHUNK_SIZE
        self.order = [cid.cid_of(view[i:i + step]) for i in range(0, len(view), step)]
        self.chunks = {c: view[i * step:(i + 1) * step] for i, c in enumerate(self.order)}
        self.map_size = 0

    @property
    def mib(self) -> float:
        return len(self.payload) / MiB

    def fresh(self, label: str) -> str:
        self.counter += 1
        return os.path.join(self.root, f"{label}-{self.counter}")

    # -- publish -------------------------------------------------------------------------------

    def store_publish(self, keep: bool = False) -> dict:
        path = self.fresh("store")
        t_build, cube = timed(lambda: build.build(self.key, "parameter", self.payload, self.meta))
        t_open, store = timed(lambda: Store(path))
        t_put, new = timed(lambda: store.put(cube, "published"))
        assert new
        self.map_size = max(self.map_size, store.env.info()["map_size"])
        store.close()
        if not keep:
            shutil.rmtree(path)
        return {"build": t_build, "open": t_open, "put": t_put, "total": t_build + t_open + t_put,
                "path": path, "cube_id": cube.cube_id}

    def raw_publish(self, keep: bool = False) -> dict:
        path = self.fresh("raw")

        def open_env() -> lmdb.Environment:
            return lmdb.open(path, map_size=self.map_size)

        def put(env: lmdb.Environment) -> None:
            with env.begin(write=True) as txn:
                for chunk_id, data in self.chunks.items():
                    txn.put(chunk_id, data)

        t_open, env = timed(open_env)
        t_put, _ = timed(lambda: put(env))
        env.close()
        if not keep:
            shutil.rmtree(path)
        return {"open": t_open, "put": t_put, "total": t_open + t_put, "path": path}

    # -- read ----------------------------------------------------------------------------------

    def store_read(self, store: Store, cube_id: bytes) -> float:
        t, data = timed(lambda: store.read_payload(cube_id))
        del data
        return t

    def raw_read(self, env: lmdb.Environment) -> float:
        def read() -> bytes:
            with env.begin() as txn:
                return b"".join([txn.get(c) for c in self.order])

        t, data = timed(read)
        del data
        return t


def median(values: list[float]) -> float:
    return statistics.median(values)


def fmt_s(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256, help="payload size (default 256)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per measurement (default 3)")
    parser.add_argument("--gc-cycles", type=int, default=5, help="publish/unpin/gc cycles (default 5)")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold-cache read rows")
    parser.add_argument("--dir", default=None, help="parent of the data directories (default: /tmp)")
    args = parser.parse_args()

    wall = time.perf_counter()
    root = tempfile.mkdtemp(prefix="memnet-bench-", dir=args.dir or "/tmp")
    try:
        return run(args, root, wall)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(args: argparse.Namespace, root: str, wall: float) -> int:
    print(f"python {platform.python_version()} ({platform.python_implementation()}), "
          f"py-lmdb {lmdb.__version__}, liblmdb {'.'.join(map(str, lmdb.version()))}, numpy {np.__version__}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores "
          f"(usable: {len(os.sched_getaffinity(0))}), {platform.system()} {platform.release()}")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"data directories under {root}; load average before start: {load}")

    bench = Bench(root, args.size_mib * MiB, args.runs)
    print(f"payload: PEFT LoRA safetensors, r={bench.config['r']}, {bench.n_tensors} tensors "
          f"(attention F32, MLP F16), {len(bench.payload):,} bytes = {bench.mib:.1f} MiB, "
          f"{len(bench.order)} chunks of {limits.DEFAULT_CHUNK_SIZE // 1024} KiB "
          f"(generated in {bench.gen_time:.1f} s, outside timings)")

    sha_t, _ = timed(lambda: [hashlib.sha256(v).digest() for v in bench.chunks.values()])
    print(f"reference: bare sha256 over the chunks {bench.mib / sha_t:,.0f} MiB/s on this machine")

    # -- warm-up (untimed): also learns the map size the store ends up needing --------------------
    bench.store_publish()
    bench.raw_publish()
    print(f"store map size after publishing: {bench.map_size / MiB:.0f} MiB (used for the raw side too)")

    # -- publish ---------------------------------------------------------------------------------
    s_runs: list[dict] = []
    r_runs: list[dict] = []
    for i in range(args.runs):
        last = i == args.runs - 1
        if i % 2 == 0:
            s_runs.append(bench.store_publish(keep=last))
            r_runs.append(bench.raw_publish(keep=last))
        else:
            r_runs.append(bench.raw_publish(keep=last))
            s_runs.append(bench.store_publish(keep=last))

    def med(runs: list[dict], field: str) -> float:
        return median([r[field] for r in runs])

    s_build, s_open, s_put, s_total = (med(s_runs, f) for f in ("build", "open", "put", "total"))
    r_open, r_put, r_total = (med(r_runs, f) for f in ("open", "put", "total"))
    s_putonly = median([r["open"] + r["put"] for r in s_runs])
    publish_ratio = r_total / s_total
    putonly_ratio = r_total / s_putonly

    # -- read + verify ---------------------------------------------------------------------------
    store_path, cube_id, raw_path = s_runs[-1]["path"], s_runs[-1]["cube_id"], r_runs[-1]["path"]
    store = Store(store_path)
    raw_env = lmdb.open(raw_path, map_size=bench.map_size)
    assert store.read_payload(cube_id) == bench.payload  # correctness, untimed (also warms both)
    with raw_env.begin() as txn:
        assert b"".join([txn.get(c) for c in bench.order]) == bench.payload
    s_reads: list[float] = []
    r_reads: list[float] = []
    verifies: list[float] = []
    for i in range(args.runs):
        if i % 2 == 0:
            s_reads.append(bench.store_read(store, cube_id))
            r_reads.append(bench.raw_read(raw_env))
        else:
            r_reads.append(bench.raw_read(raw_env))
            s_reads.append(bench.store_read(store, cube_id))
        t, verified = timed(lambda: store.verify(cube_id))
        del verified
        verifies.append(t)
    s_read, r_read, verify_t = median(s_reads), median(r_reads), median(verifies)
    read_ratio = r_read / s_read
    store.close()
    raw_env.close()

    s_colds: list[float] = []
    r_colds: list[float] = []
    if not args.no_cold and hasattr(os, "posix_fadvise"):
        for i in range(args.runs):
            for side in (("store", "raw") if i % 2 == 0 else ("raw", "store")):
                if side == "store":
                    evict(store_path)
                    store = Store(store_path)
                    s_colds.append(bench.store_read(store, cube_id))
                    store.close()
                else:
                    evict(raw_path)
                    raw_env = lmdb.open(raw_path, map_size=bench.map_size)
                    r_colds.append(bench.raw_read(raw_env))
                    raw_env.close()
    shutil.rmtree(store_path)
    shutil.rmtree(raw_path)

    mib = bench.mib
    rows = [
        ("publish: build (hash+check+sign)", s_build, None, None),
        ("publish: Store() open", s_open, r_open, None),
        ("publish: put (1 write txn)", s_put, r_put, None),
        ("publish: build + open + put", s_total, r_total, publish_ratio),
        ("publish: open + put (no build)", s_putonly, r_total, putonly_ratio),
        ("read_payload (warm cache)", s_read, r_read, read_ratio),
        ("verify (re-hash+sig+payload)", verify_t, None, None),
    ]
    if s_colds:
        rows.append(("read_payload COLD (info)", median(s_colds), median(r_colds), median(r_colds) / median(s_colds)))
    print()
    print(f"median of {args.runs} runs, {mib:.1f} MiB payload; ratio = raw / store (higher is better, 1.0 = no overhead)")
    header = f"{'operation':34} {'store':>11} {'MiB/s':>8} {'raw lmdb':>11} {'MiB/s':>8} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for name, s, r, ratio in rows:
        raw_cols = f"{fmt_s(r):>11} {mib / r:8,.0f}" if r is not None else f"{'':>11} {'':>8}"
        ratio_col = f"{ratio:6.2f}" if ratio is not None else ""
        print(f"{name:34} {fmt_s(s):>11} {mib / s:8,.0f} {raw_cols} {ratio_col}")
    print("runs (s): store publish " + ", ".join(f"{r['total']:.3f}" for r in s_runs)
          + " | raw publish " + ", ".join(f"{r['total']:.3f}" for r in r_runs))
    print("          store read " + ", ".join(f"{t:.3f}" for t in s_reads)
          + " | raw read " + ", ".join(f"{t:.3f}" for t in r_reads)
          + " | verify " + ", ".join(f"{t:.3f}" for t in verifies))
    if s_colds:
        print("          cold: store read " + ", ".join(f"{t:.3f}" for t in s_colds)
              + " | raw read " + ", ".join(f"{t:.3f}" for t in r_colds))

    # -- space: publish / unpin / gc cycles --------------------------------------------------------
    print()
    print(f"space: publish, unpin, gc x{args.gc_cycles} in one store, then one more publish "
          f"(payload {mib:.1f} MiB; 'x payload' = data.mdb size / payload size)")
    gc_path = bench.fresh("gc")
    cube = build.build(bench.key, "parameter", bench.payload, bench.meta)
    gstore = Store(gc_path)
    names = ["manifests", "chunks", "refs", "pins", "index", "names", "stats"]
    header = f"{'step':18} {'data.mdb':>10} {'x payload':>9} {'high-water':>10} {'live':>10} {'free':>10} {'time':>9}"
    print(header)
    print("-" * len(header))

    def report(step: str, seconds: float) -> float:
        psize = gstore.env.stat()["psize"]
        high = (gstore.env.info()["last_pgno"] + 1) * psize
        live = live_pages(gstore.env, names) * psize
        size = data_size(gc_path)
        print(f"{step:18} {size / MiB:7.1f} MiB {size / len(bench.payload):9.2f} {high / MiB:6.1f} MiB "
              f"{live / MiB:6.1f} MiB {(high - live) / MiB:6.1f} MiB {seconds:8.2f}s")
        return size

    sizes = []
    for cycle in range(1, args.gc_cycles + 1):
        t, _ = timed(lambda: gstore.put(cube, "published"))
        report(f"{cycle}: publish", t)
        gstore.unpin(cube.cube_id)
        t, gc_report = timed(gstore.gc)
        assert gc_report.cubes == 1, gc_report
        sizes.append(report(f"{cycle}: unpin + gc", t))
    t, _ = timed(lambda: gstore.put(cube, "published"))
    final = report("final publish", t)
    gstore.close()
    shutil.rmtree(gc_path)
    growth = sizes[-1] - sizes[-2] if len(sizes) > 1 else 0
    steady = growth <= 0.01 * len(bench.payload)
    print(f"data.mdb after the last gc {sizes[-1] / len(bench.payload):.2f}x payload; "
          f"{'stable' if steady else 'still growing'} over the last cycle (+{growth / MiB:.1f} MiB); "
          f"final publish {'reused freed pages (file did not grow)' if final <= sizes[-1] else 'grew the file'} "
          f"({final / len(bench.payload):.2f}x payload)")

    print()
    results = [("publish", publish_ratio), ("read", read_ratio)]
    print("targets: " + "  ".join(
        f"{name} raw/store {ratio:.2f} >= {TARGET}: {'PASS' if ratio >= TARGET else 'FAIL'}" for name, ratio in results
    ) + f"  (info: put-only {putonly_ratio:.2f}, verify {mib / verify_t:,.0f} MiB/s)")
    print(f"total wall time {time.perf_counter() - wall:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
