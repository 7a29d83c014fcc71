#!/usr/bin/env python
"""The demo's NAT step (issue 20): three homes behind home routers on a testbed of network
namespaces (tests/nat_testbed.py: nftables NATs, only addresses inside the testbed), and a public
relay. Each home learns it is private, takes a relay slot and says so; alice publishes notes; bob
(behind a cone NAT) fetches them after a hole punch, carol (behind a symmetric NAT) through the
relay. Needs root; prints why it is skipped otherwise. Removes everything it made at the end."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.nat_swarm import NatSwarm  # noqa: E402
from tests.nat_testbed import Testbed, ensure_tools  # noqa: E402
from tests.swarm_helpers import notes_file  # noqa: E402


def show(title: str, text: str) -> None:
    print(f"\n$ {title}")
    print(text.rstrip())


def main() -> int:
    why = ensure_tools()
    if why:
        print(f"(NAT step skipped: {why})")
        return 0
    with tempfile.TemporaryDirectory(prefix="memnet-demo-nat-") as tmp, Testbed() as bed:
        root = Path(tmp)
        relay_host = bed.add_public("relay")
        homes = {"alice": bed.add_home(bed.add_router("ra", "cone"), "alice"),
                 "bob": bed.add_home(bed.add_router("rb", "cone"), "bob"),
                 "carol": bed.add_home(bed.add_router("rc", "symmetric"), "carol")}
        print(f"testbed: relay {relay_host.ip}; alice and bob behind cone NATs "
              f"({homes['alice'].router.ip}, {homes['bob'].router.ip}), carol behind a symmetric NAT "
              f"({homes['carol'].router.ip})")
        swarm = NatSwarm(bed, root)
        try:
            relay = swarm.start(relay_host)
            nodes = {name: swarm.start(host, bootstrap=[relay]) for name, host in homes.items()}
            relay.wait_nat(lambda n: n["reachability"] == "public", 60, "public")
            for name, node in nodes.items():
                node.wait_nat(lambda n: n["reachability"] == "private" and n["reservations"], 90, "a relay slot")
            show("memnet status   # on the relay", "\n".join(
                line for line in relay.cli("status").stdout.splitlines() if line.startswith(("reachab", "confirmed", "relay"))))
            show("memnet status   # on alice's laptop", "\n".join(
                line for line in nodes["alice"].cli("status").stdout.splitlines()
                if line.startswith(("address", "reachab", "relayed via"))))
            notes = notes_file(root / "notes.txt", 2 << 20)
            cube = nodes["alice"].cli("publish", str(notes)).stdout.strip().split()[-1]
            show(f"memnet publish notes.txt   # alice: {cube}", "")
            for name in ("bob", "carol"):
                done = nodes[name].cli("get", cube, timeout=180)
                show(f"memnet get {cube[:16]}...   # {name}", done.stderr + done.stdout)
        finally:
            swarm.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
