"""Signed name records (docs/MIP.md §16): an author points a name at a cube id, like IPNS.

A record is a canonical msgpack map {author, cube, expires, name, seq, sig}. Its signature covers
    b"memnet/mip/v1/name\\0" + canonical(record without "sig")
and it is stored in the DHT under dht_key(author, name). Pure: no I/O, no clock unless asked.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from memnet.cube import canonical, cid, keys, limits
from memnet.cube.manifest import NAME_RE, _expect, _string, _uint
from memnet.errors import FormatError, LimitError, PolicyError

SIGN_DOMAIN = b"memnet/mip/v1/name\x00"
KEY_DOMAIN = b"memnet/name\x00"
NAMESPACE = "memnet-name"
FIELDS = ("author", "cube", "expires", "name", "seq", "sig")

MAX_RECORD = 1024                     # bytes of one encoded record
MAX_SEQ = 2**63 - 1
DEFAULT_TTL = 24 * 3600               # what a publisher uses unless told otherwise
MAX_TTL = 30 * 24 * 3600              # a record expiring later than now + MAX_TTL is refused


@dataclass(frozen=True)
class NameRecord:
    author: bytes
    name: str
    cube: bytes
    seq: int
    expires: int
    sig: bytes

    def unsigned_map(self) -> dict[str, Any]:
        return {"author": self.author, "name": self.name, "cube": self.cube, "seq": self.seq,
                "expires": self.expires}

    def encode(self) -> bytes:
        """Canonical bytes of the signed record (what the DHT stores)."""
        return canonical.encode({**self.unsigned_map(), "sig": self.sig})

    @property
    def key(self) -> str:
        return dht_key(self.author, self.name)


def dht_key(author: bytes, name: str) -> str:
    """The DHT key of (author, name): "/memnet-name/" + hex(sha256(domain + author + name))."""
    digest = hashlib.sha256(KEY_DOMAIN + author + name.encode("utf-8")).hexdigest()
    return f"/{NAMESPACE}/{digest}"


def signing_bytes(unsigned: dict[str, Any]) -> bytes:
    return SIGN_DOMAIN + canonical.encode(unsigned)


def _check_fields(m: Any, signed: bool) -> None:
    """Exact field set and every field's type and range; FormatError (or a subclass) if not."""
    _expect(isinstance(m, dict), "name record must be a map")
    wanted = set(FIELDS) if signed else set(FIELDS) - {"sig"}
    unknown = sorted(set(m) - wanted)
    _expect(not unknown, f"unknown name record field(s): {', '.join(unknown)}")
    missing = sorted(wanted - set(m))
    _expect(not missing, f"name record lacks field(s): {', '.join(missing)}")
    _expect(isinstance(m["author"], bytes) and len(m["author"]) == keys.PUBLIC_KEY_LEN,
            "author must be a 32-byte Ed25519 public key")
    _string(m["name"], "name", limits.MAX_NAME, NAME_RE)
    _expect(isinstance(m["cube"], bytes), "cube must be a binary CID")
    cid.check_binary(m["cube"])
    _uint(m["seq"], "seq", 0, MAX_SEQ)
    _uint(m["expires"], "expires")
    if signed:
        _expect(isinstance(m["sig"], bytes) and len(m["sig"]) == keys.SIGNATURE_LEN,
                "sig must be a 64-byte Ed25519 signature")


def check_expiry(expires: int, now: int) -> None:
    """PolicyError unless now < expires <= now + MAX_TTL."""
    if expires <= now:
        raise PolicyError(f"name record expired at {expires} (now {now})")
    if expires > now + MAX_TTL:
        raise PolicyError(f"name record expires at {expires}, more than {MAX_TTL} s after now ({now})")


def sign(key: Ed25519PrivateKey, name: str, cube: bytes, seq: int, expires: int) -> bytes:
    """Encoded record pointing key's (author, name) at cube. Times are not checked here."""
    unsigned = {"author": keys.public_bytes(key), "name": name, "cube": cube, "seq": seq,
                "expires": expires}
    _check_fields(unsigned, signed=False)
    sig = keys.sign(key, SIGN_DOMAIN, canonical.encode(unsigned))
    data = canonical.encode({**unsigned, "sig": sig})
    if len(data) > MAX_RECORD:  # cannot happen with MIP v1 limits; kept as a guard
        raise LimitError(f"name record is {len(data)} bytes, the limit is {MAX_RECORD}")
    return data


def decode(data: bytes, *, key: str | None = None, now: int | None = None) -> NameRecord:
    """Parse and authenticate a name record from anywhere untrusted.

    Order: size cap, canonical decoding, exact fields and types, signature, expiry against now
    (the wall clock if None), then — if key is given — that the record belongs under key.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FormatError("name record must be bytes")
    data = bytes(data)
    if len(data) > MAX_RECORD:
        raise LimitError(f"name record is {len(data)} bytes, the limit is {MAX_RECORD}")
    m = canonical.decode(data, MAX_RECORD)
    _check_fields(m, signed=True)
    unsigned = {k: v for k, v in m.items() if k != "sig"}
    keys.verify(m["author"], SIGN_DOMAIN, canonical.encode(unsigned), m["sig"])
    check_expiry(m["expires"], int(time.time()) if now is None else now)
    record = NameRecord(author=m["author"], name=m["name"], cube=m["cube"], seq=m["seq"],
                        expires=m["expires"], sig=m["sig"])
    if key is not None and key != record.key:
        raise PolicyError("name record is stored under a key that is not its (author, name)'s")
    return record


def best(records: list[NameRecord]) -> int:
    """Index of the record to keep: highest seq, then later expires, then greater encoded bytes.

    Every node applying this to the same set picks the same record, whatever the order.
    """
    if not records:
        raise ValueError("no name records to choose from")
    ranked = [(r.seq, r.expires, r.encode()) for r in records]
    return max(range(len(records)), key=ranked.__getitem__)


def parse_path(text: str) -> tuple[bytes, str]:
    """"PEERID/NAME" -> (author, name); FormatError for anything else."""
    _expect(isinstance(text, str), "name path must be a string")
    peer, sep, name = text.strip().partition("/")
    _expect(bool(sep) and bool(peer), f"not a PEERID/NAME path: {text[:200]!r}")
    author = keys.author_from_peer_id(peer)
    return author, _string(name, "name", limits.MAX_NAME, NAME_RE)
