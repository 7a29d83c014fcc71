"""The trust policy in a node's config.json: read fresh (a daemon sees `memnet trust add` without
a restart) and written atomically, keeping every other setting as it is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from memnet.files import write_atomic
from memnet.governance.trust import TrustPolicy
from memnet.home import CONFIG_FILE, read_config


def _raw_config(home: Path) -> dict[str, Any]:
    return read_config(home / CONFIG_FILE)


def load_policy(home: Path) -> TrustPolicy:
    return TrustPolicy.from_config(_raw_config(home))


def save_policy(home: Path, policy: TrustPolicy) -> None:
    config = _raw_config(home)
    config["trust"] = policy.to_config()
    write_atomic(home / CONFIG_FILE, json.dumps(config, indent=2).encode() + b"\n")
