"""The store used from several threads, as the daemon does (chunks staged off the event loop):
the map grows while another thread reads, and while another thread waits to write (the crash
campaign's get failed with "Cannot set_mapsize while a write transaction is active")."""

from __future__ import annotations

import os
import threading
import time

from memnet.cube import cid
from memnet.store import Store
from memnet.store.environment import INITIAL_MAP_SIZE


def test_the_map_grows_while_other_threads_read_and_write(tmp_path):
    store = Store(str(tmp_path / "store"))
    try:
        started, errors = threading.Event(), []

        def slow_reader() -> None:
            def look(txn):
                started.set()
                time.sleep(0.3)   # a transaction open while the other thread needs a bigger map
                return txn.stat()["entries"]
            try:
                store._read(look)
            except Exception as exc:
                errors.append(exc)

        def writer(seed: int) -> None:
            try:
                data = [os.urandom(256 * 1024) for _ in range(64)]   # 16 MiB each
                store.stage_chunks([(cid.cid_of(d), d) for d in data])
            except Exception as exc:
                errors.append(exc)

        reader = threading.Thread(target=slow_reader)
        reader.start()
        started.wait(5)
        writers = [threading.Thread(target=writer, args=(i,)) for i in range(6)]   # 96 MiB: past the first map
        for thread in writers:
            thread.start()
        for thread in (reader, *writers):
            thread.join(60)
        assert errors == []
        assert store.env.info()["map_size"] > INITIAL_MAP_SIZE
    finally:
        store.close()
