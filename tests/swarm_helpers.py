"""Real memnet daemons as separate processes on 127.0.0.1, for multi-node tests."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import lmdb

from memnet.daemon import state as state_mod
from tests.cli_helpers import Result, memnet

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 60


@dataclass
class DaemonProc:
    name: str
    home: Path
    proc: subprocess.Popen
    log: Path
    state: state_mod.DaemonState | None = None

    @property
    def addr(self) -> str:
        return self.state.addrs[0]

    @property
    def peer_id(self) -> str:
        return self.state.peer_id

    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> Result:
        return memnet(self.home, *args, check=check, timeout=timeout)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.alive():
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


@dataclass
class Swarm:
    root: Path
    daemons: list[DaemonProc] = field(default_factory=list)

    def home(self, name: str) -> Path:
        home = self.root / name
        if not (home / "identity.key").exists():
            memnet(home, "init")
        return home

    def start(self, name: str, *extra: str, bootstrap: list[DaemonProc] | None = None) -> DaemonProc:
        home = self.home(name)
        log = self.root / f"{name}.log"
        args = [sys.executable, "-m", "cli.main", "--home", str(home), "daemon",
                "--listen", "/ip4/127.0.0.1/tcp/0", *extra]
        for peer in bootstrap or []:
            args += ["--bootstrap", peer.addr]
        with log.open("ab") as handle:
            proc = subprocess.Popen(args, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT,
                                    env={**os.environ, "MEMNET_HOME": str(home)})
        daemon = DaemonProc(name, home, proc, log)
        self.daemons.append(daemon)
        daemon.state = wait_started(name, home, proc, daemon.log_text)
        return daemon

    def close(self) -> None:
        for daemon in self.daemons:
            if daemon.alive():
                daemon.proc.send_signal(signal.SIGTERM)
        for daemon in self.daemons:
            try:
                daemon.proc.wait(10)
            except subprocess.TimeoutExpired:
                daemon.proc.kill()
                daemon.proc.wait(5)


def wait_started(name: str, home: Path, proc: subprocess.Popen, log_text) -> state_mod.DaemonState:
    """The state file of the daemon proc runs for home, once it has written it."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        found = state_mod.read(home)
        if found is not None and found.pid == proc.pid:
            return found
        if proc.poll() is not None:
            raise AssertionError(f"daemon {name} exited ({proc.returncode}):\n{log_text()}")
        time.sleep(0.1)
    raise AssertionError(f"daemon {name} did not start in {START_TIMEOUT} s:\n{log_text()}")


def notes_file(path: Path, size: int, seed: int = 0) -> Path:
    """A notes file of about size bytes of incompressible paragraphs (plaintext cube input)."""
    rng = random.Random(seed)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    paragraphs, total = [], 0
    while total < size:
        text = "".join(rng.choices(alphabet, k=min(200_000, size - total + 1)))
        paragraphs.append(text)
        total += len(text) + 2
    path.write_text("\n\n".join(paragraphs))
    return path


def tamper(home: Path, db: str, key: bytes, value: bytes) -> None:
    """Write straight into a node's LMDB, below memnet's checks: how a lying node's disk looks."""
    env = lmdb.open(str(home / "store"), max_dbs=16, subdir=True)
    try:
        with env.begin(write=True) as txn:
            txn.put(key, value, db=env.open_db(db.encode(), txn=txn))
    finally:
        env.close()


def stored(home: Path, db: str = "chunks") -> dict[bytes, bytes]:
    """One table of a node's LMDB, read raw (the test process never opens a Store on it)."""
    env = lmdb.open(str(home / "store"), max_dbs=16, subdir=True, readonly=True)
    try:
        with env.begin() as txn:
            return dict(txn.cursor(db=env.open_db(db.encode(), txn=txn)))
    finally:
        env.close()
