"""Signed revocations (docs/MIP.md §20): an author withdraws one of its cubes.

A revocation is a canonical msgpack map {author, created, [reason], revokes, sig}. Its signature
covers
    b"memnet/mip/v1/revocation\\0" + canonical(record without "sig")
and it is kept in the DHT under dht_key(author, cube id). It is valid for a cube only when its
author is the cube's author (check_author, where the manifest is known). Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from memnet.cube import canonical, cid, keys
from memnet.cube.manifest import _expect, _string, _uint
from memnet.errors import FormatError, LimitError, PolicyError

SIGN_DOMAIN = b"memnet/mip/v1/revocation\x00"
KEY_DOMAIN = b"memnet/revoke\x00"
NAMESPACE = "memnet-revoke"
REQUIRED = ("author", "created", "revokes", "sig")
OPTIONAL = ("reason",)

MAX_RECORD = 1024   # bytes of one encoded record
MAX_REASON = 512    # bytes of UTF-8


@dataclass(frozen=True)
class Revocation:
    revokes: bytes
    author: bytes
    created: int
    sig: bytes
    reason: str | None = None

    def unsigned_map(self) -> dict[str, Any]:
        m: dict[str, Any] = {"revokes": self.revokes, "author": self.author, "created": self.created}
        if self.reason is not None:
            m["reason"] = self.reason
        return m

    def encode(self) -> bytes:
        """Canonical bytes of the signed record (what the DHT and the store keep)."""
        return canonical.encode({**self.unsigned_map(), "sig": self.sig})

    @property
    def key(self) -> str:
        return dht_key(self.author, self.revokes)


def dht_key(author: bytes, cube_id: bytes) -> str:
    """"/memnet-revoke/" + hex(sha256(domain + author + cube id)).

    The author is part of the key: a record signed by anyone else cannot sit under it (the
    validator checks the key), so no forger can crowd the author's record out of the DHT."""
    digest = hashlib.sha256(KEY_DOMAIN + author + cube_id).hexdigest()
    return f"/{NAMESPACE}/{digest}"


def _check_fields(m: Any, signed: bool) -> None:
    _expect(isinstance(m, dict), "revocation must be a map")
    required = set(REQUIRED) if signed else set(REQUIRED) - {"sig"}
    unknown = sorted(set(m) - required - set(OPTIONAL))
    _expect(not unknown, f"unknown revocation field(s): {', '.join(unknown)}")
    missing = sorted(required - set(m))
    _expect(not missing, f"revocation lacks field(s): {', '.join(missing)}")
    _expect(isinstance(m["author"], bytes) and len(m["author"]) == keys.PUBLIC_KEY_LEN,
            "author must be a 32-byte Ed25519 public key")
    _expect(isinstance(m["revokes"], bytes), "revokes must be a binary CID")
    cid.check_binary(m["revokes"])
    _uint(m["created"], "created")
    if "reason" in m:
        _string(m["reason"], "reason", MAX_REASON)
        # shown to people in one-line messages: no newlines, escapes or other control characters
        _expect(not any(unicodedata.category(ch) == "Cc" for ch in m["reason"]),
                "reason must not contain control characters")
    if signed:
        _expect(isinstance(m["sig"], bytes) and len(m["sig"]) == keys.SIGNATURE_LEN,
                "sig must be a 64-byte Ed25519 signature")


def sign(key: Ed25519PrivateKey, cube_id: bytes, created: int, reason: str | None = None) -> bytes:
    """Encoded revocation of cube_id by key's author. Whether key wrote the cube is the caller's
    check (only then is the record worth anything)."""
    unsigned: dict[str, Any] = {"author": keys.public_bytes(key), "revokes": cube_id, "created": created}
    if reason is not None:
        unsigned["reason"] = reason
    _check_fields(unsigned, signed=False)
    sig = keys.sign(key, SIGN_DOMAIN, canonical.encode(unsigned))
    data = canonical.encode({**unsigned, "sig": sig})
    if len(data) > MAX_RECORD:  # cannot happen within MAX_REASON; kept as a guard
        raise LimitError(f"revocation is {len(data)} bytes, the limit is {MAX_RECORD}")
    return data


def decode(data: bytes, *, key: str | None = None) -> Revocation:
    """Parse and authenticate a revocation from anywhere untrusted.

    Order: size cap, canonical decoding, exact fields and types, signature, then — if key is
    given — that the record belongs under that DHT key (PolicyError)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FormatError("revocation must be bytes")
    data = bytes(data)
    if len(data) > MAX_RECORD:
        raise LimitError(f"revocation is {len(data)} bytes, the limit is {MAX_RECORD}")
    m = canonical.decode(data, MAX_RECORD)
    _check_fields(m, signed=True)
    unsigned = {k: v for k, v in m.items() if k != "sig"}
    keys.verify(m["author"], SIGN_DOMAIN, canonical.encode(unsigned), m["sig"])
    record = Revocation(revokes=m["revokes"], author=m["author"], created=m["created"], sig=m["sig"],
                        reason=m.get("reason"))
    if key is not None and key != record.key:
        raise PolicyError("revocation is stored under a key that is not its (author, cube)'s")
    return record


def check_author(record: Revocation, cube_id: bytes, cube_author: bytes) -> None:
    """PolicyError unless record withdraws cube_id and was signed by that cube's author."""
    if record.revokes != cube_id:
        raise PolicyError(f"the revocation is for {cid.to_text(record.revokes)}, not {cid.to_text(cube_id)}")
    if record.author != cube_author:
        raise PolicyError(f"revocation of {cid.to_text(cube_id)} is signed by {keys.peer_id(record.author)}, "
                          f"not by the cube's author {keys.peer_id(cube_author)}")


def best(records: list[Revocation]) -> int:
    """Index of the record a node keeps for one key: the earliest, then the smaller bytes. Every
    valid one withdraws the same cube; the rule only makes every node keep the same bytes."""
    if not records:
        raise ValueError("no revocations to choose from")
    ranked = [(r.created, r.encode()) for r in records]
    return min(range(len(records)), key=ranked.__getitem__)
