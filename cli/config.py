"""`memnet config`: show, get, set and unset settings of config.json, each checked before the file
is (atomically) rewritten; a running daemon applies the live ones at once and names the others."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
from rich.table import Table

from cli.common import _home_option, _print_json, app, daemon_client, out
from memnet import config as config_mod
from memnet import home as home_mod
from memnet.errors import DaemonError

config_app = typer.Typer(no_args_is_help=True, help="Show and change this node's settings (config.json).")
app.add_typer(config_app, name="config")


def _home():
    home = home_mod.resolve(_home_option["path"])
    if not (home / home_mod.KEY_FILE).exists():
        home_mod.open_node(home)  # the usual one-line error for a missing home
    return home


def _value(text: str) -> Any:
    """A value as typed: JSON if it parses (numbers, true, null, lists, objects), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _shown(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


@config_app.command("show")
def show(as_json: bool = typer.Option(False, "--json", help="Every setting in force, as JSON.")) -> None:
    """Every setting with its value in force; those set in config.json are marked."""
    home = _home()
    config = config_mod.load(home)
    values = config_mod.effective(config)
    if as_json:
        _print_json(values)
        return
    raw = config_mod.read_raw(home)
    table = Table(box=None, pad_edge=False)
    for column in ("SETTING", "VALUE", "", "LIVE", "WHAT"):
        table.add_column(column, overflow="fold")
    for key, setting in config_mod.SETTINGS.items():
        table.add_row(key, _shown(values[key]), "set" if _is_set(raw, key) else "", "yes" if setting.live else "restart",
                      setting.doc)
    out.print(table)


def _is_set(raw: dict, key: str) -> bool:
    level: Any = raw
    for part in key.split("."):
        if not isinstance(level, dict) or part not in level:
            return False
        level = level[part]
    return True


@config_app.command("get")
def get(key: str = typer.Argument(..., help="Dotted setting name, e.g. daemon.limits.idle_timeout.")) -> None:
    """Print one setting's value in force (JSON)."""
    home = _home()
    value = config_mod.value_of(config_mod.load(home), config_mod.lookup(key))
    sys.stdout.write(json.dumps(value) + "\n")


def _apply(key: str, value: Any) -> None:
    home = _home()
    before, after = config_mod.update(home, key, value)
    shown = _shown(config_mod.value_of(after, config_mod.lookup(key)))
    if config_mod.changed(before, after) == []:
        out.print(f"{key} = {shown} (unchanged)")
        return
    out.print(f"{key} = {shown}")
    client = daemon_client(required=False)
    if client is None:
        return
    try:
        result = client.call("reload_config", timeout=30)
    except DaemonError as exc:
        sys.stderr.write(f"note: the running daemon did not reload its config: {exc}\n")
        return
    if result["restart"]:
        sys.stderr.write(f"the running daemon needs a restart for: {', '.join(result['restart'])}\n")
    elif result["applied"]:
        sys.stderr.write(f"the running daemon applied: {', '.join(result['applied'])}\n")


@config_app.command("set", context_settings={"ignore_unknown_options": True})
def set_(key: str = typer.Argument(..., help="Dotted setting name."),
         value: str = typer.Argument(..., help="New value: JSON (3600, true, [\"/ip4/...\"]) or plain text.")) -> None:
    """Set one setting (checked first; config.json is rewritten atomically)."""
    _apply(key, _value(value))


@config_app.command("unset")
def unset(key: str = typer.Argument(..., help="Dotted setting name.")) -> None:
    """Remove a setting from config.json: its default applies again."""
    _apply(key, config_mod.UNSET)
