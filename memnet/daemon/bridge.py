"""The bridge service: runs the hivemind bridge (memnet/bridge, `python -m memnet.bridge`) as a
child process when config.json's hivemind.enabled is set (or `memnet daemon --hivemind`), gives it
its settings and the control channel's port and token on stdin (it asks the daemon to fetch cube
chunks for seeding), restarts it with a back-off if it dies, and stops it with the daemon.
The child writes HOME/bridge.json (mode 0600) for the CLI's distributed generations."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from memnet.config import Config, HivemindSettings
from memnet.daemon.base import Service
from memnet.daemon.commands import Command, NoArgs, Progress
from memnet.daemon.control import ControlServer

log = logging.getLogger("memnet.bridge")

READY_TIMEOUT = 180.0   # s: the child loads torch and, to serve, the model
STOP_TIMEOUT = 10.0
BACKOFF = (1.0, 2.0, 5.0, 15.0, 60.0)


class Bridge(Service):
    name = "bridge"

    def __init__(self, home: Path, config: Config, control: ControlServer):
        super().__init__()
        self.home, self.control = Path(home), control
        self.settings: HivemindSettings = config.hivemind
        self.state: dict[str, Any] = {"state": "off" if not config.hivemind.enabled else "starting"}
        self.restarts = 0

    def commands(self) -> list[Command]:
        return [Command("bridge_status", self._cmd_status, NoArgs, "the hivemind bridge: state, peer, span")]

    async def _cmd_status(self, args: NoArgs, progress: Progress) -> dict:
        return {**self.state, "restarts": self.restarts}

    def _settings(self) -> dict[str, Any]:
        s = self.settings
        serve = [int(x) for x in s.serve_blocks.split(":")] if s.serve_blocks else None
        return {"listen": list(s.listen), "announce": list(s.announce), "initial_peers": list(s.initial_peers),
                "serve": serve, "model": s.model, "cache_tokens": s.cache_tokens, "max_length": s.max_length,
                "announce_interval": s.announce_interval, "step_timeout": s.step_timeout,
                "control": {"port": self.control.port, "token": self.control.token}}

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()  # the bridge comes up in the background: the daemon serves meanwhile
        if not self.settings.enabled:
            return
        failures = 0
        while True:
            ran_well = await self._run_once()
            failures = 0 if ran_well else failures + 1
            self.restarts += 1
            wait = BACKOFF[min(failures, len(BACKOFF) - 1)]
            self.state = {"state": "restarting", "in": wait}
            log.warning("the hivemind bridge exited; restarting in %.0f s", wait)
            await trio.sleep(wait)

    async def _run_once(self) -> bool:
        """Start the child, wait for it to be ready, then until it exits. True if it got ready."""
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "memnet.bridge", str(self.home)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None)
        self.state = {"state": "starting", "pid": process.pid}
        ready = False
        try:
            await process.stdin.send_all(json.dumps(self._settings()).encode() + b"\n")
            line = b""
            with trio.move_on_after(READY_TIMEOUT):
                while not line.endswith(b"\n"):
                    data = await process.stdout.receive_some(4096)
                    if not data:
                        break
                    line += data
            try:
                info = json.loads(line)
                ready = bool(info.get("ready"))
            except ValueError:
                info = {}
            if not ready:
                log.warning("the hivemind bridge did not get ready (%s)", line[:200])
                return False
            self.state = {"state": "ready", "pid": process.pid, **info}
            log.info("hivemind bridge %s ready: %s", info.get("peer_id"), info.get("maddrs"))
            await process.wait()
            return True
        finally:
            with trio.CancelScope(shield=True):
                await _stop(process)

async def _stop(process: trio.Process) -> None:
    if process.returncode is None:
        process.terminate()  # it announces itself offline, then exits
        with trio.move_on_after(STOP_TIMEOUT):
            await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            await stream.aclose()
