#!/usr/bin/env python
"""Benchmark (not a test): memnet's swarm on loopback, each figure measured side by side with its
baseline in one run, medians over --reps repetitions.

    .venv/bin/python scripts/bench_swarm.py [--only a|b|c] [--reps 5] [--size-mib 64] [--nodes 30]
                                            [--json PATH] [--keep]   (--help lists the rest)

(a) single provider: a 64 MiB parameter cube (random float32 LoRA tensors, incompressible)
    fetched with the daemon's `get` (the daemon's get command: find providers, manifest, chunks over MIP,
    verify, store, announce) against a raw py-libp2p stream moving the same payload bytes between
    the same two hosts over the same connection (benchmark-only protocol /memnet-bench/raw/1.0.0:
    the provider reads the payload from its store and writes it in 1 MiB writes, then closes).
    The provider is a separate process (this script with the hidden --serve HOME) running the
    real Daemon; the fetcher is the real Daemon in this process. Raw and fetch runs alternate
    (swapping which goes first); the fetcher unpins and GCs the cube between runs, so every run
    fetches every chunk. Ratio = raw time / fetch time (= fetch MiB/s / raw MiB/s), target >= 0.8.
    Each run also reports the CPU seconds both processes spent (fetcher: time.process_time, which
    for a fetch includes the untimed unpin + gc; provider: /proc/PID/stat), which shows whether a
    side is CPU-bound.
(b) swarm fetch: 4 providers, each a `memnet daemon --upload-rate R` process, all holding cube A,
    against 1 provider (the first of the same four, same cap) that alone holds cube B of the same
    size; the fetcher (in-process Daemon) alternates A and B. Ratio = time(4) / time(1), target
    <= 0.35 (0.25 is perfect splitting). A provider's upload token bucket starts full (its burst
    is read from memnet.net.server, R/8 today), so the "ideal" column is (size - burst) / R, and
    the ideal ratio is below 0.25. The bytes all providers uploaded during a fetch (their
    served_bytes, via the control API) show the end game's duplicate requests.
(c) a --nodes-node loopback swarm of `memnet daemon` processes (node 0 first, the rest started a
    few at a time, each bootstrapping to node 0). For each of --keys fresh keys: a tiny plaintext
    cube is published into a random node's home (memnet.local.publish, while its daemon runs),
    then timed: that node's `announce` (DHT provide), then `find` from another random node.
    Both are timed around the control API round trip (loopback TCP, one request per connection;
    the round trip itself costs ~1 ms, reported as "status rtt"). Targets: provide median
    <= 1 s, find median <= 0.5 s, and every find must list the announcing node.

Homes, logs and archives live in a temporary directory removed at the end; every child process
is stopped by pid at the end (SIGTERM, then SIGKILL after a timeout), also on errors and Ctrl-C.
On a failure the tail of the relevant daemon log is printed.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import logging
import os
import platform
import random
import shutil
import signal
import statistics
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import trio  # noqa: E402

from memnet import home as home_mod  # noqa: E402
from memnet import local  # noqa: E402
from memnet.cube import cid, payloads  # noqa: E402
from memnet.daemon import state as state_mod  # noqa: E402
from memnet import config as config_mod  # noqa: E402
from memnet.daemon.control import ControlClient  # noqa: E402
from tests.factories import lora_files  # noqa: E402

MiB = 1024 * 1024
RAW_PROTOCOL = "/memnet-bench/raw/1.0.0"
RAW_WRITE = 1 * MiB
READ_SIZE = 1 * MiB
CID_LEN = 36  # binary CIDv1, raw codec, sha2-256
LOOPBACK = "/ip4/127.0.0.1/tcp/0"
TARGET_A, TARGET_B, TARGET_PROVIDE, TARGET_FIND = 0.8, 0.35, 1.0, 0.5
HIDDEN = 4096
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
STOP_TIMEOUT = 10.0

log = logging.getLogger("bench_swarm")


def cpu_of(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- payloads ---------------------------------------------------------------------------------------

def lora_cube_args(size: int, seed: int) -> tuple[bytes, dict]:
    """(payload, meta) of a valid parameter cube of about size bytes: PEFT-named float32 lora_A
    [r, HIDDEN] / lora_B [HIDDEN, r] of random normals (incompressible)."""
    pair = 2 * HIDDEN * 4  # bytes per unit of rank for one module's A and B
    layers = max(1, -(-size // (len(TARGETS) * 64 * pair)))
    r = max(1, round(size / (layers * len(TARGETS) * pair)))
    config, weights = lora_files(r=r, hidden=HIDDEN, layers=layers, targets=TARGETS, seed=seed)
    payload = payloads.build_parameter_payload(config, weights)
    meta = {"base_model": hashlib.sha256(b"bench-base").digest(), "peft": payloads.peft_summary(config)}
    return payload, meta


def publish_lora(node: home_mod.Node, size: int, seed: int) -> tuple[bytes, int]:
    payload, meta = lora_cube_args(size, seed)
    cube = node.publisher.publish("parameter", payload, meta)
    return cube.cube_id, len(payload)


# -- child processes --------------------------------------------------------------------------------

class Children:
    """Child processes by name, each logging to its own file; stop() ends them all by pid."""

    def __init__(self, root: Path):
        self.root = root
        self.procs: dict[str, tuple[subprocess.Popen, Path]] = {}

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log_path = self.root / f"{name}.log"
        with log_path.open("wb") as handle:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
                                    cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.procs[name] = (proc, log_path)
        return proc

    def daemon(self, name: str, home: Path, *extra: str, listen: str = LOOPBACK) -> subprocess.Popen:
        return self.start(name, [sys.executable, "-m", "cli.main", "--home", str(home), "daemon",
                                 "--listen", listen, *extra])

    def wait_state(self, name: str, home: Path, timeout: float = 60.0) -> state_mod.DaemonState:
        proc, _ = self.procs[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BenchError(f"{name} exited with status {proc.returncode} before it was ready", name)
            current = state_mod.read(home)
            if current is not None and current.pid == proc.pid:
                return current
            time.sleep(0.05)
        raise BenchError(f"{name} wrote no daemon.json within {timeout:.0f} s", name)

    def tail(self, name: str, lines: int = 25) -> str:
        _, path = self.procs[name]
        try:
            text = path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(f"    {line}" for line in text[-lines:])

    def dead(self) -> list[str]:
        return [name for name, (proc, _) in self.procs.items() if proc.poll() is not None]

    def stop(self, names: list[str] | None = None) -> None:
        chosen = [n for n in (names or list(self.procs)) if n in self.procs]
        for name in chosen:
            proc, _ = self.procs[name]
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + STOP_TIMEOUT
        for name in chosen:
            proc, _ = self.procs[name]
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"  {name} (pid {proc.pid}) ignored SIGTERM for {STOP_TIMEOUT:.0f} s: SIGKILL")
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        for name in chosen:
            del self.procs[name]


class BenchError(Exception):
    def __init__(self, message: str, child: str | None = None):
        super().__init__(message)
        self.child = child


# -- the in-process fetcher -------------------------------------------------------------------------

async def with_daemon(node: home_mod.Node, overrides: dict[str, Any],
                      body: Callable[[Any], Awaitable[Any]]) -> Any:
    """Run the real Daemon in this process, await body(daemon), stop the daemon. A SIGINT/SIGTERM
    (which the daemon takes over while it runs) stops the benchmark too."""
    from memnet.daemon.service import Daemon

    outcome: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        async def run_daemon(task_status=trio.TASK_STATUS_IGNORED) -> None:
            await Daemon(node, overrides=overrides).run(task_status=task_status)
            if "result" not in outcome:  # stopped by a signal, not by us
                outcome["interrupted"] = True
                nursery.cancel_scope.cancel()

        daemon = await nursery.start(run_daemon)
        try:
            outcome["result"] = await body(daemon)
        except Exception as exc:  # re-raised below as itself, not inside an exception group
            outcome["result"], outcome["error"] = None, exc
        daemon.stop()
    if outcome.get("interrupted"):
        raise KeyboardInterrupt
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


async def wait_providers(daemon, cube_id: bytes, want: int, timeout: float = 30.0) -> list[dict]:
    found: list[dict] = []
    with trio.move_on_after(timeout):
        while True:
            found = await daemon.call("find", {"cube": cube_id})
            if len(found) >= want:
                return found
            await trio.sleep(0.2)
    raise BenchError(f"only {len(found)} of {want} providers of {cid.to_text(cube_id)} found in {timeout:.0f} s")


async def fetch_once(daemon, cube_id: bytes) -> dict:
    """One timed `get` of cube_id, then unpin + gc (untimed) so the next one fetches again."""
    gc.collect()
    start = time.perf_counter()
    reply = await daemon.call("get", {"cube": cube_id, "pin": True})
    seconds = time.perf_counter() - start
    if reply["already"]:
        raise BenchError("the fetcher already held the cube: the previous run was not cleaned up")
    store = daemon.node.store
    store.unpin(cube_id)
    report = store.gc()
    if store.has(cube_id):
        raise BenchError(f"gc left the cube in the fetcher's store ({report})")
    return {"seconds": seconds, "fetch_cube_s": reply["seconds"], "from": reply["from"],
            "dropped": reply["dropped"]}


async def raw_once(daemon, peer_id: str, cube_id: bytes) -> tuple[float, bytes]:
    from libp2p.custom_types import TProtocol
    from libp2p.network.stream.exceptions import StreamEOF
    from libp2p.peer.id import ID

    gc.collect()
    start = time.perf_counter()
    stream = await daemon.host.new_stream(ID.from_base58(peer_id), [TProtocol(RAW_PROTOCOL)])
    await stream.write(cube_id)
    parts = []
    while True:
        try:
            data = await stream.read(READ_SIZE)
        except StreamEOF:
            break
        if not data:
            break
        parts.append(data)
    seconds = time.perf_counter() - start
    await stream.close()
    return seconds, b"".join(parts)


# -- the --serve mode (provider of part a) ------------------------------------------------------------

def serve(home: str) -> int:
    """Run the real Daemon for HOME (settings from its config.json) plus the raw protocol."""
    from memnet.daemon.service import Daemon

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    node = home_mod.open_node(Path(home))
    async def raw(stream) -> None:
        try:
            request = b""
            while len(request) < CID_LEN:
                data = await stream.read(CID_LEN - len(request))
                if not data:
                    raise BenchError("raw request cut short")
                request += data
            payload = node.store.read_payload(cid.check_binary(request))
            for start in range(0, len(payload), RAW_WRITE):
                await stream.write(payload[start:start + RAW_WRITE])
            await stream.close()
        except Exception as exc:
            log.warning("raw stream failed: %r", exc)
            try:
                await stream.reset()
            except Exception:
                pass

    trio.run(lambda: Daemon(node).run(extra_handlers={RAW_PROTOCOL: raw}))
    return 0


def upload_burst(rate: float) -> float:
    """The burst of a provider's upload token bucket at this rate, as memnet sets it up (a
    MipServer's node-wide bucket starts full)."""
    from memnet.config import ServeLimits
    from memnet.net.server import MipServer

    async def probe() -> float:
        return MipServer(None, ServeLimits(upload_bytes_per_s=rate))._upload.burst

    return trio.run(probe)


def write_daemon_config(node: home_mod.Node, **daemon: Any) -> None:
    raw = config_mod.read_raw(node.home)
    raw["daemon"] = daemon
    config_mod.write_raw(node.home, raw)


# -- (a) one provider vs a raw stream -------------------------------------------------------------

def part_a(args, root: Path, children: Children) -> dict:
    size = args.size_mib * MiB
    provider = home_mod.init(root / "a-provider")
    write_daemon_config(provider, listen=[LOOPBACK])
    t0 = time.perf_counter()
    cube_id, payload_size = publish_lora(provider, size, seed=1)
    built = time.perf_counter() - t0
    provider.store.close()
    mib = payload_size / MiB
    print(f"(a) cube {cid.to_text(cube_id)[:24]}...: parameter, {payload_size:,} bytes = {mib:.1f} MiB "
          f"(generated + published in {built:.1f} s, untimed)")
    children.start("a-provider", [sys.executable, str(Path(__file__).resolve()), "--serve", str(provider.home)])
    pstate = children.wait_state("a-provider", provider.home)
    fetcher = home_mod.init(root / "a-fetcher")
    overrides = {"daemon.listen": [LOOPBACK], "daemon.bootstrap": [pstate.addrs[0]]}

    async def body(daemon) -> dict:
        await wait_providers(daemon, cube_id, 1)
        # warm-up (untimed): also checks the raw side moves exactly the cube's payload
        await fetch_once(daemon, cube_id)
        _, data = await raw_once(daemon, pstate.peer_id, cube_id)
        if len(data) != payload_size:
            raise BenchError(f"raw stream moved {len(data)} bytes, expected {payload_size}")
        reply = await daemon.call("get", {"cube": cube_id, "pin": True})
        same = daemon.node.store.read_payload(cube_id) == data
        daemon.node.store.unpin(cube_id)
        daemon.node.store.gc()
        if reply["already"] or not same:
            raise BenchError("raw bytes differ from the fetched payload")
        del data
        raws, fetches = [], []
        cpu: dict[str, list[tuple[float, float]]] = {"raw": [], "fetch": []}
        for rep in range(args.reps):
            for side in (("raw", "fetch") if rep % 2 == 0 else ("fetch", "raw")):
                mine, theirs = time.process_time(), cpu_of(pstate.pid)
                if side == "raw":
                    seconds, data = await raw_once(daemon, pstate.peer_id, cube_id)
                    if len(data) != payload_size:
                        raise BenchError(f"raw stream moved {len(data)} bytes, expected {payload_size}")
                    del data
                    raws.append(seconds)
                else:
                    fetches.append(await fetch_once(daemon, cube_id))
                # CPU over the run (for fetch: also the untimed unpin + gc on the fetcher)
                cpu[side].append((time.process_time() - mine, cpu_of(pstate.pid) - theirs))
            print(f"    rep {rep + 1}: raw {raws[-1]:.2f} s (CPU fetcher {cpu['raw'][-1][0]:.2f} s, provider "
                  f"{cpu['raw'][-1][1]:.2f} s), fetch {fetches[-1]['seconds']:.2f} s (CPU fetcher "
                  f"{cpu['fetch'][-1][0]:.2f} s, provider {cpu['fetch'][-1][1]:.2f} s)")
        return {"raws": raws, "fetches": fetches, "cpu": cpu}

    out = trio.run(with_daemon, fetcher, overrides, body)
    children.stop(["a-provider"])
    tcp = [tcp_once(payload_size) for _ in range(args.reps)]
    raw_t = statistics.median(out["raws"])
    fetch_t = statistics.median(f["seconds"] for f in out["fetches"])
    inner_t = statistics.median(f["fetch_cube_s"] for f in out["fetches"])
    ratio = raw_t / fetch_t
    return {
        "payload_bytes": payload_size, "reps": args.reps,
        "raw_s": out["raws"], "fetch_s": [f["seconds"] for f in out["fetches"]],
        "fetch_cube_s": [f["fetch_cube_s"] for f in out["fetches"]],
        "cpu_raw_s": out["cpu"]["raw"], "cpu_fetch_s": out["cpu"]["fetch"],  # (fetcher, provider)
        "cpu_raw_median_s": [statistics.median(c[i] for c in out["cpu"]["raw"]) for i in (0, 1)],
        "cpu_fetch_median_s": [statistics.median(c[i] for c in out["cpu"]["fetch"]) for i in (0, 1)],
        "raw_median_s": raw_t, "fetch_median_s": fetch_t, "fetch_cube_median_s": inner_t,
        "raw_mib_s": mib / raw_t, "fetch_mib_s": mib / fetch_t,
        "tcp_s": tcp, "tcp_median_s": statistics.median(tcp), "tcp_mib_s": mib / statistics.median(tcp),
        "ratio": ratio, "target": TARGET_A, "pass": ratio >= TARGET_A,
    }


TCP_SENDER = """
import socket, sys
size = int(sys.argv[1])
server = socket.create_server(("127.0.0.1", 0))
print(server.getsockname()[1], flush=True)
conn, _ = server.accept()
block = bytes(range(256)) * 4096
sent = 0
while sent < size:
    sent += conn.send(memoryview(block)[:min(len(block), size - sent)])
conn.close()
"""


def tcp_once(size: int) -> float:
    """Seconds to move size bytes over a plain loopback TCP socket between two processes (no
    encryption, no multiplexing, 1 MiB reads): the ceiling under both columns above."""
    sender = subprocess.Popen([sys.executable, "-c", TCP_SENDER, str(size)], stdout=subprocess.PIPE, text=True)
    try:
        port = int(sender.stdout.readline())
        buffer = bytearray(MiB)
        got = 0
        with socket.create_connection(("127.0.0.1", port)) as conn:
            start = time.perf_counter()
            while True:
                n = conn.recv_into(buffer)
                if not n:
                    break
                got += n
            seconds = time.perf_counter() - start
        if got != size:
            raise BenchError(f"plain TCP moved {got} bytes, expected {size}")
        return seconds
    finally:
        sender.wait(timeout=30)


# -- (b) four rate-capped providers vs one -------------------------------------------------------

def part_b(args, root: Path, children: Children) -> dict:
    size, rate = args.b_size_mib * MiB, args.rate_mib * MiB
    n = args.providers
    homes = [home_mod.init(root / f"b-provider{i}") for i in range(n)]
    t0 = time.perf_counter()
    cube_a, payload_size = publish_lora(homes[0], size, seed=2)
    cube_b, size_b = publish_lora(homes[0], size, seed=3)
    assert size_b == payload_size
    archive = root / "b-cube-a.car"
    local.export(homes[0].store, [cube_a], archive)
    for node in homes[1:]:
        local.import_archive(node.store, archive)
    for node in homes:
        node.store.close()
    built = time.perf_counter() - t0
    mib = payload_size / MiB
    print(f"(b) cube A (on all {n}) and cube B (on provider 0 only): {mib:.1f} MiB each; "
          f"upload cap {rate / MiB:g} MiB/s per provider (prepared in {built:.1f} s, untimed)")
    flags = ("--upload-rate", str(int(rate)))
    children.daemon("b-provider0", homes[0].home, *flags)
    first = children.wait_state("b-provider0", homes[0].home)
    for i in range(1, n):
        children.daemon(f"b-provider{i}", homes[i].home, *flags, "--bootstrap", first.addrs[0])
    states = [first] + [children.wait_state(f"b-provider{i}", homes[i].home) for i in range(1, n)]
    fetcher = home_mod.init(root / "b-fetcher")
    overrides = {"daemon.listen": [LOOPBACK], "daemon.bootstrap": [first.addrs[0]]}
    clients = [ControlClient(s) for s in states]

    def served() -> int:  # bytes all providers have uploaded so far (control API, untimed)
        return sum(c.call("status", timeout=30)["served_bytes"] for c in clients)

    async def timed_fetch(daemon, cube_id: bytes) -> dict:
        await trio.sleep(1.0)  # every provider's token bucket back to its full burst
        before = served()
        result = await fetch_once(daemon, cube_id)
        await trio.sleep(0.5)  # duplicate requests still being paced out count too
        result["served"] = served() - before
        return result

    async def body(daemon) -> dict:
        await wait_providers(daemon, cube_a, n)
        await wait_providers(daemon, cube_b, 1)
        await fetch_once(daemon, cube_b)  # warm-up (untimed): connections to every provider
        await fetch_once(daemon, cube_a)
        many, one = [], []
        for rep in range(args.reps):
            for which in (("many", "one") if rep % 2 == 0 else ("one", "many")):
                if which == "many":
                    many.append(await timed_fetch(daemon, cube_a))
                else:
                    one.append(await timed_fetch(daemon, cube_b))
            split = ", ".join(f"{v / MiB:.1f}" for v in many[-1]["from"].values())
            print(f"    rep {rep + 1}: {n} providers {many[-1]['seconds']:.2f} s (MiB used from each: {split}; "
                  f"uploaded {many[-1]['served'] / MiB:.1f} MiB in all), 1 provider {one[-1]['seconds']:.2f} s "
                  f"(uploaded {one[-1]['served'] / MiB:.1f} MiB)")
        return {"many": many, "one": one}

    out = trio.run(with_daemon, fetcher, overrides, body)
    children.stop([f"b-provider{i}" for i in range(n)])
    t_many = statistics.median(f["seconds"] for f in out["many"])
    t_one = statistics.median(f["seconds"] for f in out["one"])
    ratio = t_many / t_one
    burst = upload_burst(rate)
    ideal_one = max(0.0, payload_size - burst) / rate
    ideal_many = max(0.0, payload_size / n - burst) / rate
    return {
        "payload_bytes": payload_size, "providers": n, "upload_bytes_per_s": rate, "reps": args.reps,
        "burst_bytes": burst,
        "many_s": [f["seconds"] for f in out["many"]], "one_s": [f["seconds"] for f in out["one"]],
        "many_bytes_from": [f["from"] for f in out["many"]],
        "many_served_bytes": [f["served"] for f in out["many"]], "one_served_bytes": [f["served"] for f in out["one"]],
        "many_upload_amplification": statistics.median(f["served"] for f in out["many"]) / payload_size,
        "many_median_s": t_many, "one_median_s": t_one,
        "many_mib_s": mib / t_many, "one_mib_s": mib / t_one,
        "ideal_many_s": ideal_many, "ideal_one_s": ideal_one,
        "ratio": ratio, "target": TARGET_B, "pass": ratio <= TARGET_B,
    }


# -- (c) provide / find latency in an N-node swarm ---------------------------------------------------

def part_c(args, root: Path, children: Children) -> dict:
    n = args.nodes
    homes = [home_mod.init(root / f"c-node{i:02d}") for i in range(n)]
    for node in homes:
        node.store.close()
    names = [f"c-node{i:02d}" for i in range(n)]
    t0 = time.perf_counter()
    children.daemon(names[0], homes[0].home)
    states = [children.wait_state(names[0], homes[0].home)]
    boot = states[0].addrs[0]
    for start in range(1, n, args.batch):
        batch = range(start, min(n, start + args.batch))
        for i in batch:
            children.daemon(names[i], homes[i].home, "--bootstrap", boot)
        for i in batch:
            states.append(children.wait_state(names[i], homes[i].home))
    started = time.perf_counter() - t0
    print(f"(c) {n} daemons started in {started:.1f} s ({args.batch} at a time)")
    clients = [ControlClient(s) for s in states]
    time.sleep(args.settle)
    tables = [c.call("status", timeout=30)["routing_table"] for c in clients]
    print(f"    routing table sizes after {args.settle:g} s: min {min(tables)}, "
          f"median {statistics.median(tables):g}, max {max(tables)}")
    rtts = []
    for _ in range(10):
        t = time.perf_counter()
        clients[0].call("status", timeout=30)
        rtts.append(time.perf_counter() - t)

    rng = random.Random(args.seed)
    provides, finds, found_ok, reached = [], [], 0, []
    for k in range(args.keys):
        p, q = rng.sample(range(n), 2)
        node = home_mod.open_node(homes[p].home)
        text = f"bench_swarm key {k} {os.urandom(8).hex()}"
        cube = node.publisher.publish("plaintext", payloads.encode_items([{"text": text}]), {"items": 1})
        node.store.close()
        t = time.perf_counter()
        answer = clients[p].call("announce", timeout=60, cubes=[cube.cube_id])
        provides.append(time.perf_counter() - t)
        reached.append(int(next(iter(answer.values()))))
        t = time.perf_counter()
        found = clients[q].call("find", timeout=60, cube=cube.cube_id)
        finds.append(time.perf_counter() - t)
        hit = states[p].peer_id in {f["peer_id"] for f in found}
        found_ok += hit
        print(f"    key {k + 1:2}: node {p:2} provide {provides[-1] * 1000:6.0f} ms, node {q:2} find "
              f"{finds[-1] * 1000:6.0f} ms ({len(found)} provider(s){'' if hit else ', MISSING the announcer'})")
    children.stop(names)
    provide_t, find_t = statistics.median(provides), statistics.median(finds)
    ok = provide_t <= TARGET_PROVIDE and find_t <= TARGET_FIND and found_ok == args.keys
    return {
        "nodes": n, "keys": args.keys, "startup_s": started, "routing_tables": tables,
        "status_rtt_median_s": statistics.median(rtts),
        "provide_s": provides, "find_s": finds, "provide_reached": reached,
        "provide_median_s": provide_t, "find_median_s": find_t,
        "provide_p90_s": sorted(provides)[int(0.9 * (len(provides) - 1))],
        "find_p90_s": sorted(finds)[int(0.9 * (len(finds) - 1))],
        "found": found_ok, "target_provide_s": TARGET_PROVIDE, "target_find_s": TARGET_FIND, "pass": ok,
    }


# -- main -----------------------------------------------------------------------------------------

def report(results: dict) -> None:
    print()
    if "a" in results:
        a = results["a"]
        mib = a["payload_bytes"] / MiB
        print(f"(a) one provider, {mib:.1f} MiB parameter cube, median of {a['reps']}; "
              f"ratio = raw time / fetch time")
        cr, cf = a["cpu_raw_median_s"], a["cpu_fetch_median_s"]
        print(f"    {'path':40} {'time':>9} {'MiB/s':>8} {'CPU fetcher':>12} {'CPU provider':>13}")
        print(f"    {'plain loopback TCP (no Noise, no yamux)':40} {a['tcp_median_s']:8.2f}s {a['tcp_mib_s']:8.1f}")
        print(f"    {'raw py-libp2p stream (same hosts/conn)':40} {a['raw_median_s']:8.2f}s {a['raw_mib_s']:8.1f} "
              f"{cr[0]:11.2f}s {cr[1]:12.2f}s")
        print(f"    {'memnet get (daemon get)':40} {a['fetch_median_s']:8.2f}s {a['fetch_mib_s']:8.1f} "
              f"{cf[0]:11.2f}s {cf[1]:12.2f}s")
        print(f"    {'  of which fetch_cube':40} {a['fetch_cube_median_s']:8.2f}s "
              f"{mib / a['fetch_cube_median_s']:8.1f}")
        print(f"    ratio {a['ratio']:.2f} (target >= {a['target']}): {'PASS' if a['pass'] else 'FAIL'}")
    if "b" in results:
        b = results["b"]
        mib = b["payload_bytes"] / MiB
        print(f"(b) {mib:.1f} MiB cube, every provider capped at {b['upload_bytes_per_s'] / MiB:g} MiB/s "
              f"(initial burst {b['burst_bytes'] / MiB:.2f} MiB), median of {b['reps']}")
        print(f"    {'providers':40} {'time':>9} {'MiB/s':>8} {'ideal':>8}")
        print(f"    {b['providers']:<40} {b['many_median_s']:8.2f}s {b['many_mib_s']:8.1f} {b['ideal_many_s']:7.2f}s")
        print(f"    {1:<40} {b['one_median_s']:8.2f}s {b['one_mib_s']:8.1f} {b['ideal_one_s']:7.2f}s")
        print(f"    ratio time({b['providers']}) / time(1) {b['ratio']:.2f} (target <= {b['target']}; ideal "
              f"{b['ideal_many_s'] / b['ideal_one_s']:.2f}): {'PASS' if b['pass'] else 'FAIL'}")
        print(f"    with {b['providers']} providers they uploaded {b['many_upload_amplification']:.2f}x the payload "
              f"(end-game duplicates)")
    if "c" in results:
        c = results["c"]
        print(f"(c) {c['nodes']}-node loopback swarm, {c['keys']} keys, timed around the control API "
              f"round trip (status rtt {c['status_rtt_median_s'] * 1000:.1f} ms)")
        print(f"    {'operation':40} {'median':>9} {'p90':>9} {'target':>9}")
        print(f"    {'provide (announce)':40} {c['provide_median_s'] * 1000:7.0f}ms {c['provide_p90_s'] * 1000:7.0f}ms "
              f"{c['target_provide_s'] * 1000:7.0f}ms")
        print(f"    {'find providers (from another node)':40} {c['find_median_s'] * 1000:7.0f}ms "
              f"{c['find_p90_s'] * 1000:7.0f}ms {c['target_find_s'] * 1000:7.0f}ms")
        print(f"    announcer found {c['found']}/{c['keys']}: {'PASS' if c['pass'] else 'FAIL'}")


def _terminated(signum, frame) -> None:
    raise KeyboardInterrupt


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        return serve(sys.argv[2])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("a", "b", "c"), help="run one part")
    parser.add_argument("--reps", type=int, default=5, help="repetitions in (a) and (b) (default 5)")
    parser.add_argument("--size-mib", type=int, default=64, help="cube size for (a) (default 64)")
    parser.add_argument("--b-size-mib", type=int, default=32, help="cube size for (b) (default 32)")
    parser.add_argument("--rate-mib", type=float, default=8.0, help="upload cap per provider in (b), MiB/s")
    parser.add_argument("--providers", type=int, default=4, help="providers in (b) (default 4)")
    parser.add_argument("--nodes", type=int, default=30, help="swarm size for (c) (default 30)")
    parser.add_argument("--keys", type=int, default=20, help="distinct keys in (c) (default 20)")
    parser.add_argument("--batch", type=int, default=4, help="daemons started at once in (c) (default 4)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds to wait after (c)'s start")
    parser.add_argument("--seed", type=int, default=0, help="random choice of nodes in (c)")
    parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, homes)")
    args = parser.parse_args()
    if args.reps < 1 or args.size_mib < 1 or args.b_size_mib < 1 or args.keys < 1 or args.batch < 1:
        parser.error("--reps, --size-mib, --b-size-mib, --keys and --batch must be at least 1")
    if not args.rate_mib > 0 or args.providers < 2 or args.nodes < 2 or args.settle < 0:
        parser.error("--rate-mib must be > 0, --providers and --nodes at least 2, --settle >= 0")

    wall = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="memnet-bench-swarm-"))
    logging.basicConfig(level=logging.INFO, filename=str(root / "bench.log"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    signal.signal(signal.SIGTERM, _terminated)  # a KeyboardInterrupt: the same clean-up as Ctrl-C
    children = Children(root)
    results: dict[str, Any] = {}
    print(f"python {platform.python_version()}, {os.cpu_count()} cores "
          f"(usable: {len(os.sched_getaffinity(0))}), {platform.system()} {platform.release()}; "
          f"load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}; temp dir {root}")
    status = 0
    try:
        parts = {"a": part_a, "b": part_b, "c": part_c}
        for name, fn in parts.items():
            if args.only in (None, name):
                start = time.perf_counter()
                results[name] = fn(args, root, children)
                results[name]["wall_s"] = time.perf_counter() - start
        report(results)
        if not all(r["pass"] for r in results.values()):
            status = 1
    except Exception as exc:
        status = 2
        if isinstance(exc, BenchError):
            print(f"\nFAILED: {exc}")
        else:
            print()
            traceback.print_exc()
        child = getattr(exc, "child", None)
        culprits = ([child] if child else []) + [n for n in children.dead() if n != child]
        for name in culprits or list(children.procs)[:1]:
            print(f"--- tail of {name}.log:\n{children.tail(name)}")
        bench_log = root / "bench.log"
        if bench_log.exists():
            lines = bench_log.read_text(errors="replace").splitlines()[-25:]
            print("--- tail of this process's log (in-process fetcher daemon):\n"
                  + "\n".join(f"    {line}" for line in lines))
    except KeyboardInterrupt:
        status = 130
        print("\ninterrupted")
    finally:
        children.stop()
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    results["env"] = {"python": platform.python_version(), "cores": os.cpu_count(),
                      "argv": sys.argv[1:], "wall_s": time.perf_counter() - wall}
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str) + "\n")
        print(f"figures written to {args.json}")
    print(f"total wall time {time.perf_counter() - wall:.1f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
