"""Plaintext memory commands: remember a text, import a notes file, recall by meaning.

Input is checked before the embedding model loads (a few seconds), so mistakes fail fast."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table
from rich.text import Text

from cli.common import _node, _print_json, announce, app, out
from memnet.cube import cid, keys
from memnet.errors import UsageError

notes_app = typer.Typer(no_args_is_help=True, help="Notes files (Markdown, text, JSON lines) as plaintext memory.")
app.add_typer(notes_app, name="notes")

MAX_STDIN = 64 * 1024 * 1024
SNIPPET = 100


def _sealing(to: list[str], private: bool) -> dict[str, Any]:
    if private and to:
        raise UsageError("--private means only this node; to add readers use --to alone")
    return {"recipients": list(to)} if (to or private) else {}


def _published(cube: Any, as_json: bool, what: str) -> None:
    m = cube.manifest
    if as_json:
        _print_json({"cube_id": cid.to_text(cube.cube_id), "items": m.meta["items"], "name": m.name,
                     "version": m.version, "private": m.seal is not None})
    else:
        label = f" as {m.name} v{m.version}" if m.name else ""
        sys.stderr.write(f"{what} {m.meta['items']} item(s){label}\n")
        sys.stdout.write(cid.to_text(cube.cube_id) + "\n")
    announce([cube.cube_id])


_TAG = typer.Option([], "--tag", help="Tag (repeatable).")
_NAME = typer.Option(None, "--name", help="Versioned name; remembering under it again bumps the version.")
_TO = typer.Option([], "--to", help="Seal to this recipient (repeatable; the string `memnet id` prints).")
_PRIVATE = typer.Option(False, "--private", help="Seal so only this node can read it.")
_JSON = typer.Option(False, "--json", help="Machine-readable output.")


@app.command()
def remember(text: str = typer.Argument(..., help="What to remember; - reads standard input."),
             tag: list[str] = _TAG, name: Optional[str] = _NAME, to: list[str] = _TO,
             private: bool = _PRIVATE, as_json: bool = _JSON) -> None:
    """Remember a text: publish it as a plaintext cube with its embedding; prints the CID."""
    if text == "-":
        text = sys.stdin.read(MAX_STDIN + 1)
        if len(text) > MAX_STDIN:
            raise UsageError(f"standard input is longer than {MAX_STDIN // 2**20} MiB")
    if not text.strip():
        raise UsageError("nothing to remember: the text is empty")
    sealing = _sealing(to, private)
    node = _node()
    from memnet.memory import index

    _published(index.remember(node.publisher, text, tags=tag, name=name, **sealing), as_json, "remembered")


@notes_app.command("import")
def notes_import(path: Path = typer.Argument(..., help="Markdown / text file (one item per paragraph, "
                                             "headings as sections) or .jsonl ({\"text\", \"meta\"} per line)."),
                 tag: list[str] = _TAG, name: Optional[str] = _NAME, to: list[str] = _TO,
                 private: bool = _PRIVATE, as_json: bool = _JSON) -> None:
    """Import a notes file as one plaintext cube with embeddings; prints the CID."""
    sealing = _sealing(to, private)
    node = _node()
    from memnet.memory import index

    _published(index.import_notes(node.publisher, path, tags=tag, name=name, **sealing), as_json, "imported")


@app.command()
def recall(query: str = typer.Argument(..., help="What to look for, in your own words."),
           k: int = typer.Option(5, "-k", "--top", help="How many items to return."),
           as_json: bool = _JSON) -> None:
    """Find the stored plaintext items closest in meaning to a query."""
    if not query.strip():
        raise UsageError("the query is empty")
    if k < 1:
        raise UsageError(f"-k must be at least 1, not {k}")
    node = _node()
    from memnet.memory import index

    from memnet.scheduler.ask import memory_filter

    # what ask would put into a prompt: trusted authors, not revoked, not expired or superseded
    hits = index.recall(node.publisher, query, k, accept=memory_filter(node.store, node.gate()))
    for cube_id in dict.fromkeys(h.cube_id for h in hits):  # use counts drive LRU/LFU eviction
        node.store.record_access(cube_id)
    if as_json:
        _print_json([{"rank": rank, "score": round(h.score, 4), "text": h.text, "meta": h.meta,
                      "cube_id": cid.to_text(h.cube_id), "item": h.item, "created": h.created,
                      "author": keys.peer_id(h.author)} for rank, h in enumerate(hits, 1)])
        return
    if not hits:
        sys.stderr.write("no plaintext memory to recall from (memnet remember / notes import)\n")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("#", "SCORE", "TEXT", "CUBE", "ITEM"):
        table.add_column(column, no_wrap=column != "TEXT")
    for rank, h in enumerate(hits, 1):
        snippet = " ".join(h.text.split())
        snippet = snippet if len(snippet) <= SNIPPET else snippet[:SNIPPET - 1] + "…"
        table.add_row(str(rank), f"{h.score:.3f}", Text(snippet), "…" + cid.to_text(h.cube_id)[-10:], str(h.item))
    out.print(table)
