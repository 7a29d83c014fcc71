"""`memnet` — thin command-line front end. Each command parses arguments, calls memnet/, and
prints; every user mistake becomes one `error: ...` line and a non-zero exit."""

from __future__ import annotations

import datetime as dt
import json
import importlib
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from cli.common import _cid, _home_option, _node, _print_json, announce, app, daemon_client, out
from memnet import home as home_mod
from memnet import ingest, local, render
from memnet.cube import cid, keys, limits, sealed
from memnet.errors import FormatError, MemnetError, UsageError
from memnet.scheduler import lifecycle

@app.command()
def init() -> None:
    """Create a node home: identity key (mode 0600), config and store."""
    node = home_mod.init(home_mod.resolve(_home_option["path"]))
    out.print(f"initialised memnet node {node.peer_id}\nhome: {node.home}")


@app.command("id")
def identity(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Show this node's PeerID, public key and recipient string (for `publish --to`)."""
    node = _node()
    info = {"peer_id": node.peer_id, "public_key": node.author.hex(), "home": str(node.home),
            "recipient": keys.recipient_of(node.key).text()}
    if as_json:
        _print_json(info)
    else:
        out.print(f"peer id:    {info['peer_id']}\npublic key: {info['public_key']}\nhome:       {info['home']}\n"
                  f"recipient:  {info['recipient']}")


def _fingerprint(text: str) -> bytes:
    value = text.removeprefix("sha256:")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise UsageError(f"--base-model must be a sha256 fingerprint (64 hex digits), got {text!r}")
    return raw


@app.command()
def publish(
    path: Path = typer.Argument(..., help="Notes file (.md/.txt), JSON items (.json/.jsonl) or a PEFT adapter folder."),
    kind: str = typer.Option("auto", "--kind", help="auto, plaintext or parameter."),
    name: Optional[str] = typer.Option(None, "--name", help="Versioned name; republishing bumps the version."),
    tag: list[str] = typer.Option([], "--tag", help="Tag (repeatable)."),
    description: Optional[str] = typer.Option(None, "--description"),
    license_: Optional[str] = typer.Option(None, "--license", help="License, e.g. CC-BY-4.0."),
    parent: list[str] = typer.Option([], "--parent", help="CID this cube derives from (repeatable)."),
    ttl: Optional[int] = typer.Option(None, "--ttl", help="Expire after this many seconds."),
    base_model: Optional[str] = typer.Option(None, "--base-model", help="Base model fingerprint (parameter cubes)."),
    no_pin: bool = typer.Option(False, "--no-pin", help="Do not pin (gc may remove it)."),
    to: list[str] = typer.Option([], "--to", help="Seal to this recipient (repeatable; the string "
                                 "`memnet id` prints). You can always read your own cubes."),
    private: bool = typer.Option(False, "--private", help="Seal so only this node can read it."),
) -> None:
    """Publish a file or adapter folder as a signed cube; prints its CID."""
    if private and to:
        raise UsageError("--private means only this node; to add readers use --to alone")
    if kind == "auto":
        kind = "parameter" if path.is_dir() else "plaintext"
    if kind == "plaintext":
        payload, meta = ingest.plaintext_from_file(path)
    elif kind == "parameter":
        if base_model is None:
            raise UsageError("parameter cubes need --base-model FINGERPRINT (the model the adapter was trained on)")
        payload, meta = ingest.adapter_from_dir(path, _fingerprint(base_model))
    else:
        raise UsageError(f"--kind must be auto, plaintext or parameter, not {kind!r}")
    node = _node()
    cube = node.publisher.publish(
        kind, payload, meta, name=name, ttl=ttl, pin=not no_pin,
        tags=tuple(sorted(set(tag))), description=description, license=license_,
        parents=tuple(dict.fromkeys(_cid(p) for p in parent)),
        recipients=list(to) if (to or private) else None,
    )
    m = cube.manifest
    label = f" {m.name} v{m.version}" if m.name else ""
    label += f", private to {len(m.recipients)} recipient(s)" if m.seal else ""
    sys.stderr.write(f"published {kind}{label}: {render.human_size(m.size)} in {len(m.chunks)} chunk(s)\n")
    sys.stdout.write(cid.to_text(cube.cube_id) + "\n")
    if not no_pin:
        announce([cube.cube_id])


@app.command("ls")
def list_cubes(
    kind: Optional[str] = typer.Option(None, "--kind"),
    author: Optional[str] = typer.Option(None, "--author", help="PeerID of the author."),
    name: Optional[str] = typer.Option(None, "--name"),
    tag: Optional[str] = typer.Option(None, "--tag"),
    model: Optional[str] = typer.Option(None, "--model", help="Model (or base model) fingerprint."),
    pinned: Optional[bool] = typer.Option(None, "--pinned/--unpinned", help="Only pinned / unpinned cubes."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List stored cubes, newest first."""
    try:
        author_key = keys.author_from_peer_id(author) if author else None
    except FormatError as exc:
        raise UsageError(str(exc)) from None
    if kind is not None and kind not in limits.KINDS:
        raise UsageError(f"--kind must be one of {', '.join(sorted(limits.KINDS))}, not {kind!r}")
    store = _node().store
    entries = store.entries(kind=kind, author=author_key, tag=tag, name=name, pinned=pinned,
                            model=_fingerprint(model) if model else None)
    states = lifecycle.state_names(store)
    if as_json:
        _print_json([{**render.manifest_json(e.manifest, e.cube_id), "pin": e.pin, "stats": e.stats,
                      "state": states.get(e.cube_id, "active")} for e in entries])
        return
    table = Table(box=None, pad_edge=False)
    table.add_column("CID", no_wrap=True, min_width=59)
    for column in ("KIND", "NAME", "SIZE", "CREATED", "PIN", "STATE", "TAGS"):
        table.add_column(column)
    for e in entries:
        m = e.manifest
        table.add_row(
            cid.to_text(e.cube_id), f"{m.kind} (private)" if m.seal else m.kind,
            f"{m.name} v{m.version}" if m.name else "-",
            render.human_size(m.size), dt.datetime.fromtimestamp(m.created, dt.UTC).strftime("%Y-%m-%d %H:%M"),
            e.pin["reason"] if e.pin else "-", states.get(e.cube_id, "active"), ",".join(m.tags) or "-",
        )
    out.print(table)
    sys.stderr.write(f"{len(entries)} cube(s)\n")


@app.command()
def show(cube: str = typer.Argument(..., help="Cube CID."), as_json: bool = typer.Option(False, "--json")) -> None:
    """Show a cube's manifest."""
    cube_id = _cid(cube)
    entry = _node().store.entry(cube_id)
    m = entry.manifest
    doc = render.manifest_json(m, cube_id)
    doc.update(pin=entry.pin, stats=entry.stats)
    if as_json:
        _print_json(doc)
        return
    doc["chunks"] = f"{len(m.chunks)} x {render.human_size(m.chunk_size)}"
    doc["size"] = f"{m.size} ({render.human_size(m.size)})"
    meta = doc.get("meta", {})
    if "prefix_keys" in meta:
        meta["prefix_keys"] = f"{len(meta['prefix_keys'])} keys"
    if "token_ids" in meta:  # hex of u32le each: 8 digits per token
        meta["token_ids"] = f"{len(meta['token_ids']) // 8} ids"
    if m.seal is not None:  # who can read it, not the wrapped keys
        doc["seal"] = f"private: {m.seal['alg']}, payload {render.human_size(sealed.plaintext_size(m.size))}"
        doc["recipients"] = ", ".join(doc["recipients"])
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in doc.items():
        table.add_row(key, json.dumps(value) if isinstance(value, (dict, list)) else str(value))
    out.print(table)


@app.command()
def verify(cubes: list[str] = typer.Argument(None, help="CIDs (default: every stored cube).")) -> None:
    """Re-check signature, every chunk hash and the payload of stored cubes."""
    node = _node()
    store = node.store
    ids = [_cid(c) for c in cubes] if cubes else [e.cube_id for e in store.entries()]
    failed = 0
    for cube_id in ids:
        try:
            m = store.verify(cube_id).manifest
            note = ""
            if m.seal is not None:  # its payload can be checked only where it can be opened
                readable = node.author in m.recipients
                if readable:
                    node.publisher.read_payload(cube_id)
                note = ", sealed" + ("" if readable else " (payload unreadable here, not checked)")
            out.print(f"ok    {cid.to_text(cube_id)}  {m.kind}, {len(m.chunks)} chunk(s){note}")
        except MemnetError as exc:
            failed += 1
            out.print(f"FAIL  {cid.to_text(cube_id)}  {exc}")
    if failed:
        raise MemnetError(f"{failed} of {len(ids)} cube(s) failed verification")


@app.command()
def pin(cube: str, reason: str = typer.Option("manual", "--reason")) -> None:
    """Pin a cube so gc keeps it."""
    from memnet.governance import revocations

    cube_id = _cid(cube)
    node = _node()
    revocations.refuse_revoked(node.store, cube_id)  # a withdrawn cube is never kept on purpose
    node.store.pin(cube_id, reason)
    out.print(f"pinned {cube} ({reason})")
    announce([cube_id])


@app.command()
def unpin(cube: str) -> None:
    """Unpin a cube (gc may then remove it)."""
    cube_id = _cid(cube)
    if not _node().store.unpin(cube_id):
        raise UsageError(f"{cube} is not pinned")
    out.print(f"unpinned {cube}")
    client = daemon_client(required=False)
    if client is not None:
        client.call("unannounce", cubes=[cube_id])


@app.command()
def gc() -> None:
    """Remove unpinned cubes and chunks no stored cube uses."""
    report = _node().store.gc()
    out.print(f"removed {report.cubes} cube(s), {report.chunks} chunk(s), {render.human_size(report.bytes)}")


@app.command("export")
def export_cmd(cubes: list[str] = typer.Argument(..., help="CIDs to export."),
               output: Path = typer.Option(..., "-o", "--output", help="Archive file (.car) to write.")) -> None:
    """Export cubes to one CARv1 archive (readable by IPFS tools)."""
    size = local.export(_node().store, [_cid(c) for c in cubes], output)
    out.print(f"wrote {output} ({render.human_size(size)}, {len(cubes)} cube(s))")


@app.command("import")
def import_cmd(archive: Path = typer.Argument(..., help="CARv1 archive written by memnet export."),
               no_pin: bool = typer.Option(False, "--no-pin")) -> None:
    """Import cubes from an archive: every block and signature is checked before anything is stored."""
    imported = local.import_archive(_node().store, archive, pin=not no_pin)
    for cube_id, new in imported:
        out.print(f"{'imported' if new else 'present '} {cid.to_text(cube_id)}")
    if not no_pin:
        announce([cube_id for cube_id, _ in imported])


@app.command()
def cat(cube: str, output: Optional[Path] = typer.Option(None, "-o", "--output",
        help="Folder for a parameter cube's PEFT adapter.")) -> None:
    """Print a plaintext cube's items, or write a parameter cube out as a PEFT adapter folder."""
    from memnet.cube import payloads

    node = _node()
    cube_id = _cid(cube)
    m = node.store.manifest(cube_id)
    if output is not None and m.kind != "parameter":
        raise UsageError(f"-o is for parameter cubes (written as an adapter folder); this is a {m.kind} cube")
    payload = node.publisher.read_payload(cube_id)
    node.store.record_access(cube_id)
    if m.kind == "plaintext":
        for item in payloads.decode_items(payload):
            sys.stdout.write(item["text"] + "\n\n")
    elif m.kind == "parameter":
        if output is None:
            raise UsageError("a parameter cube is written as a folder: pass -o FOLDER")
        ingest.write_adapter_dir(payload, output)
        out.print(f"wrote PEFT adapter to {output}")
    else:
        raise UsageError("activation cubes are used by generation, not printed")


# Each module registers its commands on app: daemon and network (swarm), lora import/train/ls,
# model pin/ls + kv build + generate, remember/notes/recall (memory), upkeep, trust/revoke/audit
# (governance), ask, consolidate, config show/get/set/unset.
for _commands in ("swarm", "lora", "model", "memory", "upkeep", "governance", "ask", "consolidate", "config"):
    importlib.import_module(f"cli.{_commands}")


def main(argv: list[str] | None = None) -> None:
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="memnet", standalone_mode=False)
    except typer.Abort:
        sys.stderr.write("error: interrupted\n")
        sys.exit(130)
    except typer.exceptions.TyperException as exc:  # typer's own (vendored click) usage errors
        # one line, as for every other mistake (click would print usage, a hint and the error)
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        context = getattr(exc, "ctx", None)
        where = f" (see `{context.command_path} --help`)" if context is not None else ""
        sys.stderr.write(f"error: {' '.join(message.split())}{where}\n")
        sys.exit(getattr(exc, "exit_code", 2))
    except MemnetError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(exc.exit_code)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        sys.stderr.write(f"error: {where}{exc.strerror or exc}\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
