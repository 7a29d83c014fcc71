"""The index entries of a stored cube: field tag + value + 0x00 + cube id (kind, author, tag,
model, prefix-chain key), written with the cube and deleted with it."""

from __future__ import annotations

from memnet.cube.manifest import Manifest


def index_keys(cube_id: bytes, m: Manifest) -> list[bytes]:
    def key(tag: bytes, value: bytes) -> bytes:
        return tag + value + b"\x00" + cube_id

    keys = [key(b"k", m.kind.encode()), key(b"a", m.author)]
    keys += [key(b"t", t.encode()) for t in m.tags]
    if m.kind == "activation":
        keys.append(key(b"m", m.meta["model"]))
        keys += [key(b"p", k) for k in m.meta["prefix_keys"]]
    elif m.kind == "parameter":
        keys.append(key(b"m", m.meta["base_model"]))
    return keys
