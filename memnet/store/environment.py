"""One LMDB Environment per process and path, never carried across fork()."""

from __future__ import annotations

import os

import lmdb

from memnet.errors import StoreError

_ENVIRONMENTS: dict[str, tuple[int, lmdb.Environment]] = {}
# Environments inherited from a parent across fork(). They are never used again, and never closed
# either: closing their file descriptors would drop this process's fcntl locks on lock.mdb, which
# a fresh environment on the same path relies on.
_INHERITED: list[lmdb.Environment] = []
INITIAL_MAP_SIZE = 64 * 1024 * 1024
MAX_DBS = 8


def open_environment(path: str) -> lmdb.Environment:
    key = os.path.realpath(path)
    held = _ENVIRONMENTS.get(key)
    if held is not None:
        pid, env = held
        if pid == os.getpid():
            return env
        _INHERITED.append(env)  # opened before fork(): keep it alive but unused, open afresh
        del _ENVIRONMENTS[key]
    os.makedirs(key, mode=0o700, exist_ok=True)
    try:
        env = lmdb.open(
            key,
            map_size=INITIAL_MAP_SIZE,
            max_dbs=MAX_DBS,
            readahead=False,  # chunks are read by key, not scanned
            max_readers=256,
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
