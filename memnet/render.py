"""Manifests as JSON-friendly dicts: CIDs in base32, keys as PeerIDs, fingerprints in hex."""

from __future__ import annotations

from typing import Any

from memnet.cube import cid, keys
from memnet.cube.manifest import Manifest

_CID_FIELDS = {"supersedes"}
_CID_LISTS = {"chunks", "parents"}


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def manifest_json(m: Manifest, cube_id: bytes | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if cube_id is not None:
        out["cid"] = cid.to_text(cube_id)
    for key, value in m.unsigned_map().items():
        if key in _CID_FIELDS:
            out[key] = cid.to_text(value)
        elif key in _CID_LISTS:
            out[key] = [cid.to_text(v) for v in value]
        elif key == "author":
            out["author"] = keys.peer_id(value)
            out["author_key"] = value.hex()
        elif key == "seal":  # readers are shown by PeerID, like the author
            out["seal"] = _plain(value)
            out["recipients"] = [keys.peer_id(to) for to in m.recipients]
        else:
            out[key] = _plain(value)
    out["sig"] = m.sig.hex() if m.sig else None
    out["visibility"] = "private" if m.seal is not None else "public"
    return out


def human_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
