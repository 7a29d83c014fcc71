"""The audit log: which cubes went into which answer.

One record per answer in the store's records table "audit": key = big-endian time_ns ‖ 4 random
bytes (so keys sort by time and two answers in the same nanosecond do not collide), value =
canonical msgpack
    {"time": ns, "kind": str, "prompt": sha256, ["preview": str], "cubes": [{"cid", "kind",
     "author", "role", "source"}], "answer": sha256, ["extra": map]}
Prompts and answers are kept as digests (a text's digest is sha256 of its UTF-8, so a user can
check one with sha256sum; token ids hash as u32le), plus the prompt's first PREVIEW characters
when the caller has its text. `ask` entries also keep the question itself in extra["question"]
(at most 1000 characters): consolidation trains a memory set's adapter on the questions asked
of it (scheduler/consolidate.py). The log never leaves the node.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
from collections.abc import Sequence
from typing import Any

from memnet.cube import canonical, cid, keys
from memnet.errors import UsageError
from memnet.store import Store

TABLE = "audit"
PREVIEW = 60
ROLES = ("plaintext", "kv", "lora")
MAX_RECORD = 64 * 1024
MAX_CUBES = 256


def digest(value: str | bytes | Sequence[int]) -> bytes:
    """A 32-byte digest as given, sha256 of a text's UTF-8, or sha256 of token ids as u32le."""
    if isinstance(value, (bytes, bytearray)):
        if len(value) != 32:
            raise UsageError(f"a digest must be 32 bytes, not {len(value)}")
        return bytes(value)
    if isinstance(value, str):
        return hashlib.sha256(value.encode("utf-8")).digest()
    return hashlib.sha256(struct.pack(f"<{len(value)}I", *value)).digest()


def _clean(value: Any) -> Any:
    """extra as canonical msgpack takes it: floats as short strings, None left out."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value if v is not None]
    return value


def _cube(entry: dict[str, Any]) -> dict[str, Any]:
    if entry.get("role") not in ROLES:
        raise UsageError(f"audit: a cube's role must be one of {', '.join(ROLES)}")
    cube = {"cid": cid.check_binary(bytes(entry["cid"])), "kind": str(entry["kind"]),
            "author": bytes(entry["author"]), "role": entry["role"], "source": str(entry.get("source", "local"))}
    if len(cube["author"]) != keys.PUBLIC_KEY_LEN:
        raise UsageError("audit: a cube's author must be a 32-byte public key")
    return cube


def record_answer(store: Store, *, kind: str, prompt_ids_or_text_digest: str | bytes | Sequence[int],
                  cubes: list[dict[str, Any]], answer_digest: str | bytes, extra: dict[str, Any] | None = None,
                  prompt_text: str | None = None) -> None:
    """Append one answer to the log. The prompt is a text, token ids or a ready 32-byte digest;
    its first characters are kept when it is a text (or prompt_text is given). cubes: dicts
    with cid, kind, author, role (plaintext | kv | lora) and source (local | peer | ...)."""
    now = time.time_ns()
    if prompt_text is None and isinstance(prompt_ids_or_text_digest, str):
        prompt_text = prompt_ids_or_text_digest
    record: dict[str, Any] = {"time": now, "kind": kind, "prompt": digest(prompt_ids_or_text_digest),
                              "cubes": [_cube(c) for c in cubes[:MAX_CUBES]], "answer": digest(answer_digest)}
    if prompt_text:
        record["preview"] = prompt_text[:PREVIEW]
    if extra:
        record["extra"] = _clean(extra)
    value = canonical.encode(record)
    if len(value) > MAX_RECORD:
        record.pop("extra", None)
        value = canonical.encode(record)
    store.put_records(TABLE, [(struct.pack(">Q", now) + os.urandom(4), value)])


def entries(store: Store, last: int | None = None) -> list[dict[str, Any]]:
    """The log, oldest first; only the newest `last` entries if given."""
    rows = store.records(TABLE)
    if last is not None:
        rows = rows[-last:] if last > 0 else []
    return [canonical.decode(value, MAX_RECORD) for _, value in rows]


def prune(store: Store, keep: int) -> int:
    """Delete all but the newest `keep` entries; returns how many were deleted."""
    rows = store.records(TABLE)
    old = [key for key, _ in rows[:max(0, len(rows) - keep)]]
    return store.delete_records(TABLE, old) if old else 0


def record_generation(store: Store, *, ids: Sequence[int], result: Any, prompt_text: str | None = None,
                      adapters: Sequence[tuple[bytes, int]] = (), kind: str = "generate",
                      extra: dict[str, Any] | None = None, memories: Sequence[bytes] = ()) -> None:
    """Log a memnet.model.generate.Generation: the plaintext cubes recalled into its prompt, its
    KV cube (if one was reused) and the LoRA cubes applied (adapters: (cube id, weight in
    thousandths), as lora.activate records them)."""
    cubes = []
    for cube_id in memories:
        m = store.manifest(cube_id)
        cubes.append({"cid": cube_id, "kind": m.kind, "author": m.author, "role": "plaintext", "source": "local"})
    if result.cube_id is not None:
        m = store.manifest(result.cube_id)
        cubes.append({"cid": result.cube_id, "kind": m.kind, "author": m.author, "role": "kv",
                      "source": result.source})
    for cube_id, milli in adapters:
        m = store.manifest(cube_id)
        cubes.append({"cid": cube_id, "kind": m.kind, "author": m.author, "role": "lora", "source": "local"})
    extra = {"prompt_tokens": result.prompt_tokens, "reused": result.reused, "new_tokens": len(result.new_ids),
             "decision": result.decision[:300] or None,
             "weights": [m for _, m in adapters] or None, **(extra or {})}
    record_answer(store, kind=kind, prompt_ids_or_text_digest=list(ids), cubes=cubes, answer_digest=result.text,
                  extra=extra, prompt_text=prompt_text)
