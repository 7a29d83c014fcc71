"""A KV cube consumed layer by layer while it is still being fetched.

The daemon stages each fetched chunk in the store as soon as it has checked it against its CID
(net/fetch.py), long before the cube itself is committed. A generation that chose to fetch a
cube therefore need not wait for the last byte: layer l's attention needs only layer l's K/V.
LayerFeed fills layer l of the cache the moment the chunks holding k.l / v.l (and their int8
scales) are in the store, and the model runs layer l-1 meanwhile (a forward pre-hook on every
decoder layer calls fill(l)), so the time to first token approaches max(transfer, compute)
rather than their sum. kv.payload_from_cache lays a cube's data out layer by layer for this;
a cube laid out otherwise (every key before any value) still loads, with less overlap.

Nothing is used before it is checked: the manifest was authenticated when the prefix lookup
returned it, each chunk was hashed against its CID before the daemon staged it, and the header
is validated against the manifest's meta before any tensor is read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from memnet.cube import payloads
from memnet.cube.manifest import Manifest
from memnet.errors import FetchError
from memnet.model import kv
from memnet.model.segments import Segments
from memnet.store import Store

POLL = 0.001   # seconds between looks at the store while a layer's chunks are on their way


class BackgroundFetch:
    """swarm.get(cube_id, deadline) in a thread: its result, or the exception it raised."""

    def __init__(self, get: Callable[[], Any]):
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.started = time.perf_counter()
        self.seconds = 0.0
        self._thread = threading.Thread(target=self._run, args=(get,), name="memnet-fetch", daemon=True)
        self._thread.start()

    def _run(self, get: Callable[[], Any]) -> None:
        try:
            self.result = get()
        except BaseException as exc:  # handed to whoever waits on it
            self.error = exc
        finally:
            self.seconds = time.perf_counter() - self.started
            self.done.set()

    def wait(self) -> Any:
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.result


class LayerFeed:
    """Fills the layers of an in-place cache from a cube's chunks as they reach the store."""

    def __init__(self, store: Store, manifest: Manifest, n_use: int, cache: Any, fetch: BackgroundFetch):
        self.store, self.manifest, self.n_use, self.cache, self.fetch = store, manifest, n_use, cache, fetch
        self.meta = manifest.meta
        self.pieces: dict[int, bytes] = {}   # chunk index -> its bytes, once in the store
        self.header: Any = None
        self.filled: set[int] = set()
        self.waited = 0.0                    # seconds spent waiting for chunks
        self.loading = 0.0                   # seconds spent converting them into the cache

    def _range_chunks(self, start: int, end: int) -> list[int]:
        size = self.manifest.chunk_size
        return list(range(start // size, (max(end, start + 1) - 1) // size + 1))

    def _source(self) -> Segments:
        size = self.manifest.chunk_size
        return Segments.at([(i * size, data) for i, data in self.pieces.items()], self.manifest.size)

    def _collect(self, indices: list[int]) -> bool:
        """Read whichever of these chunks are in the store now; whether all of them are."""
        for index in indices:
            if index not in self.pieces:
                data = self.store.chunk(self.manifest.chunks[index])
                if data is None:
                    return False   # chunks come about in order: the later ones are not here either
                self.pieces[index] = data
        return True

    def _await(self, indices: list[int]) -> None:
        """Until every chunk listed is in the store; FetchError (FetchDeadline) when the fetch
        ended without them."""
        mark = time.perf_counter()
        while not self._collect(indices):
            if self.fetch.done.is_set():
                if self.fetch.error is not None:
                    if isinstance(self.fetch.error, FetchError):
                        raise self.fetch.error
                    raise FetchError(f"the fetch stopped: {self.fetch.error}") from self.fetch.error
                if not self._collect(indices):   # the last chunks may have come with the commit
                    raise FetchError("the fetch finished, but chunks of the cube are missing from the store")
                break
            time.sleep(POLL)
        self.waited += time.perf_counter() - mark

    def _ensure_header(self) -> None:
        if self.header is not None:
            return
        self._await(self._range_chunks(0, 8))
        length = int.from_bytes(self._source()[0:8], "little")
        self._await(self._range_chunks(0, 8 + min(length, self.manifest.size - 8)))
        self.header = payloads.validate_activation(self._source(), self.meta)  # names, dtypes, shapes

    def fill(self, index: int) -> None:
        """Layer index of the cache, once its tensors are here."""
        if index in self.filled:
            return
        self._ensure_header()
        names = [f"{n}.{index}" for n in ("k", "v")]
        if self.meta["dtype"] == "int8":
            names += [f"{n}_scale.{index}" for n in ("k", "v")]
        start = self.header.data_start
        indices = sorted({i for name in names for i in self._range_chunks(
            start + self.header.tensors[name].start, start + self.header.tensors[name].end)})
        self._await(indices)
        mark = time.perf_counter()
        kv.fill_layer(self.cache.layers[index], self._source(), self.header, self.meta, index, self.n_use)
        self.loading += time.perf_counter() - mark
        self.filled.add(index)

    def hooks(self, layers: list[Any]) -> list[Any]:
        """Forward pre-hooks that fill each decoder layer's K/V just before it runs (the caller
        fills layer 0 first: the mask is sized from it) ; remove them after the forward."""
        return [layer.register_forward_pre_hook(lambda _module, _args, i=i: self.fill(i))
                for i, layer in enumerate(layers) if i > 0]
