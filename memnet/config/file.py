"""config.json on disk: the one module that reads or writes it. Writes are atomic (a crash never
leaves half a file) and private to the user (mode 0600); a value is checked by parsing the whole
file as it would be before anything is written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from memnet.config import parse as parse_mod
from memnet.config.sections import CONFIG_VERSION, Config
from memnet.cube import limits
from memnet.errors import ConfigError
from memnet.files import write_atomic

CONFIG_FILE = "config.json"
MAX_CONFIG_BYTES = 1 << 20


def initial() -> dict[str, Any]:
    """What `memnet init` writes: the version, the chunk size and the trust policy spelled out
    (the settings people look for first); everything else takes its default."""
    from memnet.governance.trust import TrustPolicy

    return {"config_version": CONFIG_VERSION, "chunk_size": limits.DEFAULT_CHUNK_SIZE,
            "trust": TrustPolicy().to_config()}


def read_raw(home: Path) -> dict[str, Any]:
    """config.json as written ({} when there is none)."""
    path = Path(home) / CONFIG_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(f"{path} is not valid JSON") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return raw


def load(home: Path, overrides: dict[str, Any] | None = None) -> Config:
    """The node's config; overrides ({dotted key: value}, None values skipped: the command line's
    flags) are checked like the file's own settings."""
    raw = read_raw(home)
    for key, value in (overrides or {}).items():
        if value is not None:
            raw = parse_mod.with_value(raw, key, value)
    return parse_mod.parse(raw)


def write_raw(home: Path, raw: dict[str, Any]) -> Config:
    """Check raw as a whole, then replace config.json with it; returns the new config."""
    config = parse_mod.parse(raw)
    write_atomic(Path(home) / CONFIG_FILE, json.dumps(raw, indent=2).encode() + b"\n", mode=0o600)
    return config


def update(home: Path, key: str, value: Any) -> tuple[Config, Config]:
    """Set (or, with parse.UNSET, remove) one setting: (config before, config after)."""
    raw = read_raw(home)
    before = parse_mod.parse(raw)
    return before, write_raw(home, parse_mod.with_value(raw, key, value))
