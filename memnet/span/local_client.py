"""The CLI's side of the bridge's local channel (memnet/bridge/local.py): a blocking client for
one distributed generation (one connection = one chain of span sessions)."""

from __future__ import annotations

import json
import socket
import struct
from pathlib import Path
from typing import Any

import msgpack

from memnet.errors import DaemonError, NetworkError

STATE_FILE = "bridge.json"
HEADER = struct.Struct(">I")
MAX_REPLY = 80 * 1024 * 1024


class BridgeError(NetworkError):
    """The bridge (or a span server behind it) refused or failed; code is the span error code."""

    def __init__(self, message: str, code: str = ""):
        super().__init__(message)
        self.code = code


class BridgeClient:
    def __init__(self, port: int, token: str, timeout: float = 600.0):
        self.port, self.token, self.timeout = port, token, timeout
        self.sock: socket.socket | None = None
        self.reader = None

    @classmethod
    def for_home(cls, home: Path) -> BridgeClient:
        try:
            state = json.loads((Path(home) / STATE_FILE).read_text())
            return cls(int(state["port"]), str(state["token"]))
        except (OSError, ValueError, KeyError, TypeError):
            raise DaemonError(f"no hivemind bridge is running for {home}; start the daemon with --hivemind") from None

    def _call(self, request: dict[str, Any]) -> Any:
        if self.sock is None:
            try:
                self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            except OSError as exc:
                raise DaemonError(f"cannot reach the hivemind bridge: {exc}") from None
            self.sock.settimeout(self.timeout)
            self.reader = self.sock.makefile("rb")
            self._send({"token": self.token})
        self._send(request)
        header = self.reader.read(HEADER.size)
        if len(header) < HEADER.size:
            raise BridgeError("the hivemind bridge closed the connection")
        (length,) = HEADER.unpack(header)
        if length > MAX_REPLY:
            raise BridgeError("bridge reply too large")
        reply = msgpack.unpackb(self.reader.read(length), raw=False, strict_map_key=True)
        if not isinstance(reply, dict):
            raise BridgeError("malformed bridge reply")
        if "error" in reply:
            raise BridgeError(str(reply["error"]), str(reply.get("code") or ""))
        return reply.get("ok")

    def _send(self, message: dict[str, Any]) -> None:
        body = msgpack.packb(message, use_bin_type=True)
        self.sock.sendall(HEADER.pack(len(body)) + body)

    def open(self, max_length: int, tokens: int, seed: dict[str, Any] | None = None) -> dict[str, Any]:
        request: dict[str, Any] = {"op": "open", "max_length": max_length, "tokens": tokens}
        if seed is not None:
            request["seed"] = seed
        return self._call(request)

    def step(self, position: int, tokens: int, hidden: bytes) -> dict[str, Any]:
        return self._call({"op": "step", "position": position, "tokens": tokens, "hidden": hidden})

    def servers(self) -> list[dict[str, Any]]:
        return self._call({"op": "servers"})

    def close(self) -> None:
        if self.sock is not None:
            try:
                self._call({"op": "close"})
            except (NetworkError, DaemonError, OSError):
                pass
            self.sock.close()
            self.sock = None
