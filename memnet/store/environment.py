"""One LMDB Environment per process and path, never carried across fork()."""

from __future__ import annotations

import os

import lmdb

from memnet.errors import StoreError

_ENVIRONMENTS: dict[str, tuple[int, lmdb.Environment]] = {}
INITIAL_MAP_SIZE = 64 * 1024 * 1024
MAX_DBS = 16  # room for new databases without a format break


def open_environment(path: str) -> lmdb.Environment:
    key = os.path.realpath(path)
    held = _ENVIRONMENTS.get(key)
    if held is not None:
        pid, env = held
        if pid == os.getpid():
            return env
        # Inherited across fork(): unusable here, and py-lmdb refuses a second open of the path
        # while it exists. Closing it before this process takes any lock of its own unmaps our
        # copies and touches nothing of the parent's, unless a transaction was running in another
        # thread at the moment of fork (a Store holds none between calls).
        del _ENVIRONMENTS[key]
        env.close()
    os.makedirs(key, mode=0o700, exist_ok=True)
    try:
        env = lmdb.open(
            key,
            map_size=INITIAL_MAP_SIZE,
            max_dbs=MAX_DBS,
            # readahead stays on: a chunk is a run of 64 contiguous overflow pages read front to
            # back, and with MADV_RANDOM a cold read faults them in one 4 KiB page at a time
            max_readers=256,
            max_spare_txns=0,  # a cached read transaction would keep a reader slot across fork()
            mode=0o600,        # data.mdb and lock.mdb: private to the node's user, like the rest of the home
        )
    except lmdb.Error as exc:
        raise StoreError(f"cannot open the store at {key}: {exc}") from None
    env.reader_check()  # free slots of readers killed earlier; stale ones block page reuse
    _ENVIRONMENTS[key] = (os.getpid(), env)
    return env


def close_environment(path: str) -> None:
    key = os.path.realpath(path)
    held = _ENVIRONMENTS.get(key)
    if held is not None and held[0] == os.getpid():
        del _ENVIRONMENTS[key]
        held[1].close()
