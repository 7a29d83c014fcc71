"""A node's home folder (MEMNET_HOME): identity key, config and store.

    identity.key   Ed25519 private key, PKCS#8 PEM, mode 0600 — also the libp2p identity
    config.json    node settings
    store/         the LMDB environment
Several nodes can live on one machine, one home each.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from memnet.cube import keys, limits
from memnet.errors import HomeError
from memnet.files import write_atomic
from memnet.governance import trust
from memnet.store import Store

KEY_FILE = "identity.key"
CONFIG_FILE = "config.json"
STORE_DIR = "store"
DEFAULT_CONFIG: dict[str, Any] = {"config_version": 1, "chunk_size": limits.DEFAULT_CHUNK_SIZE,
                                  # whose cubes are fetched / pinned / injected without asking
                                  "trust": {action: list(entries) for action, entries in trust.DEFAULTS.items()}}


def resolve(explicit: str | os.PathLike | None = None) -> Path:
    """--home, else $MEMNET_HOME, else the per-user data folder."""
    chosen = explicit or os.environ.get("MEMNET_HOME") or platformdirs.user_data_dir("memnet")
    return Path(chosen).expanduser().absolute()


@dataclass
class Node:
    home: Path
    key: Ed25519PrivateKey
    config: dict[str, Any]
    _store: Store | None = field(default=None, repr=False)

    @property
    def author(self) -> bytes:
        return keys.public_bytes(self.key)

    @property
    def peer_id(self) -> str:
        return keys.peer_id(self.author)

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(str(self.home / STORE_DIR))
        return self._store


def init(home: Path) -> Node:
    """Create a node home with a fresh identity; refuse to touch an existing one."""
    if (home / KEY_FILE).exists():
        raise HomeError(f"{home} already holds a memnet node (identity {KEY_FILE} exists)")
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    if not (home / CONFIG_FILE).exists():
        write_atomic(home / CONFIG_FILE, json.dumps(DEFAULT_CONFIG, indent=2).encode() + b"\n")
    write_atomic(home / KEY_FILE, pem, mode=0o600, exclusive=True)
    node = open_node(home)
    node.store  # create the store now, so init leaves a complete home
    return node


def _load_key(path: Path) -> Ed25519PrivateKey:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise HomeError(f"no memnet node at {path.parent} (run `memnet init`)") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise HomeError(f"{path} is accessible by other users (mode {stat.S_IMODE(mode):o}); run chmod 600 on it")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError):
        raise HomeError(f"{path} is not a readable Ed25519 private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise HomeError(f"{path} is not an Ed25519 key")
    return key


def read_config(path: Path) -> dict[str, Any]:
    """config.json as written (defaults not merged in; DEFAULT_CONFIG when there is none)."""
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        return dict(DEFAULT_CONFIG)
    except (ValueError, UnicodeDecodeError):
        raise HomeError(f"{path} is not valid JSON") from None
    if not isinstance(config, dict):
        raise HomeError(f"{path} must hold a JSON object")
    return config


def _load_config(path: Path) -> dict[str, Any]:
    merged = {**DEFAULT_CONFIG, **read_config(path)}
    size = merged["chunk_size"]
    if not (isinstance(size, int) and limits.MIN_CHUNK_SIZE <= size <= limits.MAX_CHUNK_SIZE):
        raise HomeError(f"{path}: chunk_size must be an integer in "
                        f"[{limits.MIN_CHUNK_SIZE}, {limits.MAX_CHUNK_SIZE}]")
    return merged


def open_node(home: Path) -> Node:
    return Node(home, _load_key(home / KEY_FILE), _load_config(home / CONFIG_FILE))
