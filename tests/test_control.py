"""The daemon's control channel (memnet/daemon/control.py): the real trio server in a background
thread, the real blocking ControlClient, raw sockets for misbehaving clients; and daemon.json
(memnet/daemon/state.py)."""

from __future__ import annotations

import os
import socket
import stat
import struct
import subprocess
import sys
import threading
import time

from dataclasses import dataclass

import msgpack
import pytest
import trio

from memnet.daemon import commands, control, state
from memnet.daemon.control import HEADER, MAX_CONTROL_FRAME, MAX_HELLO_FRAME, ControlClient
from memnet.errors import DaemonError, NotFoundError, PolicyError, UsageError

TOKEN = "f00dfeed" * 4


# -- a live control server ------------------------------------------------------------------------

@dataclass(frozen=True)
class ProgressArgs:
    n: int


@dataclass(frozen=True)
class FailArgs:
    fail: bool = False


@dataclass(frozen=True)
class SleepArgs:
    s: float = 0.2


async def _echo(args, progress):
    return args  # a dict-typed command: the map as sent


async def _progress(args, progress):
    n = args.n
    for i in range(1, n + 1):
        progress(i, n)
        if i == 2:
            await trio.sleep(0.15)  # let the periodic flush send some frames early
    return "done"


async def _usage(args, progress):
    raise UsageError("you asked for the impossible")


async def _not_found(args, progress):
    progress(1, 2)
    await trio.sleep(0.15)
    raise NotFoundError("no cube bafyfoo in the store")


async def _quick_progress(args, progress):
    for i in range(1, 4):
        progress(i, 3)  # no checkpoint between the last progress and the result
    if args.fail:
        raise UsageError("failed after progress")
    return "quick"


async def _policy(args, progress):
    raise PolicyError("expired at 2020-01-01")


async def _bug(args, progress):
    raise RuntimeError("oops")


async def _sleepy(args, progress):
    await trio.sleep(args.s)
    return {"slept": True}


async def _unpackable(args, progress):
    return {1, 2, 3}  # a handler bug: a set does not pack


COMMANDS = commands.Table([
    commands.Command("echo", _echo, dict), commands.Command("progress", _progress, ProgressArgs),
    commands.Command("usage", _usage), commands.Command("not_found", _not_found),
    commands.Command("policy", _policy), commands.Command("bug", _bug),
    commands.Command("sleepy", _sleepy, SleepArgs), commands.Command("unpackable", _unpackable),
    commands.Command("quick_progress", _quick_progress, FailArgs)])


class Server:
    """control.serve run by trio.run in a thread; stop() cancels it from outside."""

    def __init__(self):
        self.port: int | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        async def main():
            self._token = trio.lowlevel.current_trio_token()
            with trio.CancelScope() as scope:
                self._scope = scope

                def ready(port):
                    self.port = port
                    self._ready.set()
                await control.serve(ready, TOKEN, COMMANDS)
        try:
            trio.run(main)
        except BaseException as exc:  # noqa: BLE001 - recorded for the test to assert on
            self.error = exc
        finally:
            self._ready.set()

    def start(self):
        self.thread.start()
        assert self._ready.wait(10) and self.port, f"control server did not start: {self.error!r}"
        return self

    @property
    def alive(self) -> bool:
        return self.thread.is_alive() and self.error is None

    def stop(self):
        if self.thread.is_alive() and self._token is not None:
            try:
                trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
            except trio.RunFinishedError:
                pass
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture
def server():
    s = Server().start()
    yield s
    s.stop()


def client(server: Server, token: str = TOKEN) -> ControlClient:
    return ControlClient(state.DaemonState(pid=os.getpid(), peer_id="12D3KooWtest", addrs=[],
                                           control_port=server.port, token=token, started=0))


def raw_exchange(server: Server, payload: bytes, timeout: float = 5.0) -> bytes:
    """Send payload on a fresh connection, half-close, and return all the server sent back."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        out = b""
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                out += chunk
        except (ConnectionResetError, BrokenPipeError, OSError) as exc:
            # the server hung up with our bytes unread (RST): a hang-up as well, not a timeout
            assert not isinstance(exc, socket.timeout), "the server neither answered nor hung up"
        return out


def frames(data: bytes) -> list[dict]:
    out = []
    while data:
        (length,) = HEADER.unpack(data[:4])
        out.append(msgpack.unpackb(data[4:4 + length], raw=False))
        data = data[4 + length:]
    return out


def still_serves(server: Server) -> None:
    assert server.alive, f"the control server died: {server.error!r}"
    assert client(server).call("echo", timeout=5, x=1) == {"x": 1}


# -- the protocol ---------------------------------------------------------------------------------

def test_ok_result(server):
    c = client(server)
    assert c.call("echo", timeout=5, cube="bafy", n=3, flags=[True, None], data=b"\x00\xff") == \
        {"cube": "bafy", "n": 3, "flags": [True, None], "data": b"\x00\xff"}
    assert c.call("echo", timeout=5) == {}
    assert c.call("sleepy", timeout=5, s=0.05) == {"slept": True}


def test_progress_frames_arrive_in_order_before_the_result(server):
    events = []
    result = client(server).call("progress", timeout=5, n=6,
                                 on_progress=lambda done, total: events.append((done, total)))
    events.append(result)
    assert events == [(1, 6), (2, 6), (3, 6), (4, 6), (5, 6), (6, 6), "done"]
    # without a callback the frames are skipped and the result still arrives
    assert client(server).call("progress", timeout=5, n=3) == "done"


def test_progress_on_the_wire_precedes_the_result(server):
    data = raw_exchange(server, control.pack({"token": TOKEN, "cmd": "progress", "args": {"n": 3}}))
    assert frames(data) == [{"progress": [1, 3]}, {"progress": [2, 3]}, {"progress": [3, 3]},
                            {"ok": "done"}]


@pytest.mark.parametrize("cmd, error, code", [
    ("usage", "you asked for the impossible", UsageError.exit_code),
    ("not_found", "no cube bafyfoo in the store", NotFoundError.exit_code),
    ("policy", "expired at 2020-01-01", PolicyError.exit_code),
])
def test_memnet_error_arrives_as_daemon_error(server, cmd, error, code):
    progress = []
    with pytest.raises(DaemonError) as info:
        client(server).call(cmd, timeout=5, on_progress=lambda *p: progress.append(p))
    assert str(info.value) == error
    assert info.value.exit_code == code
    if cmd == "not_found":
        assert progress == [(1, 2)]  # progress made before the failure is still delivered
    assert UsageError.exit_code == 2  # so the exit code really travels, not just the default 1


def test_handler_bug_is_reported_and_the_server_survives(server):
    with pytest.raises(DaemonError, match=r"internal daemon error: RuntimeError\('oops'\)") as info:
        client(server).call("bug", timeout=5)
    assert info.value.exit_code == 1
    still_serves(server)


def test_bad_token_refused(server):
    with pytest.raises(DaemonError, match="bad control token") as info:
        client(server, token="0" * 32).call("echo", timeout=5)
    assert info.value.exit_code == 1
    with pytest.raises(DaemonError, match="bad control token"):
        client(server, token="").call("echo", timeout=5)
    assert frames(raw_exchange(server, control.pack({"cmd": "echo", "args": {}}))) == \
        [{"error": "bad control token", "exit": 1}]
    assert frames(raw_exchange(server, control.pack({"token": 12345, "cmd": "echo", "args": {}}))) == \
        [{"error": "bad control token", "exit": 1}]
    still_serves(server)


def test_unknown_command_refused(server):
    with pytest.raises(DaemonError, match="unknown daemon command 'rm_rf'") as info:
        client(server).call("rm_rf", timeout=5)
    assert info.value.exit_code == 2
    # a command that is not a string is refused the same way
    for request in ({"token": TOKEN, "cmd": ["echo"], "args": {}}, {"token": TOKEN, "args": {}}):
        reply = frames(raw_exchange(server, control.pack(request)))
        assert len(reply) == 1 and reply[0]["exit"] == 2
        assert reply[0]["error"].startswith("unknown daemon command")
    still_serves(server)


@pytest.mark.parametrize("args, words", [
    ([1, 2], "progress: arguments must be a map"),
    ({"n": "three"}, "progress: n must be int, not str"),
    ({"n": True}, "progress: n must be int, not bool"),
    ({"n": 1, "colour": 1}, "progress: unknown argument(s) ['colour']"),
])
def test_bad_arguments_are_named_not_taken_for_an_unknown_command(server, args, words):
    """Arguments are checked against the command's typed argument class before its handler runs."""
    reply = frames(raw_exchange(server, control.pack({"token": TOKEN, "cmd": "progress", "args": args})))
    assert len(reply) == 1 and reply[0]["exit"] == 2 and reply[0]["error"].startswith(words)
    with pytest.raises(DaemonError, match="progress: missing argument 'n'"):
        client(server).call("progress", timeout=5)
    still_serves(server)


def test_hello_frame_is_capped_before_the_token_is_checked(server):
    """An unauthenticated peer cannot make the daemon read a large frame: the first frame may be at
    most MAX_HELLO_FRAME bytes, whatever it holds."""
    big = control.pack({"token": TOKEN, "cmd": "echo", "args": {"value": b"x" * MAX_HELLO_FRAME}})
    assert raw_exchange(server, big) == b""  # hung up at the length prefix
    # the client sends the token alone first, so a large authenticated request still goes through
    assert client(server).call("echo", timeout=5, value=b"x" * (64 * MAX_HELLO_FRAME)) == \
        {"value": b"x" * (64 * MAX_HELLO_FRAME)}
    still_serves(server)


def test_strangers_holding_the_door_full_cannot_keep_the_owner_out(server):
    """MAX_UNAUTHENTICATED idle strangers at the door, and more arriving: the owner's CLI is still
    served (a newcomer pushes out the stranger that has waited longest), and no more than
    MAX_UNAUTHENTICATED are ever kept waiting."""
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5)
            for _ in range(control.MAX_UNAUTHENTICATED)]
    try:
        time.sleep(0.3)
        still_serves(server)                       # pushed the longest-waiting stranger out
        more = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(16)]
        idle += more
        time.sleep(0.3)
        hung_up = 0
        for sock in idle:
            sock.setblocking(False)
            try:
                hung_up += sock.recv(1) == b""
            except BlockingIOError:                 # still waiting at the door
                pass
            except ConnectionResetError:
                hung_up += 1
        assert hung_up == len(idle) - control.MAX_UNAUTHENTICATED
        still_serves(server)
    finally:
        for sock in idle:
            sock.close()


def test_the_door_pushes_out_the_longest_waiting():
    async def scenario():
        door = control.Door(size=2)
        scopes = [trio.CancelScope() for _ in range(4)]
        for i, scope in enumerate(scopes):
            door.enter(i, scope)
        assert [s.cancel_called for s in scopes] == [True, True, False, False]
        assert list(door.waiting) == [2, 3] and door.pushed_out == 2
        door.leave(2)
        door.enter(4, trio.CancelScope())
        assert not scopes[3].cancel_called and list(door.waiting) == [3, 4]
    trio.run(scenario)


@pytest.mark.parametrize("payload", [
    HEADER.pack(MAX_CONTROL_FRAME + 1) + b"x" * 100,            # oversized length header
    HEADER.pack(0xFFFFFFFF),
    HEADER.pack(5) + b"\xc1\xc1\xc1\xc1\xc1",                   # not msgpack
    HEADER.pack(3) + msgpack.packb([1, 2]),                     # msgpack, not a map
    HEADER.pack(3) + b"\x81\x01\x02",                           # a map with an int key
    HEADER.pack(100) + b"short",                                # ends mid-frame
    b"\x00\x00",                                                # ends mid-header
    b"",
    b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",              # a browser, say
])
def test_garbage_does_not_crash_the_server(server, payload):
    assert raw_exchange(server, payload) == b""  # the server just hangs up
    still_serves(server)


def test_a_client_that_says_nothing_does_not_block_others(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as idle:
        idle.sendall(HEADER.pack(50))  # a frame started and never finished
        started = time.monotonic()
        still_serves(server)
        assert time.monotonic() - started < 2


def test_client_hanging_up_mid_command_does_not_crash_the_server(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(control.pack({"token": TOKEN, "cmd": "sleepy", "args": {"s": 0.3}}))
    time.sleep(0.5)
    still_serves(server)


def test_no_daemon_listening_is_a_daemon_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    c = ControlClient(state.DaemonState(pid=4242, peer_id="p", addrs=[], control_port=port,
                                        token=TOKEN, started=0))
    with pytest.raises(DaemonError, match=r"cannot reach the daemon \(pid 4242\)"):
        c.call("echo", timeout=2)


def test_oversized_reply_header_refused_by_the_client():
    """The client applies the same frame limit to what a (fake) daemon sends back."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def fake_daemon():
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(HEADER.pack(MAX_CONTROL_FRAME + 1))
            time.sleep(0.5)

    thread = threading.Thread(target=fake_daemon, daemon=True)
    thread.start()
    try:
        c = ControlClient(state.DaemonState(pid=1, peer_id="p", addrs=[], control_port=port,
                                            token=TOKEN, started=0))
        with pytest.raises(DaemonError, match="control frame too large"):
            c.call("echo", timeout=5)
    finally:
        thread.join(5)
        listener.close()


@pytest.mark.parametrize("fail", [False, True])
def test_progress_reported_without_a_checkpoint_is_delivered(server, fail):
    events = []
    try:
        events.append(client(server).call("quick_progress", timeout=5, fail=fail,
                                          on_progress=lambda *p: events.append(p)))
    except DaemonError as exc:
        events.append(str(exc))
    assert events == [(1, 3), (2, 3), (3, 3), "failed after progress" if fail else "quick"]


def test_non_ascii_token_does_not_crash_the_server(server):
    reply = frames(raw_exchange(server, control.pack({"token": "t\u00f6ken", "cmd": "echo", "args": {}})))
    assert reply == [{"error": "bad control token", "exit": 1}]
    still_serves(server)


def test_unpackable_result_does_not_crash_the_server(server):
    with pytest.raises(DaemonError, match="internal daemon error"):
        client(server).call("unpackable", timeout=5)
    still_serves(server)


# -- daemon.json ----------------------------------------------------------------------------------

def make_state(pid: int, port: int = 40000) -> state.DaemonState:
    return state.DaemonState(pid=pid, peer_id="12D3KooWabc", addrs=["/ip4/127.0.0.1/tcp/4737"],
                             control_port=port, token=TOKEN, started=1_790_000_000)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(10)
    return proc.pid


def test_state_round_trip_and_mode(tmp_path):
    s = make_state(os.getpid())
    lock = state.HomeLock(tmp_path).acquire()  # a daemon holds its home's lock while it runs
    state.write(tmp_path, s)
    path = tmp_path / state.STATE_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert state.read(tmp_path) == s
    assert state.read(tmp_path, check_alive=False) == s
    assert ControlClient.for_home(tmp_path).state == s
    # rewriting replaces it and keeps the mode
    s2 = make_state(os.getpid(), port=40001)
    state.write(tmp_path, s2)
    assert state.read(tmp_path) == s2 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [state.STATE_FILE, state.LOCK_FILE]  # no temporary files
    assert stat.S_IMODE((tmp_path / state.LOCK_FILE).stat().st_mode) == 0o600
    lock.release()
    assert state.read(tmp_path) is None  # the lock is what says the daemon runs


def test_state_none_for_a_dead_pid(tmp_path):
    pid = dead_pid()
    state.write(tmp_path, make_state(pid))
    assert state.read(tmp_path) is None
    assert ControlClient.for_home(tmp_path) is None
    assert state.read(tmp_path, check_alive=False).pid == pid  # the stale file is still readable


@pytest.mark.parametrize("text", ["", "{", "not json", "null", "[1, 2]", '{"pid": 1}',
                                  '{"pid": 1, "peer_id": "p", "addrs": [], "control_port": 1, '
                                  '"token": "t", "started": 0, "extra": 1}'])
def test_state_none_for_a_corrupt_file(tmp_path, text):
    (tmp_path / state.STATE_FILE).write_text(text)
    assert state.read(tmp_path) is None
    assert state.read(tmp_path, check_alive=False) is None


def test_state_none_when_missing(tmp_path):
    assert state.read(tmp_path) is None
    assert ControlClient.for_home(tmp_path) is None
    state.remove(tmp_path, os.getpid())  # nothing to remove: no error


def test_liveness_is_the_lock_not_the_pid(tmp_path):
    """A stale daemon.json whose PID now belongs to another (live) process does not count as a
    running daemon, and does not block a new one; a held lock refuses a second daemon."""
    state.write(tmp_path, make_state(os.getpid()))  # our pid is alive, but we hold no lock
    assert state.read(tmp_path) is None and ControlClient.for_home(tmp_path) is None
    with state.HomeLock(tmp_path):
        assert state.read(tmp_path) is not None
        with pytest.raises(DaemonError, match=f"a daemon \\(pid {os.getpid()}\\) already runs"):
            state.HomeLock(tmp_path).acquire()
    assert not state.locked(tmp_path)
    # a lock held by another process that then dies is released by the kernel
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, '.');"
                               "from memnet.daemon.state import HomeLock; "
                               f"HomeLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert state.locked(tmp_path)
        with pytest.raises(DaemonError, match=f"pid {holder.pid}"):
            state.HomeLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait(10)
    assert not state.locked(tmp_path)
    state.HomeLock(tmp_path).acquire().release()


def test_state_none_for_a_pid_of_the_wrong_type(tmp_path):
    (tmp_path / state.STATE_FILE).write_text(
        '{"pid": "123", "peer_id": "p", "addrs": [], "control_port": 1, "token": "t", "started": 0}')
    assert state.read(tmp_path) is None


def test_remove_only_removes_its_own_pid(tmp_path):
    mine = make_state(os.getpid())
    state.write(tmp_path, mine)
    state.remove(tmp_path, os.getpid() + 1)  # another daemon's pid: not ours to remove
    assert state.read(tmp_path, check_alive=False) == mine
    state.remove(tmp_path, os.getpid())
    assert not (tmp_path / state.STATE_FILE).exists()
    # a stale file of a dead daemon is removed by that pid only
    pid = dead_pid()
    state.write(tmp_path, make_state(pid))
    state.remove(tmp_path, os.getpid())
    assert (tmp_path / state.STATE_FILE).exists()
    state.remove(tmp_path, pid)
    assert not (tmp_path / state.STATE_FILE).exists()


def test_header_is_four_byte_big_endian():
    assert control.pack({"a": 1})[:4] == struct.pack(">I", len(msgpack.packb({"a": 1})))
    with pytest.raises(DaemonError):
        control.unpack(b"\xc1")
    with pytest.raises(DaemonError):
        control.unpack(msgpack.packb("a string"))


def test_allocator_settings_apply_on_glibc():
    import platform

    from memnet.daemon import allocator

    applied = allocator.tune()
    if platform.libc_ver()[0] == "glibc":
        assert applied is True
    else:
        assert applied is False
