"""daemon.json: how the CLI and other tools find a running daemon (pid, PeerID, listen
multiaddrs, control port and its token). Mode 0600: the token is the key to the control API."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from memnet.files import write_atomic

STATE_FILE = "daemon.json"


@dataclass(frozen=True)
class DaemonState:
    pid: int
    peer_id: str
    addrs: list[str]
    control_port: int
    token: str
    started: int


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
    if check_alive and not _alive(state.pid):
        return None
    return state


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
