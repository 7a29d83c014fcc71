"""Crash consistency of the store: writers SIGKILLed at random moments of a large put.

What LMDB guarantees, and so what is asserted: a cube enters in one transaction, so after any
kill each cube is in the store whole or not at all. A child that printed "committed" had put()
return, so its cube must be there. A child killed before printing it may still have committed (the
kill can land between the commit and the print), so its cube may be there, but then whole. Nothing
else may be there: no chunks of a torn transaction, no refcount raised by one.
"""

from __future__ import annotations

import os
import random
import select
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memnet.cube import build, payloads
from memnet.store import Store
from tests import factories

pytestmark = pytest.mark.slow  # crash loops: the full suite only

ROOT = Path(__file__).resolve().parents[1]
RUNS = 20
ITEMS = 48  # ~1 MB of text each: a ~48 MB payload, 192 chunks of 256 KiB

CHILD = r"""
import sys, time
from memnet.store import Store
from tests.test_store_crash import crash_cube
path, seed = sys.argv[1], int(sys.argv[2])
store = Store(path)
cube = crash_cube(seed)
print("writing", cube.cube_id.hex(), flush=True)
started = time.monotonic()
store.put(cube, pin_reason=f"crash {seed}")
print("committed", f"{time.monotonic() - started:.3f}", flush=True)
time.sleep(60)  # every child ends by SIGKILL, before or after its commit
"""


def _text(seed: int) -> str:
    return random.Random(seed).randbytes(500_000).hex()


def crash_cube(seed: int) -> build.Cube:
    """A ~48 MB plaintext cube. Its first two items are the same in every cube (the same item count
    keeps them at the same offsets), so the cubes share their first chunks and every put raises
    the refcounts of chunks that other cubes hold."""
    texts = [_text(-1), _text(-2)] + [_text(seed * 1000 + i) for i in range(ITEMS - 2)]
    items = [{"text": t} for t in texts]
    return build.build(factories.key("crash"), "plaintext", payloads.encode_items(items), {"items": ITEMS},
                       created=factories.FIXED_CREATED + seed)


def _line_with(word: bytes):
    return lambda out: any(line.startswith(word) for line in out.split(b"\n")[:-1])


def _read_until(proc: subprocess.Popen, done, timeout: float, out: bytes = b"") -> bytes:
    """out and what the child wrote to stdout after it, until done(all of it), EOF or timeout."""
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    while done is None or not done(out):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            data = os.read(fd, 4096)
            if not data:
                break
            out += data
    return out


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def test_sigkill_during_put(tmp_path):
    path = str(tmp_path / "store")
    base = crash_cube(0)
    store = Store(path)  # stays open here: it must see the children's commits and outlive their deaths
    store.put(base, pin_reason="base")

    rng = random.Random(20260513)
    put_seconds: list[float] = []  # how long the children's puts took, as they reported
    committed: set[bytes] = set()
    uncommitted: set[bytes] = set()
    for run in range(RUNS):
        seed = run + 1
        with open(tmp_path / f"child-{run}.err", "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-c", CHILD, path, str(seed)],
                stdout=subprocess.PIPE, stderr=err, bufsize=0, cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
            try:
                out = _read_until(proc, _line_with(b"writing "), timeout=120)
                assert out.startswith(b"writing "), (out, (tmp_path / f"child-{run}.err").read_text())
                cube_id = bytes.fromhex(out.split()[1].decode())
                if run in (0, RUNS - 1):
                    # not cut: the first measures a put, the last shows a writer still commits
                    # after every kill before it (the dead writers' lock was recovered)
                    out = _read_until(proc, _line_with(b"committed "), timeout=120, out=out)
                    assert b"committed" in out, (tmp_path / f"child-{run}.err").read_text()
                else:
                    # a random moment within about the time a put takes here (puts run from
                    # ~0.03 s to ~0.3 s on different disks), so most kills land mid-put and
                    # some just after
                    time.sleep(rng.uniform(0, 1.3 * statistics.median(put_seconds)))
                _kill(proc)
                out = _read_until(proc, None, timeout=10, out=out)  # the rest, up to EOF
            finally:
                _kill(proc)
        if b"committed" in out:
            put_seconds.append(float(out.split(b"committed ", 1)[1].split()[0]))
            committed.add(cube_id)
            assert store.has(cube_id)
        else:
            uncommitted.add(cube_id)

    assert len(committed) + len(uncommitted) == RUNS
    assert uncommitted, "no kill landed before a commit"
    assert len(committed) >= 2

    # every committed cube is there; nothing is there that no child was writing
    listed = {e.cube_id for e in store.entries()}
    assert committed | {base.cube_id} <= listed
    assert listed <= committed | uncommitted | {base.cube_id}
    killed_after_commit = listed & uncommitted  # killed between put() returning and the print
    assert len(listed) == 1 + len(committed) + len(killed_after_commit)
    store.close()

    store = Store(path)  # a fresh open after all the kills
    try:
        chunks: set[bytes] = set()
        for cube_id in listed:
            cube = store.verify(cube_id)  # whole: every chunk present and hashing to its CID
            chunks |= set(cube.manifest.chunks)
        usage = store.usage()
        assert usage["cubes"] == len(listed) and usage["pins"] == len(listed)
        assert usage["chunks"] == len(chunks)  # no chunk of a torn transaction
        # refcounts were raised only by committed transactions: dropping every cube frees them all
        for cube_id in listed:
            store.unpin(cube_id)
        report = store.gc()
        assert report.cubes == len(listed) and report.chunks == len(chunks)
        usage = store.usage()
        assert (usage["cubes"], usage["chunks"], usage["pins"]) == (0, 0, 0)
        assert store.put(base) is True
        store.verify(base.cube_id)
    finally:
        store.close()
