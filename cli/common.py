"""What every command module shares: the typer app, the console, the node home and the daemon."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer
from rich.console import Console

from memnet import home as home_mod
from memnet.cube import cid
from memnet.daemon.control import ControlClient
from memnet.errors import DaemonError, FormatError, UsageError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="memnet: share signed, content-addressed LLM memory (MemCubes).")
# CIDs must never be cut short: piped output gets a wide console instead of 80 columns
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 220)
_home_option: dict[str, Optional[str]] = {"path": None}


@app.callback()
def _root(home: Optional[str] = typer.Option(None, "--home", help="Node home (default: $MEMNET_HOME "
                                             "or the per-user data folder).")) -> None:
    _home_option["path"] = home


def _node() -> home_mod.Node:
    return home_mod.open_node(home_mod.resolve(_home_option["path"]))


def _cid(text: str) -> bytes:
    try:
        return cid.from_text(text)
    except FormatError as exc:
        raise UsageError(str(exc)) from None


def _print_json(value: object) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")


def daemon_client(required: bool = True) -> ControlClient | None:
    """The running daemon of this home; None (or an error, if required) when there is none."""
    home = home_mod.resolve(_home_option["path"])
    client = ControlClient.for_home(home)
    if client is None and required:
        raise DaemonError(f"no daemon is running for {home}; start one with `memnet daemon`")
    return client


def announce(cube_ids: list[bytes]) -> None:
    """Tell a running daemon about new pins, so it provides them now rather than at its next
    re-provide round."""
    client = daemon_client(required=False)
    if client is not None and cube_ids:
        reached = client.call("announce", cubes=cube_ids)
        sys.stderr.write(f"announced {len(reached)} cube(s) to the swarm\n")
