"""A node's home folder (MEMNET_HOME) and the Node that the top layers (cli, api, daemon) build
from it. Everything in the home is private to the user (folder 0700, files 0600).

    identity.key   Ed25519 private key, PKCS#8 PEM — also the libp2p identity
    config.json    node settings (memnet/config)
    store/         the LMDB environment
    models.json    the pinned models (memnet/model/pinned.Registry)
    perf.json      measured costs (memnet/model/perf.PerfBook)
Several nodes can live on one machine, one home each.

Node assembles the parts; the layers below take the parts they use (a store, a publisher, a
gate, a config section, a loaded model), never a Node.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from memnet import config as config_mod
from memnet.config import Config
from memnet.cube import keys
from memnet.errors import HomeError
from memnet.files import write_atomic
from memnet.local import Publisher
from memnet.store import Store

if TYPE_CHECKING:
    from memnet.governance.gate import Gate
    from memnet.model.perf import PerfBook
    from memnet.model.pinned import Registry

KEY_FILE = "identity.key"
STORE_DIR = "store"
MODELS_LIST = "models.json"


def resolve(explicit: str | os.PathLike | None = None) -> Path:
    """--home, else $MEMNET_HOME, else the per-user data folder."""
    chosen = explicit or os.environ.get("MEMNET_HOME") or platformdirs.user_data_dir("memnet")
    return Path(chosen).expanduser().absolute()


def models_dir(home: Path, config: Config) -> Path:
    """$MEMNET_MODELS, else config "models_dir", else HOME/models."""
    chosen = os.environ.get("MEMNET_MODELS") or config.models_dir or home / "models"
    return Path(chosen).expanduser().absolute()


@dataclass
class Node:
    home: Path
    key: Ed25519PrivateKey
    config: Config
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

    @cached_property
    def publisher(self) -> Publisher:
        return Publisher(self.store, self.key, self.config.chunk_size)

    def gate(self, fresh: bool = False) -> Gate:
        """Whether this node may fetch, pin or inject a cube; fresh re-reads config.json (a
        long-running daemon sees `memnet trust add` without a restart)."""
        from memnet.governance.gate import Gate

        policy = config_mod.load(self.home).trust if fresh else self.config.trust
        return Gate(self.store, policy, self.author)

    @property
    def perf(self) -> PerfBook:
        from memnet.model.perf import PerfBook

        return PerfBook(self.home)

    @property
    def models(self) -> Registry:
        from memnet.model.pinned import Registry

        return Registry(self.home / MODELS_LIST, models_dir(self.home, self.config))

    def reload_config(self) -> Config:
        self.config = config_mod.load(self.home)
        self.__dict__.pop("publisher", None)
        return self.config


def _private_folder(home: Path) -> None:
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(home, 0o700)  # an existing folder too: the key and the control token live here


def init(home: Path) -> Node:
    """Create a node home with a fresh identity; refuse to touch an existing one."""
    if (home / KEY_FILE).exists():
        raise HomeError(f"{home} already holds a memnet node (identity {KEY_FILE} exists)")
    _private_folder(home)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    if not (home / config_mod.CONFIG_FILE).exists():
        config_mod.write_raw(home, config_mod.file.initial())
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


def open_node(home: Path) -> Node:
    return Node(home, _load_key(home / KEY_FILE), config_mod.load(home))
