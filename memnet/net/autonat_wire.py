"""The reachability probe on the wire (/memnet/autonat/1.0.0, docs/MIP.md §22.2), sans I/O.

One exchange per stream, each message one frame (memnet/net/frames.py) holding a canonical
msgpack map:

    client -> server   {"t": "dial_me", "ports": [port, ...]}          1-4 TCP ports
    server -> client   {"t": "dial_result", "status": S, "addr": A}

The client names ports only, never an address: the server dials back the IP address it sees the
request come from, so a probe cannot aim the server at a third party. status is "ok" (a fresh
connection to A completed its Noise handshake with the client's peer id), "dial_error" (no port
answered) or "refused" (the server will not probe now: busy, relayed, rate limited); A is the
multiaddr dialed ("" unless ok). Unknown or missing fields are errors, as in MIP v1.
"""

from __future__ import annotations

from dataclasses import dataclass

from memnet.cube import canonical
from memnet.errors import FormatError, LimitError
from memnet.net.frames import FrameSplitter, frame

PROTOCOL_ID = "/memnet/autonat/1.0.0"
MAX_FRAME = 512
MAX_PORTS = 4
MAX_ADDR = 128
STATUSES = ("ok", "dial_error", "refused")


@dataclass(frozen=True)
class DialMe:
    ports: tuple[int, ...]


@dataclass(frozen=True)
class DialResult:
    status: str
    addr: str = ""


def _exact_fields(obj: object, t: str, names: set[str]) -> dict:
    if not isinstance(obj, dict):
        raise FormatError(f"autonat message is not a map but {type(obj).__name__}")
    if obj.get("t") != t:
        raise FormatError(f"expected an autonat {t!r} message, got {obj.get('t')!r}"[:200])
    if set(obj) != names | {"t"}:
        raise FormatError(f"{t}: fields must be exactly {sorted(names | {'t'})}, got {sorted(map(str, obj))}"[:200])
    return obj


def _check_ports(ports: object) -> tuple[int, ...]:
    if not isinstance(ports, (list, tuple)):
        raise FormatError("dial_me: ports must be a list")
    if not 1 <= len(ports) <= MAX_PORTS:
        raise LimitError(f"dial_me: 1 … {MAX_PORTS} ports, got {len(ports)}")
    if any(type(p) is not int or not 1 <= p <= 65535 for p in ports):
        raise FormatError("dial_me: a port must be an integer 1 … 65535")
    if len(set(ports)) != len(ports):
        raise FormatError("dial_me: a port is listed twice")
    return tuple(ports)


def _check_result(status: object, addr: object) -> DialResult:
    if status not in STATUSES:
        raise FormatError(f"dial_result: unknown status {status!r}"[:200])
    if not isinstance(addr, str):
        raise FormatError("dial_result: addr must be a string")
    if len(addr) > MAX_ADDR:
        raise LimitError(f"dial_result: addr is {len(addr)} characters, the limit is {MAX_ADDR}")
    if (status == "ok") != bool(addr):
        raise FormatError("dial_result: addr is given exactly when status is ok")
    return DialResult(str(status), addr)


def encode_dial_me(ports: list[int] | tuple[int, ...]) -> bytes:
    return frame(canonical.encode({"t": "dial_me", "ports": list(_check_ports(list(ports)))}))


def encode_dial_result(result: DialResult) -> bytes:
    checked = _check_result(result.status, result.addr)
    return frame(canonical.encode({"t": "dial_result", "status": checked.status, "addr": checked.addr}))


class Reader:
    """Feed stream bytes; message() returns the one expected message once its frame is whole."""

    def __init__(self, expect: str):
        self.expect = expect
        self._frames = FrameSplitter(MAX_FRAME)

    def feed(self, data: bytes) -> DialMe | DialResult | None:
        self._frames.feed(data)
        body = self._frames.next_body()
        if body is None:
            return None
        if self._frames.pending:
            raise FormatError("autonat: bytes after the message")
        obj = canonical.decode(bytes(body), MAX_FRAME)
        if self.expect == "dial_me":
            return DialMe(_check_ports(_exact_fields(obj, "dial_me", {"ports"})["ports"]))
        fields = _exact_fields(obj, "dial_result", {"status", "addr"})
        return _check_result(fields["status"], fields["addr"])

    def eof(self) -> None:
        self._frames.eof()
        raise FormatError(f"autonat: the stream ended before a {self.expect} message")
