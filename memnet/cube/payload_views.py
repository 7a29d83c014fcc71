"""Payloads that are not one bytes object, so that a publish never holds a large one whole:

- Spliced: a short head followed by the tail of a larger bytes-like (an adapter's safetensors
  file with its header rewritten, the file read from disk in pieces). It offers what the payload
  checks and the chunker use: len() and contiguous slices.
- Streamed: a payload known by its size and produced front to back in pieces (a notes file
  encoded item by item), for kinds whose check reads a stream (plaintext)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol


class Sliceable(Protocol):
    def __len__(self) -> int: ...

    def __getitem__(self, index: slice) -> bytes: ...


class Spliced:
    """head + body[body_start:], without joining them."""

    def __init__(self, head: bytes, body: Sliceable, body_start: int):
        if not 0 <= body_start <= len(body):
            raise ValueError("body_start is outside the body")
        self.head, self.body, self.body_start = head, body, body_start
        self._len = len(head) + len(body) - body_start

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: slice) -> bytes:
        if not isinstance(index, slice):
            raise TypeError("only slices")
        start, stop, step = index.indices(self._len)
        if step != 1:
            raise ValueError("only contiguous slices")
        if stop <= start:
            return b""
        head_len = len(self.head)
        out = self.head[start:stop] if start < head_len else b""
        if stop > head_len:
            first = self.body_start + max(start - head_len, 0)
            out += bytes(self.body[first:self.body_start + stop - head_len])
        return out


@dataclass(frozen=True)
class Streamed:
    """size bytes, given by pieces() front to back (each call starts again)."""

    size: int
    pieces: Callable[[], Iterable[bytes]]

    def __len__(self) -> int:
        return self.size
