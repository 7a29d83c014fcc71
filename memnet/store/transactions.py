"""The LMDB side of the store: one environment per process, write transactions that grow the map
and retry, reads that follow a map grown by another process, and errors turned into memnet's.

The daemon uses its store from several threads (chunks staged and checked off the event loop),
and LMDB lets the map be resized only while no transaction of the process is active: a write
that grew the map while a staging thread held a transaction failed with "Cannot set_mapsize
while a write transaction is active" (found by the crash campaign), and a read running then
would have been invalidated. So writes run one at a time under the process's own lock, and a
resize waits for the reads in flight and holds new ones back (_MapGate)."""

from __future__ import annotations

import errno
import os
import resource
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import lmdb

from memnet.errors import StoreError, StoreFullError
from memnet.store.environment import close_environment, open_environment

T = TypeVar("T")
DB_NAMES = ("manifests", "chunks", "refs", "pins", "index", "names", "stats", "staged", "records")
_MAX_GROWTHS = 8
_DISK_FULL = ("No space left", "File too large", "Disk quota")


class _MapGate:
    """Reads in flight, counted; a resize of the map waits until there are none and holds new
    reads back while it runs. Writers are one at a time (`writing`, re-entrant)."""

    def __init__(self) -> None:
        self.writing = threading.RLock()
        self._cond = threading.Condition()
        self._reads = 0
        self._resizing = False
        self._mine = threading.local()   # reads of the current thread

    def read_begins(self) -> None:
        with self._cond:
            while self._resizing:
                self._cond.wait()
            self._reads += 1
        self._mine.depth = getattr(self._mine, "depth", 0) + 1

    def read_ends(self) -> None:
        self._mine.depth -= 1
        with self._cond:
            self._reads -= 1
            self._cond.notify_all()

    def resize(self, env: lmdb.Environment, size: int) -> None:
        if getattr(self._mine, "depth", 0):   # waiting for our own read would never end
            raise StoreError("the store map must grow during a read of this thread")
        with self._cond:
            self._resizing = True
            try:
                while self._reads:
                    self._cond.wait()
                env.set_mapsize(size)
            finally:
                self._resizing = False
                self._cond.notify_all()


class Transactions:
    def __init__(self, path: str, clock: Callable[[], float] = time.time):
        """clock: the wall clock for pins, use statistics and the staging grace (tests and
        simulations pass their own)."""
        self.path = path
        self.clock = clock
        self._pid = os.getpid()
        self.env = open_environment(path)
        self._gate = _MapGate()
        # one transaction for all of them: on a new store each open_db would otherwise commit
        # (and fsync) on its own
        with self.env.begin(write=True) as txn:
            self._db = {name: self.env.open_db(name.encode(), txn=txn) for name in DB_NAMES}

    def close(self) -> None:
        close_environment(self.path)

    def _check_process(self) -> None:
        # An LMDB environment must not be used across fork(): its locks and reader slots belong
        # to the process that opened it.
        if os.getpid() != self._pid:
            raise StoreError("the store was opened before fork(); open it again in the child process")

    def _write(self, fn: Callable[[lmdb.Transaction], T], need: int = 0) -> T:
        """Run fn in one write transaction; grow the map and retry when it is full."""
        self._check_process()
        with self._gate.writing:
            self._reserve(need)
            for _ in range(_MAX_GROWTHS):
                try:
                    with self.env.begin(write=True) as txn:
                        return fn(txn)
                except lmdb.MapFullError:
                    self._grow(self.env.info()["map_size"] * 2)
                except lmdb.MapResizedError:
                    self._gate.resize(self.env, 0)  # another process grew the map: adopt its size
                except lmdb.Error as exc:
                    raise self._translate(exc, need) from None
            raise StoreError("the store map could not be grown enough for this write")

    def _read(self, fn: Callable[[lmdb.Transaction], T], buffers: bool = False) -> T:
        self._check_process()
        for _ in range(2):
            self._gate.read_begins()
            try:
                with self.env.begin(buffers=buffers) as txn:
                    return fn(txn)
            except lmdb.MapResizedError:
                pass
            except lmdb.Error as exc:
                raise self._translate(exc) from None
            finally:
                self._gate.read_ends()
            with self._gate.writing:   # no write of ours can be active while the map is adopted
                self._gate.resize(self.env, 0)
        raise StoreError("the store map keeps changing size under this reader")

    def _translate(self, exc: lmdb.Error, need: int = 0) -> StoreError:
        text = str(exc)
        if any(marker in text for marker in _DISK_FULL) or getattr(exc, "errno", None) in (
            errno.ENOSPC, errno.EFBIG, errno.EDQUOT
        ) or ("Input/output error" in text and self._out_of_room(need)):
            return StoreFullError("the store has no room to grow (the disk is full, or a quota or file-size limit "
                                  "was reached); nothing of this write was kept")
        return StoreError(f"store error: {text}")

    def _out_of_room(self, need: int) -> bool:
        """Whether the disk (or the file size limit) is about used up. LMDB reports a write that
        stopped short, which is what running out of room in the middle of one looks like, as EIO
        ("short write, filesystem full?"); a failing device gives EIO too."""
        margin = need + 16 * 1024 * 1024
        try:
            size = os.path.getsize(os.path.join(self.path, "data.mdb"))
            fs = os.statvfs(self.path)
        except OSError:
            return False
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY and size + margin > limit:
            return True
        return fs.f_bavail * fs.f_frsize < margin

    def _reserve(self, need: int) -> None:
        """Grow the map before a large write instead of failing and retrying it."""
        if not need:
            return
        info, page = self.env.info(), self.env.stat()["psize"]
        used = (info["last_pgno"] + 1) * page
        wanted = used + int(need * 1.25) + 16 * 1024 * 1024
        if wanted > info["map_size"]:
            self._grow(wanted)

    def _grow(self, size: int) -> None:
        size = 1 << max(size - 1, 1).bit_length()  # powers of two: few resizes over a lifetime
        self._gate.resize(self.env, size)
