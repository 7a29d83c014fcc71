"""Commands that need the swarm: run the daemon, and talk to it (get, find, peers, status,
names, shutdown)."""

from __future__ import annotations

import logging
import sys
from typing import Optional

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

from cli.common import _cid, _node, _print_json, app, daemon_client, out
from memnet import render
from memnet.cube import cid, name_record
from memnet.errors import DaemonError, FormatError, MemnetError, UsageError

name_app = typer.Typer(no_args_is_help=True, help="Signed, sequenced names pointing at cubes.")
app.add_typer(name_app, name="name")


@app.command()
def daemon(
    listen: list[str] = typer.Option([], "--listen", help="Multiaddr to listen on (repeatable)."),
    bootstrap: list[str] = typer.Option([], "--bootstrap", help="Peer multiaddr with /p2p/ID (repeatable)."),
    mdns: Optional[bool] = typer.Option(None, "--mdns/--no-mdns", help="Find peers on the LAN."),
    reprovide_interval: Optional[int] = typer.Option(None, "--reprovide-interval", help="Seconds between re-announcements."),
    upload_rate: Optional[float] = typer.Option(None, "--upload-rate", help="Upload cap for the node, bytes/s."),
    hivemind: Optional[bool] = typer.Option(None, "--hivemind/--no-hivemind", help="Run the hivemind bridge "
                                            "(distributed inference)."),
    serve_blocks: Optional[str] = typer.Option(None, "--serve-blocks", help="Serve layers A..B-1 of the pinned "
                                               "model as \"A:B\" (implies --hivemind)."),
    hivemind_listen: list[str] = typer.Option([], "--hivemind-listen", help="hivemind multiaddr to listen on."),
    hivemind_peer: list[str] = typer.Option([], "--hivemind-peer", help="hivemind peer to join (/p2p/ID)."),
    http: Optional[bool] = typer.Option(None, "--http/--no-http", help="Serve the OpenAI-compatible API and "
                                        "the dashboard (keeps the pinned model loaded)."),
    http_listen: Optional[str] = typer.Option(None, "--http-listen", help="HOST:PORT for the API and dashboard "
                                              "(implies --http; default 127.0.0.1:8377)."),
    announce: list[str] = typer.Option([], "--announce", help="Multiaddr a port forward makes reachable, "
                                       "advertised to peers (repeatable)."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Also log libp2p's own messages."),
) -> None:
    """Run the node: join the swarm, serve and announce pinned cubes, accept CLI requests."""
    import trio

    from memnet.daemon import state
    from memnet.daemon.service import Daemon

    node = _node()
    running = state.read(node.home)
    if running is not None:
        raise DaemonError(f"a daemon (pid {running.pid}) already runs for {node.home}")
    overrides = {"daemon.listen": list(listen) or None, "daemon.bootstrap": list(bootstrap) or None,
                 "daemon.mdns": mdns, "daemon.reprovide_interval": reprovide_interval,
                 "daemon.limits.upload_bytes_per_s": upload_rate,
                 "hivemind.enabled": True if serve_blocks else hivemind, "hivemind.serve_blocks": serve_blocks,
                 "hivemind.listen": list(hivemind_listen) or None, "hivemind.initial_peers": list(hivemind_peer) or None,
                 "http.enabled": True if http_listen else http, "http.listen": http_listen,
                 "nat.announce": list(announce) or None}
    daemon_ = Daemon(node, overrides={k: v for k, v in overrides.items() if v is not None})
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose:  # py-libp2p logs routine peer churn as warnings
        logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    try:
        trio.run(daemon_.run)
    except BaseExceptionGroup as group:  # trio nurseries wrap what went wrong: show the cause
        leaves = _leaves(group)
        if len(leaves) == 1 and isinstance(leaves[0], (MemnetError, OSError)):
            raise leaves[0] from None
        raise


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    found = []
    for exc in group.exceptions:
        found += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return found


@app.command()
def shutdown() -> None:
    """Stop the running daemon."""
    daemon_client().call("stop")
    out.print("daemon stopping")


@app.command()
def status(as_json: bool = typer.Option(False, "--json")) -> None:
    """The daemon's identity, addresses, peers and store."""
    info = daemon_client().call("status")
    if as_json:
        _print_json(info)
        return
    out.print(f"peer id:       {info['peer_id']} (pid {info['pid']}, up {info['uptime']} s)")
    for addr in info["addrs"]:
        out.print(f"address:       {addr}")
    out.print(f"peers:         {info['connected']} connected, {info['routing_table']} in the routing table")
    nat = info.get("nat") or {}
    if nat:
        witnesses = f"{nat['witnesses']} witness{'es' if nat['witnesses'] != 1 else ''}"
        out.print(f"reachability:  {nat['reachability']} ({witnesses}; DHT {nat['dht_mode']} mode)")
        for addr in nat["confirmed"]:
            out.print(f"confirmed:     {addr}")
        out.print(f"upnp:          {nat['upnp']}", markup=False)
        for slot in nat["reservations"]:
            out.print(f"relayed via:   {slot['addr']} (renewed within {slot['expires_in']} s)")
        relay = nat["relay"]
        if relay["serving"] or relay["circuits"]:
            out.print(f"relay:         {'serving' if relay['serving'] else 'off'}, {relay['circuits']} circuits, "
                      f"{render.human_size(relay['bytes'])} relayed")
        if nat.get("advice"):
            out.print(f"advice:        {nat['advice']}", markup=False)
    out.print(f"cubes:         {info['cubes']} stored, {info['providing']} announced")
    out.print(f"served:        {render.human_size(info['served_bytes'])}")
    bridge = info.get("bridge") or {}
    if bridge.get("state") not in (None, "off"):
        span = bridge.get("serve")
        out.print(f"hivemind:      bridge {bridge['state']}" + (f", {bridge['maddrs'][0]}" if bridge.get("maddrs") else "")
                  + (f", serving layers [{span[0]}, {span[1]})" if span else ""))
    api = info.get("http") or {}
    if api.get("url"):
        model = api.get("model") or {}
        out.print(f"http:          {api['url']} (OpenAI API at /v1, dashboard at /; model {model.get('model')} "
                  f"{model.get('state')}, {model.get('requests', 0)} requests)")
    distil = info.get("consolidation") or {}
    if distil.get("running"):
        run = distil["running"]
        out.print(f"consolidating: memory set {run['memory_set'][:12]}: {run['stage']} {run['done']}/{run['total']} "
                  f"(CPU today {distil['cpu_today']:.0f}/{distil['cpu_budget']:.0f} s)")
    elif distil.get("last"):
        last = distil["last"]
        out.print(f"consolidated:  memory set {last['memory_set'][:12]}: "
                  + (f"published {last.get('adapter')}" if last.get("published") else "not published")
                  + f" ({last.get('reason')})", markup=False)
    for name, state in (info.get("services") or {}).items():
        if state != "ok":
            out.print(f"service:       {name} {state} (see the daemon's log)")


@app.command()
def reachability() -> None:
    """Probe now whether peers can dial this node, and print what the daemon knows (JSON)."""
    _print_json(daemon_client().call("reachability"))


@app.command()
def dashboard(as_json: bool = typer.Option(False, "--json")) -> None:
    """The dashboard's URL, with the token that lets the page act (keep it to yourself)."""
    from memnet.daemon.http import token_of

    info = daemon_client().call("http_status")
    if not info.get("url"):
        raise UsageError("the daemon serves no HTTP API: start it with `memnet daemon --http`")
    url = f"{_browser_url(info['url'])}/#token={token_of(_node().home)}"
    if as_json:
        _print_json({"url": url, "api": _browser_url(info["url"]) + "/v1"})
        return
    out.print(url, markup=False, highlight=False, soft_wrap=True)


def _browser_url(url: str) -> str:
    """A bind URL a browser can open (a wildcard bind is reached on loopback)."""
    return url.replace("//0.0.0.0:", "//127.0.0.1:").replace("//[::]:", "//[::1]:")


@app.command()
def peers(as_json: bool = typer.Option(False, "--json")) -> None:
    """Connected peers."""
    _print_peers(daemon_client().call("peers"), as_json, "peer(s)")


def _print_peers(found: list[dict], as_json: bool, noun: str) -> None:
    if as_json:
        _print_json(found)
        return
    for peer in found:
        out.print(f"{peer['peer_id']}  {' '.join(peer['addrs'])}")
    sys.stderr.write(f"{len(found)} {noun}\n")


@app.command()
def find(
    cube: Optional[str] = typer.Argument(None, help="Cube CID."),
    prefix: Optional[str] = typer.Option(None, "--prefix", help="A prefix-chain key (64 hex digits) instead of a CID."),
    trace: bool = typer.Option(False, "--trace", help="Also show how the lookup went: rounds, queries, "
                               "seconds, the peers asked and those that gave nothing."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List the providers of a cube (or of a KV prefix) in the swarm."""
    if (cube is None) == (prefix is None):
        raise UsageError("give a CID or --prefix KEY")
    if cube is not None:
        target = {"cube": _cid(cube)}
    else:
        try:
            key = bytes.fromhex(prefix)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise UsageError("--prefix must be a 32-byte prefix-chain key in hex")
        target = {"prefix": key}
    if not trace:
        _print_peers(daemon_client().call("find", **target), as_json, "provider(s)")
        return
    answer = daemon_client().call("find", stats=True, **target)
    if as_json:
        _print_json(answer)
        return
    _print_peers(answer["providers"], False, "provider(s)")
    s = answer["stats"]
    sys.stderr.write(f"walk: {s['rounds']} round(s), {s['queries']} FIND_NODE queries, {s['walk_seconds']:.2f} s; "
                     f"providers asked of {s['asked']} peer(s), {len(s['silent'])} gave nothing, "
                     f"{s['wave_seconds']:.2f} s\n")
    for peer in s["closest"]:
        sys.stderr.write(f"  {peer}{'  (gave nothing)' if peer in s['silent'] else ''}\n")


@app.command()
def get(cube: str = typer.Argument(..., help="Cube CID."),
        no_pin: bool = typer.Option(False, "--no-pin", help="Do not pin (and so do not provide) it."),
        quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress bar.")) -> None:
    """Fetch a cube from the swarm; it is stored only complete and verified."""
    cube_id = _cid(cube)
    client = daemon_client()
    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=quiet or not sys.stderr.isatty(), transient=True,
                  console=None) as bar:
        task = bar.add_task("fetch", total=None)
        result = client.call("get", cube=cube_id, pin=not no_pin,
                             on_progress=lambda done, total: bar.update(task, completed=done, total=total))
    if result["already"]:
        sys.stderr.write(f"{cube} is already stored\n")
        return
    size, seconds = result["size"], result["seconds"]
    paths = result.get("paths") or {}
    sources = ", ".join(f"{peer[-8:]}" + (f" ({paths[peer]})" if paths.get(peer, "direct") != "direct" else "")
                        + f": {render.human_size(n)}" for peer, n in result["from"].items()) or "-"
    sys.stderr.write(f"fetched {render.human_size(size)} in {seconds:.2f} s "
                     f"({render.human_size(size / max(seconds, 1e-9))}/s) from {sources}\n")
    for peer, why in result["dropped"].items():
        sys.stderr.write(f"dropped peer {peer}: {why}\n")
    sys.stdout.write(cid.to_text(cube_id) + "\n")


@name_app.command("publish")
def name_publish(name: str = typer.Argument(..., help="Name, scoped to this node's key."),
                 cube: str = typer.Argument(..., help="Cube CID the name points at."),
                 ttl: Optional[int] = typer.Option(None, "--ttl", help="Record lifetime in seconds (default 24 h).")) -> None:
    """Point NAME at a cube with a signed record in the DHT (a higher sequence each time)."""
    result = daemon_client().call("name_publish", name=name, cube=_cid(cube), ttl=ttl)
    out.print(f"{_node().peer_id}/{name} -> {cube} (seq {result['seq']})")


@name_app.command("resolve")
def name_resolve(path: str = typer.Argument(..., help="PEERID/NAME")) -> None:
    """Resolve PEERID/NAME to a cube CID through the DHT."""
    try:
        author, name = name_record.parse_path(path)
    except FormatError as exc:
        raise UsageError(str(exc)) from None
    result = daemon_client().call("name_resolve", author=author, name=name)
    sys.stderr.write(f"seq {result['seq']}, expires {result['expires']}\n")
    sys.stdout.write(cid.to_text(result["cube"]) + "\n")


