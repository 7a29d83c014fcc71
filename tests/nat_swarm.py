"""Real memnet daemons on the NAT testbed (tests/nat_testbed.py): each daemon and each of its CLI
calls runs inside its host's network namespace; homes live in the test's own directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from memnet.daemon import state as state_mod
from tests.nat_testbed import Host, Testbed
from tests.swarm_helpers import wait_started

ROOT = Path(__file__).resolve().parent.parent
PORT = 4737


@dataclass
class NatDaemon:
    host: Host
    home: Path
    proc: subprocess.Popen
    log: Path
    state: state_mod.DaemonState | None = None

    @property
    def peer_id(self) -> str:
        return self.state.peer_id

    @property
    def public_addr(self) -> str:
        """Where others dial it when its host is public: its own internet address."""
        return f"/ip4/{self.host.ip}/tcp/{PORT}/p2p/{self.peer_id}"

    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        done = subprocess.run(["ip", "netns", "exec", self.host.ns, sys.executable, "-m", "cli.main",
                               "--home", str(self.home), *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, "MEMNET_HOME": str(self.home)})
        if check and done.returncode != 0:
            raise AssertionError(f"memnet {' '.join(args)} on {self.host.name} failed ({done.returncode}):\n"
                                 f"{done.stdout}\n{done.stderr}\n--- daemon log:\n{self.log_text()[-4000:]}")
        return done

    def status(self) -> dict:
        return json.loads(self.cli("status", "--json").stdout)

    def nat(self) -> dict:
        return self.status()["nat"]

    def wait_nat(self, predicate, timeout: float = 60, what: str = "") -> dict:
        deadline = time.monotonic() + timeout
        nat = {}
        while time.monotonic() < deadline:
            nat = self.nat()
            if predicate(nat):
                return nat
            time.sleep(1)
        raise AssertionError(f"{self.host.name}: {what or 'condition'} not reached in {timeout} s: {nat}\n"
                             f"--- daemon log:\n{self.log_text()[-4000:]}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.alive():
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@dataclass
class NatSwarm:
    bed: Testbed
    root: Path
    daemons: list[NatDaemon] = field(default_factory=list)

    def start(self, host: Host, *extra: str, bootstrap: list[NatDaemon] = (), config: dict | None = None) -> NatDaemon:
        home = self.root / host.name
        if not (home / "identity.key").exists():
            subprocess.run([sys.executable, "-m", "cli.main", "--home", str(home), "init"], cwd=ROOT, check=True,
                           capture_output=True)
            settings = {"nat.upnp": "false", "nat.probe_interval": "30", **(config or {})}
            for key, value in settings.items():
                subprocess.run([sys.executable, "-m", "cli.main", "--home", str(home), "config", "set", key, str(value)],
                               cwd=ROOT, check=True, capture_output=True)
        log = self.root / f"{host.name}.log"
        args = [sys.executable, "-m", "cli.main", "--home", str(home), "daemon", "--listen", f"/ip4/0.0.0.0/tcp/{PORT}",
                *extra]
        for peer in bootstrap:
            args += ["--bootstrap", peer.public_addr]
        with log.open("ab") as handle:
            proc = host.popen(args, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT,
                              env={**os.environ, "MEMNET_HOME": str(home)})
        daemon = NatDaemon(host, home, proc, log)
        self.daemons.append(daemon)
        daemon.state = wait_started(host.name, home, proc, daemon.log_text)
        return daemon

    def close(self) -> None:
        for daemon in self.daemons:
            daemon.stop()
