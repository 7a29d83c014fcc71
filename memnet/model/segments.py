"""A payload held as its consecutive chunks (views of the store's map), read in place.

A KV cube's tensors are converted straight from the chunks into the model's cache tensors:
joining the chunks first would copy the whole payload into fresh memory that is page-faulted in
on every load (23 ms of a 2048-token float16 load here), only to be converted and dropped.
"""

from __future__ import annotations

import bisect
import itertools
from typing import Any

from memnet.errors import PolicyError


class Segments:
    """Read-only bytes made of pieces; supports len() and slicing (copies only the slice).

    Sparse: Segments.at([(offset, piece), ...], total) holds only some ranges of a payload of
    total bytes (a span server's share of a KV cube); reading a range it lacks is a PolicyError."""

    def __init__(self, pieces: list[memoryview | bytes]):
        self.pieces = [memoryview(p).cast("B") for p in pieces if len(p)]
        self.starts = list(itertools.accumulate((len(p) for p in self.pieces), initial=0))
        self.total = self.starts[-1]

    @classmethod
    def at(cls, parts: list[tuple[int, memoryview | bytes]], total: int) -> Segments:
        out = cls([])
        placed = sorted((offset, memoryview(p).cast("B")) for offset, p in parts if len(p))
        out.pieces = [p for _, p in placed]
        out.starts = [offset for offset, _ in placed] + [total]
        out.total = total
        if any(a + len(p) > b for a, p, b in zip(out.starts, out.pieces, out.starts[1:])):
            raise ValueError("overlapping or oversized parts")
        return out

    def __len__(self) -> int:
        return self.total

    def __getitem__(self, key: slice) -> bytes:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("Segments supports plain slices only")
        start, stop, _ = key.indices(len(self))
        return b"".join(self.views(start, stop))

    def views(self, start: int, stop: int) -> list[memoryview]:
        """Zero-copy views covering bytes [start, stop), in order."""
        out = []
        i = bisect.bisect_right(self.starts, start) - 1
        while start < stop:
            if i < 0 or i >= len(self.pieces) or not self.starts[i] <= start < self.starts[i] + len(self.pieces[i]):
                raise PolicyError(f"bytes {start}-{stop} of the payload are not at hand")
            base = self.starts[i]
            end = min(stop, base + len(self.pieces[i]))
            out.append(self.pieces[i][start - base:end - base])
            start, i = end, i + 1
        return out


def copy_range(dest: Any, source: Segments, start: int, stop: int, torch_dtype: Any, item_size: int) -> None:
    """Convert bytes [start, stop) of source, elements of torch_dtype, into the flat tensor dest
    (any dtype; one conversion, no intermediate copy unless an element straddles two pieces)."""
    import warnings

    from memnet.model.runtime import torch

    views = source.views(start, stop)
    if any(len(v) % item_size for v in views):  # an element split across pieces: join this range
        views = [memoryview(b"".join(views))]
    position = 0
    with warnings.catch_warnings():  # views of read-only memory: only read, then converted
        warnings.simplefilter("ignore", UserWarning)
        for view in views:
            count = len(view) // item_size
            dest[position:position + count].copy_(torch.frombuffer(view, dtype=torch_dtype, count=count))
            position += count
