"""daemon.json: how the CLI and other tools find a running daemon (pid, PeerID, listen
multiaddrs, control port and its token), and daemon.lock: the proof that it still runs.

A daemon takes an exclusive lock on HOME/daemon.lock before anything else, and holds it until
it exits (the kernel drops it if the process dies). So a second daemon on the same home is
refused however slow the first one's start-up, and liveness is decided by the lock, never by a
PID that another process may have reused. Both files are mode 0600: the token is the key to the
control API."""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from memnet.errors import DaemonError
from memnet.files import write_atomic

STATE_FILE = "daemon.json"
LOCK_FILE = "daemon.lock"


@dataclass(frozen=True)
class DaemonState:
    pid: int
    peer_id: str
    addrs: list[str]
    control_port: int
    token: str
    started: int


class HomeLock:
    """The exclusive daemon lock of a home (released on close, or when the process dies)."""

    def __init__(self, home: Path):
        self.path = Path(home) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> HomeLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        for attempt in range(5):  # locked() takes a shared lock for an instant: wait that out
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt < 4:
                    time.sleep(0.02)
        else:
            os.close(fd)
            holder = _holder(self.path)
            raise DaemonError(f"a daemon{f' (pid {holder})' if holder else ''} already runs for "
                              f"{self.path.parent}")
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> HomeLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _holder(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def locked(home: Path) -> bool:
    """Whether a live process holds home's daemon lock."""
    try:
        fd = os.open(Path(home) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False  # we could take it: nobody holds it exclusively
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops our shared lock, if we took one


def write(home: Path, state: DaemonState) -> None:
    write_atomic(home / STATE_FILE, json.dumps(asdict(state), indent=1).encode(), mode=0o600)


def remove(home: Path, pid: int) -> None:
    """Remove the state file if it is still ours (a newer daemon may have replaced it)."""
    current = read(home, check_alive=False)
    if current is not None and current.pid == pid:
        (home / STATE_FILE).unlink(missing_ok=True)


def read(home: Path, check_alive: bool = True) -> DaemonState | None:
    """The running daemon's state, or None if there is none (a stale file is ignored)."""
    try:
        raw = json.loads((home / STATE_FILE).read_text())
        state = DaemonState(**raw)
    except (OSError, ValueError, TypeError):
        return None
    if not (isinstance(state.pid, int) and state.pid > 0 and isinstance(state.control_port, int)
            and isinstance(state.token, str) and isinstance(state.addrs, list)):
        return None
    if check_alive and not locked(home):
        return None
    return state
