"""Length-prefixed frames, sans I/O: varint(len(body)) ‖ body, the length an unsigned LEB128 of
1-4 bytes, minimal, 1 <= len <= max_frame (docs/MIP.md §14.2). MIP and the span protocol
(memnet/span) both frame this way; what a body means is theirs. No libp2p here: the hivemind
bridge process imports it too.

Received pieces are kept as they came and joined once, when a frame is complete: one copy per
byte, however the frame was split (a growing buffer copied chunk frames two or three times).
"""

from __future__ import annotations

from memnet.errors import FormatError, LimitError

MAX_VARINT_BYTES = 4  # 28 bits


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def frame(body: bytes) -> bytes:
    return varint(len(body)) + body


class FrameSplitter:
    def __init__(self, max_frame: int):
        if not 0 < max_frame < 1 << (7 * MAX_VARINT_BYTES):
            raise ValueError(f"max_frame must be 1 … {(1 << (7 * MAX_VARINT_BYTES)) - 1}")
        self.max_frame = max_frame
        self._pieces: list[bytes | memoryview] = []
        self._size = 0

    @property
    def pending(self) -> int:
        """Bytes received but not yet returned in a frame (0 at a frame boundary)."""
        return self._size

    def feed(self, data: bytes) -> None:
        if data:
            if type(data) is not bytes:  # returned bodies are views of it: it must not change
                data = bytes(data)
            self._pieces.append(data)
            self._size += len(data)

    def _head(self, n: int) -> bytes:
        out = b""
        for piece in self._pieces:
            out += bytes(piece[:n - len(out)])
            if len(out) >= n:
                break
        return out

    def next_body(self) -> memoryview | None:
        """The next complete frame's body (a read-only view), or None if more bytes are needed;
        FormatError/LimitError for a bad length (refused before the body is buffered)."""
        head = self._head(MAX_VARINT_BYTES)
        length = 0
        for size in range(1, MAX_VARINT_BYTES + 1):
            if size > len(head):
                return None
            byte = head[size - 1]
            length |= (byte & 0x7F) << (7 * (size - 1))
            if not byte & 0x80:
                break
        else:
            raise FormatError(f"frame length varint longer than {MAX_VARINT_BYTES} bytes")
        if size > 1 and byte == 0:
            raise FormatError("frame length varint is not minimal")
        if length == 0:
            raise FormatError("empty frame")
        if length > self.max_frame:
            raise LimitError(f"frame of {length} bytes announced, the limit is {self.max_frame}")
        total = size + length
        if self._size < total:
            return None
        joined = self._pieces[0] if len(self._pieces) == 1 else b"".join(self._pieces)
        view = memoryview(joined)
        rest = view[total:]
        self._pieces = [rest] if len(rest) else []
        self._size = len(rest)
        return view[size:total]

    def eof(self) -> None:
        """The stream ended: FormatError if it ended inside a frame."""
        if self._size:
            raise FormatError(f"truncated frame: the stream ended with {self._size} bytes of an "
                              "incomplete frame")
