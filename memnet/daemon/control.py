"""The local control channel between the CLI and its daemon: loopback TCP, one request per
connection, authenticated by the token in daemon.json (mode 0600, so only the node's user can
read it).

Frames are a 4-byte big-endian length and a msgpack map. A request is {token, cmd, args}; the
daemon answers with any number of {progress: [done, total]} and then {ok: result} or
{error: message, exit: code}.
"""

from __future__ import annotations

import hmac
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgpack
import trio

from memnet.daemon import state as state_mod
from memnet.errors import DaemonError, MemnetError

log = logging.getLogger("memnet.control")

MAX_CONTROL_FRAME = 16 * 1024 * 1024
HEADER = struct.Struct(">I")
Handler = Callable[[dict[str, Any], Callable[[int, int], None]], Awaitable[Any]]


def pack(message: dict[str, Any]) -> bytes:
    body = msgpack.packb(message, use_bin_type=True)
    return HEADER.pack(len(body)) + body


def unpack(body: bytes) -> dict[str, Any]:
    try:
        message = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception:
        raise DaemonError("malformed control message") from None
    if not isinstance(message, dict):
        raise DaemonError("malformed control message")
    return message


# -- daemon side ----------------------------------------------------------------------------------

async def _read_frame(stream: trio.SocketStream) -> bytes:
    buf = bytearray()
    need = HEADER.size
    header_done = False
    while True:
        while len(buf) < need:
            data = await stream.receive_some(need - len(buf))
            if not data:
                raise DaemonError("control connection closed mid-frame")
            buf += data
        if header_done:
            return bytes(buf[HEADER.size:])
        (length,) = HEADER.unpack(buf[:HEADER.size])
        if length > MAX_CONTROL_FRAME:
            raise DaemonError("control frame too large")
        need, header_done = HEADER.size + length, True


async def serve(port_ready: Callable[[int], None], token: str, commands: dict[str, Handler]) -> None:
    async def connection(stream: trio.SocketStream) -> None:
        try:
            await one_request(stream)
        except Exception:  # whatever one client does, the channel stays up for the next
            log.exception("control connection failed")

    async def one_request(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                with trio.fail_after(10):
                    request = unpack(await _read_frame(stream))
            except (DaemonError, trio.TooSlowError, trio.BrokenResourceError):
                return
            given = request.get("token")
            if not isinstance(given, str) or not hmac.compare_digest(given.encode(), token.encode()):
                await stream.send_all(pack({"error": "bad control token", "exit": 1}))
                return
            cmd = request.get("cmd")
            handler = commands.get(cmd) if isinstance(cmd, str) else None
            args = request.get("args")
            if handler is None or not isinstance(args, dict):
                await stream.send_all(pack({"error": f"unknown daemon command {cmd!r}", "exit": 2}))
                return
            pending: list[bytes] = []
            finished = trio.Event()

            def progress(done: int, total: int) -> None:
                pending.append(pack({"progress": [done, total]}))

            async def flush_progress() -> None:
                # never cancelled mid-send: a half-written frame would garble the channel
                while True:
                    if pending:
                        frames = b"".join(pending)
                        pending.clear()
                        await stream.send_all(frames)
                    if finished.is_set():
                        return
                    with trio.move_on_after(0.1):
                        await finished.wait()

            async def run_handler() -> None:
                nonlocal reply
                try:
                    reply = pack({"ok": await handler(args, progress)})
                except MemnetError as exc:
                    reply = pack({"error": str(exc), "exit": exc.exit_code})
                except Exception as exc:  # a bug: keep the daemon up, tell the caller
                    log.exception("daemon command %s failed", cmd)
                    reply = pack({"error": f"internal daemon error: {exc!r}", "exit": 1})
                finally:
                    finished.set()

            reply = b""
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(flush_progress)
                    nursery.start_soon(run_handler)
                await stream.send_all(reply)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                log.debug("control client went away during %s", cmd)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port_ready(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(connection, listeners)


# -- CLI side -------------------------------------------------------------------------------------

class ControlClient:
    def __init__(self, state: state_mod.DaemonState):
        self.state = state

    @classmethod
    def for_home(cls, home: Path) -> ControlClient | None:
        state = state_mod.read(home)
        return cls(state) if state is not None else None

    def call(self, cmd: str, timeout: float = 600.0,
             on_progress: Callable[[int, int], None] | None = None, **args: Any) -> Any:
        try:
            with socket.create_connection(("127.0.0.1", self.state.control_port), timeout=10) as sock:
                sock.settimeout(timeout)
                sock.sendall(pack({"token": self.state.token, "cmd": cmd, "args": args}))
                reader = sock.makefile("rb")
                while True:
                    header = reader.read(HEADER.size)
                    if len(header) < HEADER.size:
                        raise DaemonError("the daemon closed the control connection")
                    (length,) = HEADER.unpack(header)
                    if length > MAX_CONTROL_FRAME:
                        raise DaemonError("control frame too large")
                    message = unpack(reader.read(length))
                    if "progress" in message:
                        if on_progress:
                            on_progress(*message["progress"])
                        continue
                    if "error" in message:
                        error = DaemonError(str(message["error"]))
                        error.exit_code = int(message.get("exit", 1))
                        raise error
                    return message.get("ok")
        except OSError as exc:
            raise DaemonError(f"cannot reach the daemon (pid {self.state.pid}): {exc}") from None
