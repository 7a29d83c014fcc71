"""The local control channel between the CLI and its daemon: loopback TCP, one request per
connection, authenticated by the token in daemon.json (mode 0600, so only the node's user can
read it).

Frames are a 4-byte big-endian length and a msgpack map. The client sends a hello {token}, then
the request {cmd, args} (a hello holding more than the token is the whole request). Before the
token is checked a frame may be at most MAX_HELLO_FRAME bytes and at most MAX_UNAUTHENTICATED
connections may be waiting, so a stranger on the machine cannot make the daemon buffer much; a
newcomer pushes out the connection that has waited longest, so a stranger holding the door full
cannot keep the node's own CLI out (its hello follows its connect within a millisecond).
The daemon answers with any number of {progress: [done, total]} and then {ok: result} or
{error: message, exit: code}.
"""

from __future__ import annotations

import hmac
import logging
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import trio

from memnet.daemon import state as state_mod
from memnet.daemon.base import Service
from memnet.daemon.commands import Table
from memnet.errors import DaemonError, DaemonTimeout, MemnetError

log = logging.getLogger("memnet.control")

MAX_CONTROL_FRAME = 8 * 1024 * 1024  # an authenticated request (a manifest is at most 4 MiB)
MAX_HELLO_FRAME = 4096               # anything read before the token is checked
MAX_UNAUTHENTICATED = 64             # connections that have not yet shown the token
HELLO_TIMEOUT = 5.0
REQUEST_TIMEOUT = 10.0
HEADER = struct.Struct(">I")


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

async def _read_frame(stream: trio.SocketStream, limit: int) -> bytes:
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
        if length > limit:
            raise DaemonError("control frame too large")
        need, header_done = HEADER.size + length, True


class _Connection:
    def __init__(self, stream: trio.SocketStream, token: str, commands: Table):
        self.stream, self.token, self.commands = stream, token, commands

    async def authenticate(self) -> dict[str, Any] | None:
        """The request if the hello holds the token (None: hung up or refused)."""
        try:
            with trio.fail_after(HELLO_TIMEOUT):
                hello = unpack(await _read_frame(self.stream, MAX_HELLO_FRAME))
        except (DaemonError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError):
            return None
        given = hello.get("token")
        if not isinstance(given, str) or not hmac.compare_digest(given.encode(), self.token.encode()):
            await self.stream.send_all(pack({"error": "bad control token", "exit": 1}))
            return None
        if set(hello) != {"token"}:  # the whole request in one (small) frame
            return hello
        try:
            with trio.fail_after(REQUEST_TIMEOUT):
                return unpack(await _read_frame(self.stream, MAX_CONTROL_FRAME))
        except (DaemonError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError):
            return None

    async def answer(self, request: dict[str, Any]) -> None:
        name = request.get("cmd")
        try:
            command, args = self.commands.resolve(name, request.get("args"))
        except MemnetError as exc:
            await self.stream.send_all(pack({"error": str(exc), "exit": exc.exit_code}))
            return
        pending: list[bytes] = []
        finished = trio.Event()
        reply = b""

        def progress(done: int, total: int) -> None:
            pending.append(pack({"progress": [done, total]}))

        async def flush_progress() -> None:
            # never cancelled mid-send: a half-written frame would garble the channel
            while True:
                if pending:
                    frames = b"".join(pending)
                    pending.clear()
                    await self.stream.send_all(frames)
                if finished.is_set():
                    return
                with trio.move_on_after(0.1):
                    await finished.wait()

        async def run_handler() -> None:
            nonlocal reply
            try:
                reply = pack({"ok": await command.handler(args, progress)})
            except MemnetError as exc:
                reply = pack({"error": str(exc), "exit": exc.exit_code})
            except BaseExceptionGroup as group:  # a nursery's: a memnet error inside is the answer
                found = group.subgroup(MemnetError)
                if found is None:
                    if group.subgroup(trio.Cancelled) is not None:
                        raise
                    log.exception("daemon command %s failed", command.name)
                    reply = pack({"error": f"internal daemon error: {_first_leaf(group)!r}", "exit": 1})
                else:
                    first = _first_leaf(found)
                    reply = pack({"error": str(first), "exit": first.exit_code})
            except Exception as exc:  # a bug: keep the daemon up, tell the caller
                log.exception("daemon command %s failed", command.name)
                reply = pack({"error": f"internal daemon error: {exc!r}", "exit": 1})
            finally:
                finished.set()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(flush_progress)
                nursery.start_soon(run_handler)
            await self.stream.send_all(reply)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            log.debug("control client went away during %s", command.name)


class Door:
    """The connections waiting to show the token: at most `size`; a newcomer pushes out the one
    that has waited longest."""

    def __init__(self, size: int = MAX_UNAUTHENTICATED):
        self.size = size
        self.waiting: dict[object, trio.CancelScope] = {}   # oldest first
        self.pushed_out = 0

    def enter(self, key: object, scope: trio.CancelScope) -> None:
        while len(self.waiting) >= self.size:
            oldest = next(iter(self.waiting))
            self.waiting.pop(oldest).cancel()
            self.pushed_out += 1
        self.waiting[key] = scope

    def leave(self, key: object) -> None:
        self.waiting.pop(key, None)


async def serve(port_ready: Callable[[int], None], token: str, commands: Table, door: Door | None = None) -> None:
    door = door or Door()

    async def connection(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                conn, key, request = _Connection(stream, token, commands), object(), None
                with trio.CancelScope() as scope:
                    door.enter(key, scope)
                    try:
                        request = await conn.authenticate()
                    finally:
                        door.leave(key)
                if request is not None:
                    await conn.answer(request)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            except Exception:  # whatever one client does, the channel stays up for the next
                log.exception("control connection failed")

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port_ready(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(connection, listeners)


class ControlServer(Service):
    """The control channel as a daemon service: serves the daemon's command table."""

    name = "control"

    def __init__(self, token: str, table: Table):
        super().__init__()
        self.token, self.table = token, table
        self.port: int | None = None

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        def ready(port: int) -> None:
            self.port = port
            task_status.started(port)
        await serve(ready, self.token, self.table)


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group


# -- CLI side -------------------------------------------------------------------------------------

POLL = 0.25   # s: how often a waiting call looks at its give_up rule


class ControlClient:
    def __init__(self, state: state_mod.DaemonState):
        self.state = state

    @classmethod
    def for_home(cls, home: Path) -> ControlClient | None:
        state = state_mod.read(home)
        return cls(state) if state is not None else None

    def call(self, cmd: str, timeout: float = 600.0,
             on_progress: Callable[[int, int], None] | None = None,
             give_up: Callable[[float, int, int], bool] | None = None, **args: Any) -> Any:
        """Run a command. give_up(seconds so far, done, total) is asked on every progress frame
        and every POLL seconds; when it says so, or after timeout seconds, DaemonTimeout (the
        daemon runs the command to its end regardless)."""
        started = time.monotonic()
        done = total = 0
        try:
            with socket.create_connection(("127.0.0.1", self.state.control_port), timeout=10) as sock:
                sock.settimeout(min(POLL, timeout))
                sock.sendall(pack({"token": self.state.token}) + pack({"cmd": cmd, "args": args}))
                buf = bytearray()

                def read(n: int) -> bytes:
                    while len(buf) < n:
                        try:
                            chunk = sock.recv(65536)
                        except TimeoutError:
                            chunk = None
                        if chunk == b"":
                            raise DaemonError("the daemon closed the control connection")
                        if chunk:
                            buf.extend(chunk)
                        elapsed = time.monotonic() - started
                        if elapsed >= timeout or (give_up is not None and give_up(elapsed, done, total)):
                            raise TimeoutError
                    out = bytes(buf[:n])
                    del buf[:n]
                    return out

                while True:
                    (length,) = HEADER.unpack(read(HEADER.size))
                    if length > MAX_CONTROL_FRAME:
                        raise DaemonError("control frame too large")
                    message = unpack(read(length))
                    if "progress" in message:
                        done, total = message["progress"]
                        if on_progress:
                            on_progress(done, total)
                        continue
                    if "error" in message:
                        error = DaemonError(str(message["error"]))
                        error.exit_code = int(message.get("exit", 1))
                        raise error
                    return message.get("ok")
        except TimeoutError:
            # connected, then no answer in time: the command may still be running in the daemon
            raise DaemonTimeout(f"the daemon did not answer {cmd} within {time.monotonic() - started:.1f} s") from None
        except OSError as exc:
            raise DaemonError(f"cannot reach the daemon (pid {self.state.pid}): {exc}") from None
