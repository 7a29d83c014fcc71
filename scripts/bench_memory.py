#!/usr/bin/env python
"""Benchmark: what a `get` of a large cube costs the fetching daemon in memory, and what a
`memnet publish` of one costs the publishing process.

    .venv/bin/python scripts/bench_memory.py [--plaintext-mib 200] [--lora-mib 1024] [--json PATH]

Two real daemons on loopback (separate processes): a provider that holds the cube, and a fetcher
asked to `get` it from that provider (no DHT lookup). The fetcher's resident memory (VmRSS) is
sampled every 20 ms from /proc while the get runs: reported are its RSS when idle before, the
peak during the get above that idle RSS, the RSS a few seconds after, and the get's time. Cubes:
a plaintext cube of --plaintext-mib (random text in ~1 MiB items: nothing deduplicates) and a
parameter (LoRA) cube of --lora-mib (random float32 tensors). Target (reliability issue, finding
5): a 1 GiB get peaks under 300 MB above the idle daemon. Reported apart: anonymous memory (what
the daemon holds) and file-backed pages (LMDB's data file mapped, counted in RSS while cached).

Publish: the real `memnet publish` command (a process of its own) of a notes file of
--plaintext-mib and of a PEFT adapter folder of --lora-mib, its RSS sampled the same way; the
baseline is the peak of the same command publishing a tiny file of the same kind (the imports).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_swarm import HIDDEN, LOOPBACK, TARGETS, Children, lora_cube_args, write_daemon_config  # noqa: E402
from tests.factories import lora_files  # noqa: E402

from memnet import home as home_mod  # noqa: E402
from memnet.cube import payloads  # noqa: E402
from memnet.daemon.control import ControlClient  # noqa: E402

MIB = 1 << 20
print = functools.partial(print, flush=True)  # noqa: A001


def rss(pid: int) -> dict[str, int]:
    """Resident bytes of a process: all (VmRSS), anonymous (RssAnon: the heap, what the process
    holds) and file-backed (RssFile: pages of mapped files, here LMDB's data file, which the
    kernel reclaims under pressure)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile"):
            out[name] = int(value.split()[0]) * 1024
    return out


class Sampler(threading.Thread):
    def __init__(self, pid: int, every: float = 0.02):
        super().__init__(daemon=True)
        self.pid, self.every, self.stop = pid, every, threading.Event()
        self.peak = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}

    def run(self) -> None:
        while not self.stop.is_set():
            for name, value in rss(self.pid).items():
                self.peak[name] = max(self.peak[name], value)
            time.sleep(self.every)


def plaintext_cube_args(size: int) -> tuple[bytes, dict]:
    texts = [os.urandom(MIB // 2 - 64).hex() for _ in range(max(1, size // MIB))]
    return payloads.encode_items([{"text": t} for t in texts]), {"items": len(texts)}


def measure(root: Path, label: str, kind: str, payload: bytes, meta: dict) -> dict:
    children = Children(root)
    try:
        provider, fetcher = home_mod.init(root / f"{label}-provider"), home_mod.init(root / f"{label}-fetcher")
        t0 = time.perf_counter()
        cube = provider.publisher.publish(kind, payload, meta)
        size = provider.store.manifest(cube.cube_id).size
        print(f"{label}: {kind} cube of {size / MIB:.0f} MiB published in {time.perf_counter() - t0:.1f} s")
        for node in (provider, fetcher):
            write_daemon_config(node, listen=[LOOPBACK], mdns=False)
            node.store.close()
        del payload
        children.daemon("provider", provider.home)
        state = children.wait_state("provider", provider.home)
        children.daemon("fetcher", fetcher.home)
        mine = children.wait_state("fetcher", fetcher.home)
        client = ControlClient(mine)
        time.sleep(3.0)   # start-up settles (imports, first connections)
        idle = rss(mine.pid)
        sampler = Sampler(mine.pid)
        sampler.start()
        t0 = time.perf_counter()
        client.call("get", timeout=600, cube=cube.cube_id,
                    providers=[{"peer_id": state.peer_id, "addrs": state.addrs}], wait_announce=False)
        seconds = time.perf_counter() - t0
        time.sleep(3.0)
        sampler.stop.set()
        sampler.join()
        after = rss(mine.pid)
        row = {"label": label, "kind": kind, "size_mib": size / MIB, "get_s": seconds}
        for name, key in (("VmRSS", "rss"), ("RssAnon", "anon"), ("RssFile", "file")):
            row |= {f"{key}_idle_mb": idle[name] / 1e6, f"{key}_peak_mb": sampler.peak[name] / 1e6,
                    f"{key}_above_idle_mb": (sampler.peak[name] - idle[name]) / 1e6, f"{key}_after_mb": after[name] / 1e6}
        print(f"  get {seconds:.1f} s ({size / MIB / seconds:.0f} MiB/s); fetcher RSS idle {row['rss_idle_mb']:.0f} MB, "
              f"peak {row['rss_peak_mb']:.0f} MB: anonymous +{row['anon_above_idle_mb']:.0f} MB, "
              f"file-backed (LMDB pages) +{row['file_above_idle_mb']:.0f} MB; 3 s after: anonymous "
              f"{row['anon_after_mb']:.0f} MB")
        return row
    finally:
        children.stop()


def write_notes(path: Path, size: int) -> Path:
    """A notes file of about size bytes: paragraphs of ~1 MiB of random hex (one item each)."""
    with path.open("w") as out:
        for _ in range(max(1, size // MIB)):
            out.write(os.urandom(MIB // 2 - 64).hex() + "\n\n")
    return path


def write_adapter(folder: Path, size: int) -> Path:
    """A PEFT adapter folder of about size bytes of float32 weights (bench_swarm's shapes)."""
    pair = 2 * HIDDEN * 4
    layers = max(1, -(-size // (len(TARGETS) * 64 * pair)))
    r = max(1, round(size / (layers * len(TARGETS) * pair)))
    config, weights = lora_files(r=r, hidden=HIDDEN, layers=layers, targets=TARGETS, seed=2)
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps(config))
    (folder / "adapter_model.safetensors").write_bytes(weights)
    return folder


def publish_peak(root: Path, label: str, path: Path, kind: str) -> dict:
    """Run `memnet publish PATH` in a home of its own; its peak RSS (sampled) and time."""
    home = root / f"publish-{label}"
    home_mod.init(home).store.close()
    args = [sys.executable, "-m", "cli.main", "publish", str(path), "--kind", kind]
    if kind == "parameter":
        args += ["--base-model", "sha256:" + "ab" * 32]
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, env={**os.environ, "MEMNET_HOME": str(home)}, cwd=Path(__file__).resolve().parents[1],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = Sampler(proc.pid, every=0.01)
    sampler.start()
    out, err = proc.communicate(timeout=900)
    seconds = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"memnet publish {path} failed: {err.strip()}")
    return {"seconds": seconds, "anon": sampler.peak["RssAnon"], "file": sampler.peak["RssFile"]}


def measure_publish(root: Path, label: str, kind: str, size: int) -> dict:
    if kind == "parameter":
        big, tiny = write_adapter(root / f"{label}-big", size), write_adapter(root / f"{label}-tiny", 1)
    else:
        big, tiny = write_notes(root / f"{label}-big.md", size), write_notes(root / f"{label}-tiny.md", 1)
    base = publish_peak(root, f"{label}-tiny", tiny, kind)
    peak = publish_peak(root, f"{label}-big", big, kind)
    row = {"label": f"publish {label}", "kind": kind, "size_mib": size / MIB, "publish_s": peak["seconds"],
           "anon_base_mb": base["anon"] / 1e6, "anon_peak_mb": peak["anon"] / 1e6,
           "anon_above_base_mb": (peak["anon"] - base["anon"]) / 1e6,
           "file_above_base_mb": (peak["file"] - base["file"]) / 1e6}
    print(f"publish {kind} {size / MIB:.0f} MiB: {peak['seconds']:.1f} s; memnet publish RSS anonymous peak "
          f"{row['anon_peak_mb']:.0f} MB (a tiny publish: {row['anon_base_mb']:.0f} MB, so +"
          f"{row['anon_above_base_mb']:.0f} MB), file-backed +{row['file_above_base_mb']:.0f} MB")
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plaintext-mib", type=int, default=200)
    ap.add_argument("--lora-mib", type=int, default=1024)
    ap.add_argument("--skip-get", action="store_true", help="measure only publish")
    ap.add_argument("--skip-publish", action="store_true", help="measure only get")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="memnet-bench-memory-"))
    rows, published = [], []
    if args.plaintext_mib and not args.skip_get:
        rows.append(measure(root, "plaintext", "plaintext", *plaintext_cube_args(args.plaintext_mib * MIB)))
    if args.lora_mib and not args.skip_get:
        rows.append(measure(root, "lora", "parameter", *lora_cube_args(args.lora_mib * MIB, seed=1)))
    if args.plaintext_mib and not args.skip_publish:
        published.append(measure_publish(root, "notes", "plaintext", args.plaintext_mib * MIB))
    if args.lora_mib and not args.skip_publish:
        published.append(measure_publish(root, "adapter", "parameter", args.lora_mib * MIB))
    if rows:
        print("\ncube                 get     fetcher: anonymous idle / peak above idle / 3 s after;"
              "  file-backed peak above idle")
    for r in rows:
        print(f"{r['kind']:9} {r['size_mib']:6.0f} MiB  {r['get_s']:5.1f} s   {r['anon_idle_mb']:6.0f} MB / "
              f"+{r['anon_above_idle_mb']:4.0f} MB / {r['anon_after_mb']:6.0f} MB;  +{r['file_above_idle_mb']:.0f} MB")
    if published:
        print("\ncube                 publish   memnet publish: anonymous peak (tiny publish) / above it;"
              "  file-backed above it")
    for r in published:
        print(f"{r['kind']:9} {r['size_mib']:6.0f} MiB  {r['publish_s']:5.1f} s   {r['anon_peak_mb']:6.0f} MB "
              f"({r['anon_base_mb']:.0f} MB) / +{r['anon_above_base_mb']:4.0f} MB;  +{r['file_above_base_mb']:.0f} MB")
    if args.json:
        args.json.write_text(json.dumps(rows + published, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
