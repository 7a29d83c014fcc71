#!/usr/bin/env python
"""Campaign: crashes mid-write (reliability issue 17, item 6).

    .venv/bin/python scripts/campaign_crash.py [--kills 20] [--only publish-notes,...] [--notes-mib 64]
                                               [--adapter-mib 128] [--get-mib 32] [--seed 1] [--json PATH]

SIGKILL at a random moment, --kills times each, between the end of the command's start-up (the
time `memnet id` takes) and the end of its usual run, during:
- publish-notes:   `memnet publish` of a --notes-mib notes file (the streamed, staged path),
- publish-adapter: `memnet publish` of a --adapter-mib PEFT adapter folder,
- gc:              `memnet gc` collecting 150 unpinned cubes of 1 MiB in chunks of 8 KiB (19 200 chunks),
- get:             the fetching daemon, mid-get of a --get-mib cube from a provider daemon (each
                   cube is asked twice: the second get resumes what the first staged), restarted
                   after each kill; at the end every cube is got whole,
- kv-build:        `memnet kv build` of a document with the real SmolLM2 (pinned first),
- lora-train:      `memnet lora train` on a notes file with the real SmolLM2 (10 steps),
- upkeep:          `memnet upkeep` evicting 100 unpinned cubes of 512 KiB (8 KiB chunks) over a
                   16 MiB store budget and dropping 50 expired ones.
After every kill the store must open, and every cube it lists must verify chunk by chunk. At the
end, GC past the staging grace must leave exactly the chunks of the cubes still listed: no space
is lost for good. (Daemons killed at random in a swarm: scripts/campaign_churn.py.)
Exit status 1 on a store that does not open or verify, or on space left behind.
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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_memory import write_adapter, write_notes  # noqa: E402

from memnet import home as home_mod  # noqa: E402
from memnet.cube import cid, payloads  # noqa: E402
from memnet.store import Store, gc  # noqa: E402

print = functools.partial(print, flush=True)  # noqa: A001
MIB = 1 << 20
SMALL_CHUNK = 8192
OPERATIONS = ("publish-notes", "publish-adapter", "gc", "upkeep", "get", "kv-build", "lora-train")


def run_cli(home: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cli.main", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "MEMNET_HOME": str(home)})


def timed(home: Path, *args: str) -> float:
    """How long the command takes when nothing kills it (the kills land within that)."""
    t0 = time.perf_counter()
    proc = run_cli(home, *args)
    out, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"memnet {' '.join(args)} failed: {err.strip()}")
    return time.perf_counter() - t0


def check(home: Path) -> tuple[int, int, list[str]]:
    """(cubes listed, staged chunks, problems): the store opens and every cube verifies."""
    problems = []
    try:
        store = Store(str(home / "store"))
    except Exception as exc:
        return 0, 0, [f"the store does not open: {exc}"]
    try:
        entries = store.entries()
        for entry in entries:
            try:
                store.verify(entry.cube_id)
            except Exception as exc:
                problems.append(f"{cid.to_text(entry.cube_id)}: {exc}")
        staged = store._read(lambda txn: txn.stat(store._db["staged"])["entries"])
        return len(entries), staged, problems
    finally:
        store.close()


def campaign(home: Path, label: str, args_for, kills: int, rng: random.Random, before=None) -> dict:
    """Kill `memnet <args_for(k)>` kills times at a random moment within its usual duration,
    after its start-up (imports and opening the home: nothing is written before)."""
    usual = float("inf")
    # with fresh work before each run, the shorter of two runs (a kill window past the end proves
    # nothing); without, the first (a publish again of the same content finds its chunks stored)
    for _ in range(2 if before is not None else 1):
        if before is not None:
            before(-1)
        usual = min(usual, timed(home, *args_for(-1)))
    start_up = timed(home, "id")
    landed, finished, problems, staged_seen = 0, 0, [], 0
    for k in range(kills):
        if before is not None:
            before(k)
        proc = run_cli(home, *args_for(k))
        time.sleep(rng.uniform(min(start_up, 0.9 * usual), max(start_up + 0.1, usual)))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            landed += 1
        else:
            finished += 1
        proc.communicate()
        listed, staged, found = check(home)
        staged_seen = max(staged_seen, staged)
        problems += [f"{label} kill {k}: {p}" for p in found]
    row = {"operation": label, "usual_s": usual, "start_up_s": start_up, "kills": kills, "killed_before_done": landed,
           "finished_first": finished, "problems": problems, "most_staged_chunks": staged_seen}
    print(f"{label}: usual {usual:.1f} s (start-up {start_up:.1f} s); {landed} of {kills} killed before they finished "
          f"({finished} finished first); "
          f"after each: the store opened and every listed cube verified: "
          f"{'yes' if not problems else problems[:3]}; staged chunks left at most {staged_seen}")
    return row


def unpinned_cubes(home: Path, rng: random.Random, count: int, mib: float = 1.0, ttl: int | None = None) -> None:
    """count unpinned plaintext cubes of `mib` MiB each (ttl: expired ttl seconds from now)."""
    node = home_mod.open_node(home)
    try:
        for _ in range(count):
            items = [{"text": rng.randbytes(int(mib * MIB) // 8).hex()} for _ in range(4)]
            node.publisher.publish("plaintext", payloads.encode_items(items), {"items": 4}, pin=False, ttl=ttl)
    finally:
        node.store.close()


def get_campaign(root: Path, home: Path, kills: int, size_mib: int, rng: random.Random) -> dict:
    """SIGKILL the fetching daemon mid-get, restart it; each cube is asked twice (the second get
    resumes the chunks the first staged); at the end every cube is got whole."""
    from bench_memory import plaintext_cube_args
    from bench_swarm import LOOPBACK, Children, write_daemon_config

    from memnet.daemon.control import ControlClient

    children = Children(root)
    provider = home_mod.init(root / "get-provider")
    cubes = [provider.publisher.publish("plaintext", *plaintext_cube_args(size_mib * MIB)).cube_id
             for _ in range(kills // 2 + 2)]
    write_daemon_config(provider, listen=[LOOPBACK], mdns=False)
    provider.store.close()
    node = home_mod.open_node(home)
    write_daemon_config(node, listen=[LOOPBACK], mdns=False)
    node.store.close()
    try:
        children.daemon("provider", provider.home)
        pstate = children.wait_state("provider", provider.home)
        hint = [{"peer_id": pstate.peer_id, "addrs": pstate.addrs}]

        def fetcher():
            children.daemon("fetcher", home)
            return children.wait_state("fetcher", home)

        def get(state, cube: bytes) -> float:
            t0 = time.perf_counter()
            ControlClient(state).call("get", timeout=300, cube=cube, wait_announce=False, providers=hint)
            return time.perf_counter() - t0

        state = fetcher()
        usual = get(state, cubes[-1])
        landed, problems, staged_seen, outcomes = 0, [], 0, []
        for k in range(kills):
            cube = cubes[k // 2]
            result: list = []
            thread = threading.Thread(target=lambda: result.append(_try(get, state, cube)), daemon=True)
            thread.start()
            time.sleep(rng.uniform(0.05, usual))
            proc = children.procs["fetcher"][0]
            landed += thread.is_alive()
            proc.send_signal(signal.SIGKILL)   # mid-get, or just after it finished
            proc.wait()
            thread.join(30)
            outcomes.append(result[0] if result else "no answer")
            listed, staged, found = check(home)
            staged_seen = max(staged_seen, staged)
            problems += [f"get kill {k}: {p}" for p in found]
            state = fetcher()
        whole = [_try(get, state, cube) for cube in cubes[:kills // 2 + 1]]
        failed = [w for w in whole if isinstance(w, str)]
        problems += [f"a get after the kills failed: {w}" for w in failed]
    finally:
        children.stop()
    row = {"operation": "get", "usual_s": usual, "kills": kills, "killed_before_done": landed,
           "finished_first": kills - landed, "problems": problems, "most_staged_chunks": staged_seen,
           "gets_after": len(whole) - len(failed)}
    print(f"get ({size_mib} MiB): usual {usual:.2f} s; {landed} of {kills} daemon kills landed mid-get; after each the "
          f"store opened and every listed cube verified: {'yes' if not problems else problems[:3]}; staged chunks "
          f"left at most {staged_seen}; afterwards {row['gets_after']} of {len(whole)} cubes got whole")
    return row


def _try(fn, *args):
    try:
        return fn(*args)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:200]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--only", default=",".join(OPERATIONS))
    ap.add_argument("--notes-mib", type=int, default=64)
    ap.add_argument("--adapter-mib", type=int, default=128)
    ap.add_argument("--get-mib", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    chosen = args.only.split(",")
    unknown = set(chosen) - set(OPERATIONS)
    if unknown:
        ap.error(f"unknown operations: {', '.join(sorted(unknown))}")
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="memnet-crash-"))
    home = root / "home"
    home_mod.init(home).store.close()
    print(f"work in {root}")
    rows = []
    if "publish-notes" in chosen:
        notes = [write_notes(root / f"notes-{k}.md", args.notes_mib * MIB) for k in range(2)]
        # a new file name each time is not needed: a cube's id covers its creation time
        rows.append(campaign(home, "publish notes", lambda k: ["publish", str(notes[k % 2])], args.kills, rng))
    if "publish-adapter" in chosen:
        adapter = write_adapter(root / "adapter", args.adapter_mib * MIB)
        rows.append(campaign(home, "publish adapter",
                             lambda k: ["publish", str(adapter), "--base-model", "sha256:" + "ab" * 32], args.kills, rng))
    def config(key: str, value: str) -> None:
        subprocess.run([sys.executable, "-m", "cli.main", "--home", str(home), "config", "set", key, value],
                       check=True, cwd=REPO, capture_output=True)

    # small chunks for GC and upkeep: thousands of deletes, so that a kill lands inside them
    config("chunk_size", str(SMALL_CHUNK))
    if "gc" in chosen:
        rows.append(campaign(home, "gc", lambda k: ["gc"], args.kills, rng,
                             before=lambda k: unpinned_cubes(home, rng, 150)))
    if "upkeep" in chosen:
        config("store_budget_bytes", str(16 * MIB))

        def over_budget(k: int) -> None:
            unpinned_cubes(home, rng, 100, mib=0.5)
            unpinned_cubes(home, rng, 50, mib=0.5, ttl=1)
            time.sleep(1.1)   # the ttl ones have expired
        rows.append(campaign(home, "upkeep", lambda k: ["upkeep"], args.kills, rng, before=over_budget))
    config("chunk_size", str(256 * 1024))
    if "get" in chosen:
        rows.append(get_campaign(root, home, args.kills, args.get_mib, rng))
    if "kv-build" in chosen or "lora-train" in chosen:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cli.main", "--home", str(home), "model", "pin", "smollm2"], check=True,
                       cwd=REPO, capture_output=True)
        print(f"SmolLM2 pinned in {time.perf_counter() - t0:.0f} s")
        text = root / "document.md"
        text.write_text("\n\n".join(f"Note {i}: the harbour master logs ship {i} at berth {i % 17} on day {i % 30}."
                                      for i in range(120)))
        if "kv-build" in chosen:
            rows.append(campaign(home, "kv build", lambda k: ["kv", "build", "--file", str(text)], args.kills, rng))
        if "lora-train" in chosen:
            rows.append(campaign(home, "lora train", lambda k: ["lora", "train", str(text), "--steps", "10"],
                                 args.kills, rng))
    # no space lost for good: past the grace, GC leaves exactly the listed cubes' chunks
    store = Store(str(home / "store"))
    try:
        store.clock = lambda: time.time() + gc.STAGING_GRACE + 1
        report = store.gc()
        needed = set()
        for entry in store.entries():
            needed |= set(entry.manifest.chunks)
        held = store._read(lambda txn: txn.stat(store._db["chunks"])["entries"])
        staged = store._read(lambda txn: txn.stat(store._db["staged"])["entries"])
        usage = store.usage()
    finally:
        store.close()
    listed, _, problems = check(home)
    end = {"operation": "final gc", "collected_cubes": report.cubes, "collected_chunks": report.chunks,
           "listed_cubes": listed, "chunks_needed": len(needed), "chunks_held": held, "staged_left": staged,
           "usage": usage, "problems": problems}
    rows.append(end)
    print(f"final GC past the grace: {report.chunks} chunks ({report.bytes / MIB:.0f} MiB) collected; "
          f"{listed} cubes listed need {len(needed)} chunks, the store holds {held}, staged {staged}; "
          f"problems {problems[:3]}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=str) + "\n")
    finding = any(r["problems"] for r in rows) or held != len(needed) or staged
    print("FINDINGS: see above" if finding else "no findings")
    return 1 if finding else 0


if __name__ == "__main__":
    raise SystemExit(main())
