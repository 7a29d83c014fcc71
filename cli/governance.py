"""Governance commands: the trust policy (`memnet trust`), withdrawing one's own cubes
(`memnet revoke`) and the audit log of answers (`memnet audit`)."""

from __future__ import annotations

import datetime as dt
import sys
from typing import Optional

import typer
from rich.table import Table

from cli.common import _cid, _node, _print_json, app, daemon_client, out
from memnet.cube import cid, keys
from memnet.errors import DaemonError, UsageError
from memnet import config
from memnet.governance import audit, revocations, trust

trust_app = typer.Typer(no_args_is_help=True, help="Whose cubes are fetched, pinned and injected without asking.")
app.add_typer(trust_app, name="trust")

ALL = ",".join(trust.ACTIONS)


@trust_app.command("ls")
def trust_ls(as_json: bool = typer.Option(False, "--json")) -> None:
    """Show the trust policy: per action, "self", "*" (anyone) or PeerIDs."""
    policy = config.load(_node().home).trust
    if as_json:
        _print_json(policy.to_config())
        return
    for action in trust.ACTIONS:
        out.print(f"{action:<7} {' '.join(policy.entries(action)) or '(nobody)'}")


@trust_app.command("add")
def trust_add(peer: str = typer.Argument(..., help='PeerID, "self" or "*" (anyone).'),
              actions: str = typer.Option(ALL, "--for", help="Comma list of fetch, pin, inject.")) -> None:
    """Trust a peer's cubes for some actions."""
    node = _node()
    wanted = trust.parse_actions(actions)
    policy = config.load(node.home).trust.add(peer, wanted)
    config.update(node.home, "trust", policy.to_config())
    out.print(f"trusted {peer.strip()} for {', '.join(wanted)}")


@trust_app.command("rm")
def trust_rm(peer: str = typer.Argument(..., help='PeerID, "self" or "*".'),
             actions: str = typer.Option(ALL, "--for", help="Comma list of fetch, pin, inject.")) -> None:
    """Stop trusting a peer's cubes for some actions (all by default)."""
    node = _node()
    entry, wanted = trust.check_entry(peer), trust.parse_actions(actions)
    before = config.load(node.home).trust
    listed = [a for a in wanted if entry in before.entries(a)]
    if not listed:
        raise UsageError(f"{entry} is not in the trust list for {', '.join(wanted)}")
    policy = before.remove(entry, listed)
    config.update(node.home, "trust", policy.to_config())
    out.print(f"removed {entry} from {', '.join(listed)}")
    still = [a for a in listed if trust.ANYONE in policy.entries(a) and entry != trust.ANYONE]
    if still:
        sys.stderr.write(f"note: {', '.join(still)} still allow anyone (\"*\")\n")


@app.command()
def revoke(cube: str = typer.Argument(..., help="CID of one of this node's own cubes."),
           reason: Optional[str] = typer.Option(None, "--reason", help="Why, for people (at most 512 bytes).")) -> None:
    """Withdraw one of your cubes: peers stop providing, serving and injecting it."""
    cube_id = _cid(cube)
    node = _node()
    record, new = revocations.revoke(node.publisher, cube_id, reason)
    client = daemon_client(required=False)
    if client is None:
        out.print(f"revoked {cube} locally; start the daemon to publish the revocation to the swarm")
        return
    try:
        client.call("revoke", record=record)
    except DaemonError as exc:
        raise DaemonError(f"revoked {cube} locally, but publishing failed: {exc}") from None
    out.print(f"{'revoked' if new else 'already revoked'} {cube}; revocation published to the swarm")


@app.command("audit")
def audit_cmd(last: int = typer.Option(20, "--last", "-n", help="Show the newest N answers."),
              as_json: bool = typer.Option(False, "--json")) -> None:
    """Which cubes went into which answer (newest last)."""
    if last < 1:
        raise UsageError("--last must be at least 1")
    rows = audit.entries(_node().store, last=last)
    if as_json:
        _print_json([_audit_json(r) for r in rows])
        return
    table = Table(box=None, pad_edge=False)
    for column in ("TIME (UTC)", "KIND", "PROMPT", "CUBES", "ANSWER"):
        table.add_column(column, overflow="fold")
    for r in rows:
        when = dt.datetime.fromtimestamp(r["time"] / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        prompt = r["prompt"].hex()[:12] + (f" {r['preview']!r}" if "preview" in r else "")
        cubes = "\n".join(f"{c['role']} {cid.to_text(c['cid'])[:20]}… by {keys.peer_id(c['author'])[-8:]} "
                          f"({c['source']})" for c in r["cubes"]) or "-"
        table.add_row(when, r["kind"], prompt, cubes, r["answer"].hex()[:12])
    out.print(table)
    sys.stderr.write(f"{len(rows)} answer(s)\n")


def _plain(value):
    """extra as JSON: a 36-byte CID as its text, other bytes as hex."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return cid.to_text(value) if len(value) == cid.CID_LEN else value.hex()
    return value


def _audit_json(r: dict) -> dict:
    return {"time_ns": r["time"], "kind": r["kind"], "prompt_sha256": r["prompt"].hex(),
            "preview": r.get("preview"), "answer_sha256": r["answer"].hex(), "extra": _plain(r.get("extra", {})),
            "cubes": [{"cid": cid.to_text(c["cid"]), "kind": c["kind"], "author": keys.peer_id(c["author"]),
                       "role": c["role"], "source": c["source"]} for c in r["cubes"]]}
