#!/usr/bin/env python
"""Benchmark (not a test): NAT traversal on the namespaced testbed (tests/nat_testbed.py; root,
nftables and miniupnpd, installed with apt-get when missing). Issue 20's figures:

    .venv/bin/python scripts/bench_nat.py [--tries 50] [--size-mib 64] [--reps 3] [--no-ttft] [--json PATH]

(1) time to the first reachable announcement: from `memnet daemon` starting behind a NAT until
    its advertised addresses can be dialed by others: a relay slot (cone NAT, no UPnP), public
    through a UPnP mapping, public through a port forward. Two public nodes run already (one
    relays: its own probes, answered by the other, found it public). Median of --reps starts each.
(2) hole punching per NAT pairing (cone-cone, cone-symmetric, symmetric-symmetric), --tries
    tries each: a target behind one NAT holds a slot on a public relay; for every try a fresh
    host behind the other NAT (new key, new port) dials it through the relay, then runs DCUtR;
    success = a direct connection verified. Both run memnet's own relaying code (this script's
    --role modes, one process per namespace), the relay too; the punches run 5 at a time.
(3) a 64 MiB cube fetched with `memnet get` between daemons: direct (publisher on a public host,
    fetcher behind a cone NAT), punched (cone behind cone), relayed (cone to symmetric), against
    a plain TCP stream of the same size between the same two namespaces (from the publisher's side
    of the NAT to the fetcher's: the fetcher dials out). Also the relay's CPU seconds and bytes
    per relayed circuit (its own counters and /proc).
(4) time to first token from a peer for a 2048-token KV cube (the real SmolLM2): the cube built
    on the publisher, `memnet generate --fetch always` on the fetcher, direct vs relayed, beside a
    full prefill on the fetcher (no cache).

Prints a table; --json writes every number. The testbed and every process are removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RELAY_PORT = 4801
TARGET_PORT = 4802


# -- the standalone roles of (2): memnet's relaying classes on bare hosts -------------------------

async def _role(args) -> None:
    import trio
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from libp2p.peer.id import ID
    from libp2p.tools.anyio_service.context import background_trio_service

    from memnet.config.sections import RelayLimits
    from memnet.net import relaying
    from memnet.net.addresses import Addresses
    from memnet.net.host import build_host, parse_multiaddr, peer_info

    relaying.quiet_py_libp2p_relay_logs()

    async def node(port: int):
        host = build_host(Ed25519PrivateKey.generate())
        return host, parse_multiaddr(f"/ip4/0.0.0.0/tcp/{port}"), relaying.Relay(host, RelayLimits())

    async def _observed(host) -> None:
        """Until identify with the relay told us the address it sees (DCUtR's prediction)."""
        manager = getattr(host, "_observed_addr_manager", None)
        with trio.move_on_after(5):
            while manager is not None and not manager.addrs(min_observers=1):
                await trio.sleep(0.05)

    if args.role == "relay":
        host, listen, relay = await node(RELAY_PORT)
        async with host.run([listen]), background_trio_service(relay):
            relay.hop(True)
            Path(args.out).write_text(str(host.get_id()))
            with trio.open_signal_receiver(signal.SIGTERM) as signals:
                async for _ in signals:
                    break
            Path(args.out).write_text(json.dumps({"cpu": time.process_time(), "circuits": relay.stats.circuits,
                                                  "bytes": relay.stats.bytes}))
        return

    relay_info = peer_info(args.relay)
    if args.role == "target":
        host, listen, relay = await node(TARGET_PORT)
        async with host.run([listen]), background_trio_service(relay), trio.open_nursery() as nursery:
            dialer = relaying.Dialer(host, relay)
            dialer.install(nursery)
            async with background_trio_service(dialer.puncher):
                addresses = Addresses(host)
                addresses.install()
                await host.connect(relay_info)
                await _observed(host)
                reserver = relaying.Reserver(host, dialer, addresses, lambda: None)
                reserver.want = 1
                for _ in range(50):
                    await reserver.pass_once()
                    if reserver.slots:
                        break
                    await trio.sleep(0.2)
                slot = next(iter(reserver.slots.values()))
                Path(args.out).write_text(f"{slot.addr}/p2p/{host.get_id()}")
                nursery.start_soon(reserver.run)
                await trio.sleep_forever()

    # source: one fresh host per try
    target = parse_multiaddr(args.target)
    target_peer = str(target).rsplit("/p2p/", 1)[1]  # /.../p2p/RELAY/p2p-circuit/p2p/TARGET
    results: list[dict] = []
    limit = trio.Semaphore(5)

    async def attempt(i: int) -> None:
        async with limit:
            host, listen, relay = await node(5000 + i)
            peer = ID.from_base58(target_peer)
            async with host.run([listen]), background_trio_service(relay), trio.open_nursery() as nursery:
                dialer = relaying.Dialer(host, relay)
                dialer.install(nursery)
                async with background_trio_service(dialer.puncher):
                    began = time.monotonic()
                    try:
                        Addresses(host).install()
                        await host.connect(relay_info)
                        await _observed(host)  # a daemon has been connected to its relay for a while
                        await dialer._through_relay(peer, [target])
                        relayed_at = time.monotonic()
                        ok = await dialer.puncher.initiate_hole_punch(peer)
                        direct = ok and relaying.has_direct_connection(host, peer)
                        results.append({"try": i, "punched": bool(direct), "relay_s": relayed_at - began,
                                        "punch_s": time.monotonic() - relayed_at})
                    except Exception as exc:
                        results.append({"try": i, "punched": False, "error": repr(exc)[:200]})
                    for other in (peer, relay_info.peer_id):  # host.run()'s end leaves connections open,
                        with trio.move_on_after(5):           # and a circuit holds one of the slot's 8
                            try:
                                await host.disconnect(other)
                            except Exception:
                                pass
                nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        for i in range(args.tries):
            nursery.start_soon(attempt, i)
    Path(args.out).write_text(json.dumps(results))


# -- the orchestrator ------------------------------------------------------------------------------

def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_file(path: Path, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.1)
    raise RuntimeError(f"{path} not written in {timeout} s")


def punch_figures(args, root: Path) -> dict:
    from tests.nat_testbed import Testbed

    out: dict = {}
    for first, second in (("cone", "cone"), ("cone", "symmetric"), ("symmetric", "symmetric")):
        with Testbed() as bed:
            pub = bed.add_public("relay")
            home_t = bed.add_home(bed.add_router("rt", first), "t")
            home_s = bed.add_home(bed.add_router("rs", second), "s")
            me = [sys.executable, str(Path(__file__).resolve())]
            relay_file, target_file, source_file = (root / f"{n}-{first}-{second}" for n in ("relay", "target", "source"))
            relay = pub.popen(me + ["--role", "relay", "--out", str(relay_file)], cwd=ROOT)
            relay_id = _wait_file(relay_file)
            relay_addr = f"/ip4/{pub.ip}/tcp/{RELAY_PORT}/p2p/{relay_id}"
            target = home_t.popen(me + ["--role", "target", "--relay", relay_addr, "--out", str(target_file)], cwd=ROOT)
            circuit = _wait_file(target_file)
            began = time.monotonic()
            home_s.run(*me, "--role", "source", "--relay", relay_addr, "--target", circuit, "--tries", str(args.tries),
                       "--out", str(source_file))
            seconds = time.monotonic() - began
            tries = json.loads(source_file.read_text())
            target.send_signal(signal.SIGTERM)
            relay.send_signal(signal.SIGTERM)
            punched = [t for t in tries if t["punched"]]
            out[f"{first}-{second}"] = {
                "tries": len(tries), "punched": len(punched), "rate": len(punched) / max(1, len(tries)),
                "relayed_connect_s": statistics.median(t["relay_s"] for t in tries if "relay_s" in t) if tries else None,
                "punch_s_median": statistics.median(t["punch_s"] for t in punched) if punched else None,
                "errors": sorted({t["error"] for t in tries if "error" in t})[:3], "wall_s": seconds}
            print(f"  punch {first}-{second}: {len(punched)}/{len(tries)} in {seconds:.0f} s", flush=True)
    return out


def _publish(daemon, path: Path) -> str:
    return daemon.cli("publish", str(path)).stdout.strip().split()[-1]


def _timed_get(daemon, cube: str) -> tuple[float, str]:
    began = time.monotonic()
    done = daemon.cli("get", cube, timeout=600)
    return time.monotonic() - began, done.stderr


TCP_SERVER = """import socket, sys
n = int(sys.argv[2]); s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen()
block = bytes(1 << 20)
while True:
    c, _ = s.accept(); left = n
    while left: c.sendall(block[:min(left, len(block))]); left -= min(left, len(block))
    c.close()"""
TCP_CLIENT = """import socket, sys, time
began = time.monotonic(); s = socket.create_connection((sys.argv[1], int(sys.argv[2]))); got = 0
while True:
    b = s.recv(1 << 20)
    if not b: break
    got += len(b)
print(got, time.monotonic() - began)"""


def _tcp_seconds(server_host, client_host, dial_ip: str, size: int, port: int = 7100) -> float:
    server = server_host.popen([sys.executable, "-c", TCP_SERVER, str(port), str(size)])
    time.sleep(0.5)
    try:
        got, seconds = client_host.run(sys.executable, "-c", TCP_CLIENT, dial_ip, str(port)).split()
        assert int(got) == size
        return float(seconds)
    finally:
        server.kill()


def transfer_figures(args, root: Path) -> dict:
    from tests.nat_swarm import NatSwarm
    from tests.nat_testbed import Testbed
    from tests.swarm_helpers import notes_file

    size = args.size_mib << 20
    out: dict = {"size_mib": args.size_mib}
    with Testbed() as bed:
        pub = bed.add_public("relay")
        pub2 = bed.add_public("pub2")
        ra = bed.add_router("ra", "cone")
        home_a, home_b = bed.add_home(ra, "a"), bed.add_home(bed.add_router("rb", "cone"), "b")
        home_c = bed.add_home(bed.add_router("rc", "symmetric"), "c")
        swarm = NatSwarm(bed, root / "transfer")
        (root / "transfer").mkdir()
        try:
            relay = swarm.start(pub)
            publisher_pub = swarm.start(pub2, bootstrap=[relay], config={"nat.relay": "false"})  # one relay
            a, b, c = (swarm.start(h, bootstrap=[relay]) for h in (home_a, home_b, home_c))
            for node in (a, b, c):
                node.wait_nat(lambda n: n["reachability"] == "private" and n["reservations"], 90, "a relay slot")
            rows = {}
            for name, publisher, fetcher, server_ns, client_ns, dial_ip in (
                    ("direct", publisher_pub, b, pub2, home_b, pub2.ip),
                    ("punched", a, b, home_a, home_b, None),
                    ("relayed", a, c, home_a, home_c, None)):
                times, said = [], ""
                cpu0, relay_state0 = _cpu_seconds(relay.proc.pid), relay.nat()["relay"]
                for rep in range(args.reps):
                    cube = _publish(publisher, notes_file(root / f"{name}-{rep}.txt", size, seed=hash(name) % 1000 + rep))
                    seconds, said = _timed_get(fetcher, cube)
                    times.append(seconds)
                    print(f"    {name} #{rep}: {seconds:.2f} s: {said.splitlines()[0] if said else ''}", flush=True)
                relay_state1 = relay.nat()["relay"]
                path = "punched" if "(punched)" in said else "relayed" if "(relayed)" in said else "direct"
                # the plain TCP stream: publisher's namespace serves, the fetcher's dials (through its NAT);
                # behind a NAT the publisher is reached at its router with a port forward for the stream
                if dial_ip is None:
                    bed.forward_port(server_ns.router, server_ns, 7100)
                    dial_ip = server_ns.router.ip
                tcp = [_tcp_seconds(server_ns, client_ns, dial_ip, size) for _ in range(args.reps)]
                rows[name] = {"path_seen": path, "get_s": times, "get_median_s": statistics.median(times),
                              "mib_s": args.size_mib / statistics.median(times),
                              "tcp_s": tcp, "tcp_median_s": statistics.median(tcp),
                              "tcp_mib_s": args.size_mib / statistics.median(tcp),
                              "relay_cpu_s": _cpu_seconds(relay.proc.pid) - cpu0,
                              "relay_circuits": relay_state1["circuits"] - relay_state0["circuits"],
                              "relay_bytes": relay_state1["bytes"] - relay_state0["bytes"]}
                print(f"  {name}: get {statistics.median(times):.2f} s ({path}), tcp {statistics.median(tcp):.2f} s",
                      flush=True)
            out["rows"] = rows
            if not args.no_ttft:
                out["ttft"] = ttft_figures(args, root, bed, swarm, publisher_pub, a, b, c)
        finally:
            swarm.close()
    return out


def ttft_figures(args, root: Path, bed, swarm, publisher_pub, a, b, c) -> dict:
    """(4): KV cubes of 2048-token documents, fetched for generation direct (public publisher)
    and relayed (publisher behind a cone NAT, fetcher behind the symmetric one)."""
    import random

    models = os.environ.get("MEMNET_MODELS") or str(root / "models")
    os.environ["MEMNET_MODELS"] = models
    for node in (publisher_pub, a, b, c):
        node.cli("model", "pin", "smollm2", timeout=600)
    rng = random.Random(7)
    words = "alpha beta gamma delta river stone cloud market signal garden number letter window".split()
    rows: dict = {}
    for name, publisher, fetcher in (("direct", publisher_pub, b), ("relayed", a, c)):
        ttfts, full = [], []
        for rep in range(args.reps):
            doc = root / f"doc-{name}-{rep}.txt"
            doc.write_text(" ".join(rng.choice(words) for _ in range(1900)) + "\n")
            publisher.cli("kv", "build", "--file", str(doc), "--dtype", "int8", timeout=600)
            ask = root / f"ask-{name}-{rep}.txt"
            ask.write_text(doc.read_text() + "\nWhich word comes first?")
            result = json.loads(fetcher.cli("generate", "--file", str(ask), "-n", "1", "--fetch", "always", "--json",
                                            timeout=600).stdout)
            baseline = json.loads(fetcher.cli("generate", "--file", str(ask), "-n", "1", "--no-cache", "--json",
                                              timeout=600).stdout)
            ttfts.append(result["ttft"])
            full.append(baseline["ttft"])
            rows.setdefault("sources", []).append(result["source"])
        rows[name] = {"ttft_s": ttfts, "ttft_median_s": statistics.median(ttfts), "prefill_s": full,
                      "prefill_median_s": statistics.median(full),
                      "ratio": statistics.median(full) / statistics.median(ttfts)}
        print(f"  ttft {name}: {statistics.median(ttfts) * 1000:.0f} ms vs prefill "
              f"{statistics.median(full) * 1000:.0f} ms", flush=True)
    return rows


def announce_figures(args, root: Path) -> dict:
    from tests.nat_swarm import PORT, NatSwarm
    from tests.nat_testbed import Testbed

    out: dict = {}
    for kind in ("relay slot", "upnp", "port forward"):
        times = []
        for rep in range(args.reps):
            with Testbed() as bed:
                pub, other = bed.add_public("boot"), bed.add_public("other")
                router = bed.add_router("r", "cone", upnp=kind == "upnp")
                home = bed.add_home(router, "h")
                if kind == "port forward":
                    bed.forward_port(router, home, PORT)
                swarm = NatSwarm(bed, root / f"announce-{kind.replace(' ', '')}-{rep}")
                (swarm.root).mkdir()
                try:
                    boot = swarm.start(pub)
                    swarm.start(other, bootstrap=[boot])  # a witness: a lone node cannot learn it is public
                    boot.wait_nat(lambda n: n["relay"]["serving"], 60, "relay serving")
                    began = time.monotonic()
                    node = swarm.start(home, bootstrap=[boot], config={"nat.upnp": str(kind == "upnp").lower()})
                    want = (lambda n: bool(n["reservations"])) if kind == "relay slot" else \
                        (lambda n: n["reachability"] == "public")
                    node.wait_nat(want, 120, kind)
                    times.append(time.monotonic() - began)
                finally:
                    swarm.close()
        out[kind] = {"seconds": times, "median_s": statistics.median(times)}
        print(f"  first reachable announcement ({kind}): {statistics.median(times):.1f} s", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tries", type=int, default=50)
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--no-ttft", action="store_true")
    parser.add_argument("--only", choices=("announce", "punch", "transfer"))
    parser.add_argument("--json")
    parser.add_argument("--keep", action="store_true", help="keep the homes and daemon logs")
    parser.add_argument("--role", choices=("relay", "target", "source"), help=argparse.SUPPRESS)
    parser.add_argument("--relay", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        import trio
        trio.run(_role, args)
        return 0
    from tests.nat_testbed import ensure_tools
    why = ensure_tools()
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 1
    results: dict = {"machine": os.uname().nodename, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-nat-") as tmp:
        root = Path(tempfile.mkdtemp(prefix="bench-nat-kept-")) if args.keep else Path(tmp)
        if args.keep:
            print(f"homes and logs kept in {root}", flush=True)
        if args.only in (None, "announce"):
            print("(1) first reachable announcement", flush=True)
            results["announce"] = announce_figures(args, root)
        if args.only in (None, "punch"):
            print(f"(2) hole punching, {args.tries} tries per pairing", flush=True)
            results["punch"] = punch_figures(args, root)
        if args.only in (None, "transfer"):
            print(f"(3) {args.size_mib} MiB fetches" + ("" if args.no_ttft else " and (4) TTFT"), flush=True)
            results["transfer"] = transfer_figures(args, root)
    report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def report(results: dict) -> None:
    print("\n== NAT traversal on the testbed ==")
    for kind, row in (results.get("announce") or {}).items():
        print(f"first reachable announcement, {kind:12s}: median {row['median_s']:.1f} s "
              f"(runs {', '.join(f'{s:.1f}' for s in row['seconds'])})")
    for pairing, row in (results.get("punch") or {}).items():
        punch = f", punch median {row['punch_s_median'] * 1000:.0f} ms" if row["punch_s_median"] else ""
        print(f"hole punch {pairing:20s}: {row['punched']}/{row['tries']} ({row['rate']:.0%}){punch}")
    transfer = results.get("transfer") or {}
    for name, row in (transfer.get("rows") or {}).items():
        print(f"{transfer['size_mib']} MiB get {name:8s} ({row['path_seen']}): {row['get_median_s']:.2f} s "
              f"= {row['mib_s']:.1f} MiB/s; plain TCP {row['tcp_median_s']:.2f} s = {row['tcp_mib_s']:.1f} MiB/s; "
              f"ratio {row['tcp_median_s'] / row['get_median_s']:.2f}; relay {row['relay_circuits']} circuits, "
              f"{row['relay_bytes'] / 2**20:.1f} MiB, {row['relay_cpu_s']:.2f} CPU s")
    rows = transfer.get("rows") or {}
    if "direct" in rows and "punched" in rows:
        print(f"punched / direct throughput: {rows['direct']['get_median_s'] / rows['punched']['get_median_s']:.2f}")
    for name, row in ((transfer.get("ttft") or {}).items()):
        if name == "sources":
            continue
        print(f"TTFT 2048-token KV cube from a peer, {name:8s}: {row['ttft_median_s'] * 1000:.0f} ms "
              f"(full prefill {row['prefill_median_s'] * 1000:.0f} ms, {row['ratio']:.1f}x)")


if __name__ == "__main__":
    sys.exit(main())
