#!/usr/bin/env python
"""Campaign: crashes of the CLI mid-write (reliability issue 17, item 6, in part).

    .venv/bin/python scripts/campaign_crash.py [--kills 20] [--notes-mib 64] [--adapter-mib 128]
                                               [--seed 1] [--json PATH]

The real `memnet` command on one home, killed with SIGKILL at a random moment, --kills times
each, during:
- `memnet publish` of a --notes-mib notes file (the streamed, staged path),
- `memnet publish` of a --adapter-mib PEFT adapter folder,
- `memnet gc` collecting unpinned cubes of a few MiB.
After every kill the store must open, and every cube it lists must verify chunk by chunk. At the
end, GC past the staging grace must leave exactly the chunks of the cubes still listed: no space
is lost for good. (Daemons killed mid-get: scripts/campaign_churn.py.)
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
    """Kill `memnet <args_for(k)>` kills times at a random moment within its usual duration."""
    usual = timed(home, *args_for(-1))
    landed, finished, problems, staged_seen = 0, 0, [], 0
    for k in range(kills):
        if before is not None:
            before(k)
        proc = run_cli(home, *args_for(k))
        time.sleep(rng.uniform(0.3, max(0.4, usual)))   # from the imports to the end of the usual run
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            landed += 1
        else:
            finished += 1
        proc.communicate()
        listed, staged, found = check(home)
        staged_seen = max(staged_seen, staged)
        problems += [f"{label} kill {k}: {p}" for p in found]
    row = {"operation": label, "usual_s": usual, "kills": kills, "killed_before_done": landed,
           "finished_first": finished, "problems": problems, "most_staged_chunks": staged_seen}
    print(f"{label}: usual {usual:.1f} s; {landed} of {kills} killed before they finished ({finished} finished first); "
          f"after each: the store opened and every listed cube verified: "
          f"{'yes' if not problems else problems[:3]}; staged chunks left at most {staged_seen}")
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--notes-mib", type=int, default=64)
    ap.add_argument("--adapter-mib", type=int, default=128)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="memnet-crash-"))
    home = root / "home"
    home_mod.init(home).store.close()
    notes = [write_notes(root / f"notes-{k}.md", args.notes_mib * MIB) for k in range(2)]
    adapter = write_adapter(root / "adapter", args.adapter_mib * MIB)
    print(f"work in {root}")
    rows = [
        # a new file name each time is not needed: a cube's id covers its creation time
        campaign(home, "publish notes", lambda k: ["publish", str(notes[k % 2])], args.kills, rng),
        campaign(home, "publish adapter", lambda k: ["publish", str(adapter), "--base-model", "sha256:" + "ab" * 32],
                 args.kills, rng),
    ]

    def unpinned_cubes(k: int) -> None:
        node = home_mod.open_node(home)
        try:
            for i in range(12):   # 12 unpinned cubes of 2 MiB: GC has a few hundred chunks to delete
                items = [{"text": rng.randbytes(MIB // 4).hex()} for _ in range(4)]
                node.publisher.publish("plaintext", payloads.encode_items(items), {"items": 4}, pin=False)
        finally:
            node.store.close()

    unpinned_cubes(-1)
    rows.append(campaign(home, "gc", lambda k: ["gc"], args.kills, rng, before=unpinned_cubes))
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
