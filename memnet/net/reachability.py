"""Whether this node can be dialed from the internet, from what probing peers report (pure).

Each server's latest verdict counts once per server IP address (several peer ids on one machine
are one witness). "ok" votes public, "dial_error" votes private; refusals and failed probes are
no votes. The status moves only when `needed` votes agree and outnumber the others, where
needed = min(confirmations, servers that answered): a swarm of two still learns, a larger one
needs several witnesses. Votes older than max_age are forgotten, so a port forward added (or a
mapping lost) shows at the next round of probes.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

PUBLIC, PRIVATE, UNKNOWN = "public", "private", "unknown"


@dataclass(frozen=True)
class Vote:
    server_ip: str
    reachable: bool
    addr: str
    at: float


def counts_as_witness(ip: str, private_witnesses: bool) -> bool:
    """A peer that sees us from a private or loopback address only speaks for its LAN."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return private_witnesses or address.is_global or not (address.is_private or address.is_loopback)


@dataclass
class Reachability:
    confirmations: int = 3
    max_age: float = 3600.0
    status: str = UNKNOWN
    changed_at: float = 0.0
    votes: dict[str, Vote] = field(default_factory=dict)

    def record(self, server_ip: str, status: str, addr: str, now: float) -> bool:
        """Count one server's answer; True when the status changed."""
        if status not in ("ok", "dial_error"):
            return False
        self.votes[server_ip] = Vote(server_ip, status == "ok", addr, now)
        return self._decide(now)

    def expire(self, now: float) -> bool:
        for ip in [ip for ip, vote in self.votes.items() if now - vote.at > self.max_age]:
            del self.votes[ip]
        return self._decide(now)

    def _decide(self, now: float) -> bool:
        live = [v for v in self.votes.values() if now - v.at <= self.max_age]
        yes = sum(v.reachable for v in live)
        no = len(live) - yes
        needed = max(1, min(self.confirmations, len(live)))
        status = self.status
        if yes >= needed and yes > no:
            status = PUBLIC
        elif no >= needed and no > yes:
            status = PRIVATE
        elif not live:
            status = UNKNOWN
        if status == self.status:
            return False
        self.status, self.changed_at = status, now
        return True

    def confirmed(self) -> list[str]:
        """Addresses that servers reached us at (newest first, each once)."""
        seen: dict[str, None] = {}
        for vote in sorted(self.votes.values(), key=lambda v: -v.at):
            if vote.reachable:
                seen.setdefault(vote.addr)
        return list(seen)


def advice(status: str, listen_ports: list[int], relayed: bool, upnp: str | None) -> str | None:
    """One line for a node that others cannot dial, or None when nothing needs doing."""
    if status != PRIVATE or relayed:
        return None
    port = listen_ports[0] if listen_ports else 4737
    tried = " (the router offered no UPnP mapping)" if upnp is None else f" (UPnP: {upnp})"
    return (f"this node cannot be reached from the internet and holds no relay reservation{tried}: "
            f"forward TCP port {port} on your router to this machine, or run the daemon with "
            f"--announce /ip4/<your public IP>/tcp/{port} once a forward exists")
