"""`python -m memnet.bridge HOME`: the hivemind bridge process, started by the daemon (memnet/daemon/
bridge.py) with its settings as one JSON object on stdin. It prints one JSON line when ready, and
ends when its stdin closes (the daemon is gone) or on SIGTERM, announcing itself offline first."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HIVEMIND_LOGLEVEL", "WARNING")
log = logging.getLogger("memnet.bridge")


def _fetcher(control: dict[str, Any]):
    """fetch(cube, indices) through the daemon's control channel (a blocking client, in a thread)."""
    from memnet.daemon.control import ControlClient
    from memnet.daemon.state import DaemonState

    client = ControlClient(DaemonState(0, "", [], int(control["port"]), str(control["token"]), 0))

    async def fetch(cube_id: bytes, indices: list[int], hints: tuple[str, ...]) -> tuple[bytes, int]:
        reply = await asyncio.to_thread(client.call, "fetch_chunks", 120.0, None, cube=cube_id, indices=indices,
                                        providers=list(hints))
        return reply["manifest"], int(reply["fetched"])

    return fetch


def _model_shape(pinned: Any) -> tuple[int, int]:
    config = json.loads((Path(pinned.folder) / "config.json").read_text())
    return int(config["num_hidden_layers"]), int(config["hidden_size"])


async def run(home: Path, settings: dict[str, Any]) -> None:
    from memnet import home as home_mod
    from memnet.bridge.local import LocalChannel
    from memnet.bridge.node import Node
    from memnet.bridge.server import SpanServer

    node_home = home_mod.open_node(home)
    registry = node_home.models
    pinned = registry.resolve(settings.get("model"))
    layers, hidden_size = _model_shape(pinned)
    node = await Node.start(home, node_home.key, settings["listen"], settings.get("announce") or [],
                            settings.get("initial_peers") or [])
    server = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.buffer.read1(1 << 16) else None)
    interval = float(settings.get("announce_interval", 30))
    channel = LocalChannel(home, node, pinned.fingerprint, layers, hidden_size, float(settings["step_timeout"]))
    try:
        serve = settings.get("serve")
        if serve:
            from memnet.model import loader

            loaded = loader.load(pinned)
            server = SpanServer(node, loaded, int(serve[0]), int(serve[1]), node_home.store,
                                _fetcher(settings["control"]), int(settings["cache_tokens"]),
                                int(settings["max_length"]), float(settings["step_timeout"]))
            await server.start()
            await server.announce(3 * interval)
        await channel.start({"serve": serve})
        print(json.dumps({"ready": True, "peer_id": node.peer_id, "maddrs": await node.maddrs(),
                          "serve": serve, "layer_seconds": server.layer_seconds if server else None}), flush=True)
        log.info("bridge %s ready on %s%s", node.peer_id, await node.maddrs(),
                 f", serving layers [{serve[0]}, {serve[1]})" if serve else "")
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except asyncio.TimeoutError:
                if server is not None:
                    try:
                        await server.announce(3 * interval)
                    except Exception as exc:  # a failed refresh is retried next interval
                        log.warning("span announcement failed: %r", exc)
    finally:
        channel.remove_state()
        if server is not None:
            try:
                await asyncio.wait_for(server.announce(2 * interval, "offline"), 5)
            except Exception:
                pass
        await node.stop()


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if len(argv) != 1:
        sys.stderr.write("usage: python -m memnet.bridge HOME (settings as JSON on stdin)\n")
        return 2
    settings = json.loads(sys.stdin.readline())
    asyncio.run(run(Path(argv[0]), settings))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
