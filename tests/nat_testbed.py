"""A NAT testbed of Linux network namespaces (issue 20; design.md §12): an "internet" segment,
public hosts on it, and home routers that NAT with nftables, each with hosts behind it.

    internet  one namespace holding a bridge; every public host and every router's WAN side
              is a veth port on it, addresses in 172.32.0.0/24: not a private or documentation
              range, because miniupnpd refuses to map ports on a reserved WAN address; no route
              leads out of the testbed, so these addresses are only ever used inside it
    public    a host with an internet address (a relay, a bootstrap node)
    router    WAN on the internet segment, LAN 10.<n>.0.1/24, ip_forward on, and one of
                cone       masquerade: Linux keeps the source port where it can, so a mapping does
                           not depend on the destination; conntrack lets in only replies from the
                           address and port the flow went to (a port-restricted cone NAT)
                symmetric  masquerade fully-random: every flow gets its own random port, so the
                           port a peer saw is not the port a new flow will use
              and optionally miniupnpd (UPnP IGD + NAT-PMP) on its LAN side
    home      a host behind a router, 10.<n>.0.<k>, default route via the router

Nothing here leaves the namespaces the testbed made: there is no route to anything else, and
close() deletes every namespace (and kills what runs in them), also after a failure. Needs root,
iproute2 and nftables (miniupnpd for UPnP); `ensure_tools()` installs them with apt-get as CI does.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

INTERNET = "172.32.0"
NAT_KINDS = ("cone", "symmetric")
_TOOLS = {"nft": "nftables", "miniupnpd": "miniupnpd-nftables", "ip": "iproute2"}


class TestbedError(RuntimeError):
    __test__ = False


def missing_tools() -> list[str]:
    return [pkg for tool, pkg in _TOOLS.items() if shutil.which(tool) is None]


def ensure_tools() -> str | None:
    """Install the Debian packages the testbed needs; None when ready, else why not."""
    if os.geteuid() != 0:
        return "the NAT testbed needs root (network namespaces)"
    missing = missing_tools()
    if missing and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], capture_output=True, env=env)
        missing = missing_tools()
    if missing:
        return f"missing Debian packages: {' '.join(missing)}"
    probe = f"mnprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot make network namespaces: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def sh(*argv: str, ns: str | None = None, check: bool = True, stdin: str | None = None) -> str:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise TestbedError(f"{' '.join(cmd)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


@dataclass
class Host:
    name: str
    ns: str
    ip: str
    router: Router | None = None

    def run(self, *argv: str, check: bool = True) -> str:
        return sh(*argv, ns=self.ns, check=check)

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.ns, *argv], **kwargs)


@dataclass
class Router(Host):
    lan_prefix: str = ""
    nat: str = "cone"
    hosts: list[Host] = field(default_factory=list)
    upnp: subprocess.Popen | None = None
    forwards: list[tuple[int, str]] = field(default_factory=list)

    @property
    def lan_ip(self) -> str:
        return f"{self.lan_prefix}.1"


def _ruleset(nat: str) -> str:
    """The router's nftables: NAT out of wan, forward only replies and what the LAN starts (or a
    port forward / UPnP mapping lets in); what the internet sends to the router itself is dropped
    without an answer, as home routers do (a reset would end a hole punch's first SYN before the
    peer's own SYN opens the way). miniupnpd adds its rules to the chains it is given."""
    masquerade = "masquerade fully-random" if nat == "symmetric" else "masquerade"
    return f"""
table inet memnet_nat {{
    chain input {{
        type filter hook input priority 0; policy accept;
        iifname "wan" ct state established,related accept
        iifname "wan" drop
    }}
    chain forward {{
        type filter hook forward priority 0; policy drop;
        ct state established,related accept
        iifname "lan" accept
        ct status dnat accept
        jump miniupnpd
    }}
    chain miniupnpd {{
    }}
    chain prerouting {{
        type nat hook prerouting priority -100; policy accept;
        jump forwards
        jump prerouting_miniupnpd
    }}
    chain forwards {{
    }}
    chain prerouting_miniupnpd {{
    }}
    chain postrouting {{
        type nat hook postrouting priority 100; policy accept;
        jump postrouting_miniupnpd
        oifname "wan" {masquerade}
    }}
    chain postrouting_miniupnpd {{
    }}
}}
"""


class Testbed:
    __test__ = False  # not a pytest class

    def __init__(self, tag: str | None = None):
        self.tag = tag or f"mn{os.getpid() % 100000}"
        self.internet = f"{self.tag}-net"
        self.namespaces: list[str] = []
        self.hosts: dict[str, Host] = {}
        self._public_ips = itertools.count(10)
        self._router_numbers = itertools.count(1)
        self._veths = itertools.count(0)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.tag}-"))
        try:
            self._namespace(self.internet)
            sh("ip", "link", "add", "br0", "type", "bridge", ns=self.internet)
            sh("ip", "link", "set", "br0", "up", ns=self.internet)
        except BaseException:
            self.close()
            raise

    # ---- building
    def _namespace(self, ns: str) -> None:
        sh("ip", "netns", "add", ns)
        self.namespaces.append(ns)
        sh("ip", "link", "set", "lo", "up", ns=ns)

    def _plug_into_internet(self, ns: str, ifname: str, ip: str) -> None:
        port = f"p{next(self._veths)}"
        sh("ip", "link", "add", port, "netns", self.internet, "type", "veth", "peer", "name", ifname, "netns", ns)
        sh("ip", "link", "set", port, "master", "br0", ns=self.internet)
        sh("ip", "link", "set", port, "up", ns=self.internet)
        sh("ip", "addr", "add", f"{ip}/24", "dev", ifname, ns=ns)
        sh("ip", "link", "set", ifname, "up", ns=ns)

    def add_public(self, name: str) -> Host:
        ns, ip = f"{self.tag}-{name}", f"{INTERNET}.{next(self._public_ips)}"
        self._namespace(ns)
        self._plug_into_internet(ns, "eth0", ip)
        host = self.hosts[name] = Host(name, ns, ip)
        return host

    def add_router(self, name: str, nat: str = "cone", upnp: bool = False) -> Router:
        if nat not in NAT_KINDS:
            raise TestbedError(f"nat must be one of {NAT_KINDS}")
        number = next(self._router_numbers)
        ns, wan_ip = f"{self.tag}-{name}", f"{INTERNET}.{number}"
        self._namespace(ns)
        self._plug_into_internet(ns, "wan", wan_ip)
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=ns)
        sh("nft", "-f", "-", ns=ns, stdin=_ruleset(nat))
        router = Router(name, ns, wan_ip, lan_prefix=f"10.{number}.0", nat=nat)
        # the LAN is a bridge in the router, so a router can hold several homes
        sh("ip", "link", "add", "lan", "type", "bridge", ns=ns)
        sh("ip", "addr", "add", f"{router.lan_ip}/24", "dev", "lan", ns=ns)
        sh("ip", "link", "set", "lan", "up", ns=ns)
        self.hosts[name] = router
        if upnp:
            self._start_upnp(router)
        return router

    def add_home(self, router: Router, name: str) -> Host:
        ns, ip = f"{self.tag}-{name}", f"{router.lan_prefix}.{len(router.hosts) + 2}"
        self._namespace(ns)
        port = f"h{len(router.hosts)}"
        sh("ip", "link", "add", port, "netns", router.ns, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "link", "set", port, "master", "lan", ns=router.ns)
        sh("ip", "link", "set", port, "up", ns=router.ns)
        sh("ip", "addr", "add", f"{ip}/24", "dev", "eth0", ns=ns)
        sh("ip", "link", "set", "eth0", "up", ns=ns)
        sh("ip", "route", "add", "default", "via", router.lan_ip, ns=ns)
        host = Host(name, ns, ip, router)
        router.hosts.append(host)
        self.hosts[name] = host
        return host

    def forward_port(self, router: Router, host: Host, port: int) -> None:
        """A port forward on the router: wan:port -> host:port (what a user sets up by hand)."""
        sh("nft", "add", "rule", "inet", "memnet_nat", "forwards", "iifname", "wan", "tcp", "dport", str(port),
           "dnat", "ip", "to", f"{host.ip}:{port}", ns=router.ns)
        router.forwards.append((port, host.ip))

    def _start_upnp(self, router: Router) -> None:
        if shutil.which("miniupnpd") is None:
            raise TestbedError("miniupnpd is not installed (Debian's miniupnpd-nftables)")
        conf = self.workdir / f"{router.name}-miniupnpd.conf"
        conf.write_text("\n".join([
            "ext_ifname=wan", "listening_ip=lan", "port=5000", "enable_upnp=yes", "enable_natpmp=yes",
            "secure_mode=yes", "system_uptime=yes", "uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b",
            "upnp_table_name=memnet_nat", "upnp_nat_table_name=memnet_nat", "upnp_forward_chain=miniupnpd",
            "upnp_nat_chain=prerouting_miniupnpd", "upnp_nat_postrouting_chain=postrouting_miniupnpd",
            f"allow 1024-65535 {router.lan_prefix}.0/24 1024-65535", "deny 0-65535 0.0.0.0/0 0-65535", ""]))
        # SSDP answers M-SEARCH on 239.255.255.250; the router has no default route to send it by
        sh("ip", "route", "add", "239.0.0.0/8", "dev", "lan", ns=router.ns)
        # its own pid file: miniupnpd refuses to start while /var/run/miniupnpd.pid names a live pid
        pid_file = self.workdir / f"{router.name}-miniupnpd.pid"
        router.upnp = router.popen(["miniupnpd", "-d", "-f", str(conf), "-P", str(pid_file)], stdout=subprocess.DEVNULL,
                                   stderr=open(self.workdir / f"{router.name}-miniupnpd.log", "wb"))

    # ---- tearing down
    def close(self) -> None:
        for ns in reversed(self.namespaces):
            pids = sh("ip", "netns", "pids", ns, check=False).split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        time.sleep(0.1 if self.namespaces else 0)
        for ns in reversed(self.namespaces):
            sh("ip", "netns", "del", ns, check=False)
        self.namespaces.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Testbed:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def leftover_namespaces(prefix: str = "mn") -> list[str]:
    return [line.split()[0] for line in sh("ip", "netns", "list").splitlines()
            if line.startswith(prefix) and "-" in line.split()[0]]
