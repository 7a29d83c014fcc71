"""The MemCube manifest (MIP v1): fields, strict validation, signing and identity.

The manifest is a canonical msgpack map. Its signature covers
    b"memnet/mip/v1/manifest\\0" + canonical(manifest without "sig")
and the cube id is the CID of canonical(manifest with "sig"). Optional fields are omitted when
absent (an empty list or string in their place is rejected), so each cube has one encoding.
A sealed cube (docs/MIP.md section 19) has a `seal` map, and its chunks hold the ciphertext.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from memnet.cube import canonical, cid, keys, limits, sealed
from memnet.cube.meta import validate_meta
from memnet.errors import FormatError, LimitError, SignatureError

SIGN_DOMAIN = b"memnet/mip/v1/manifest\x00"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*\Z")
TAG_RE = re.compile(r"^[A-Za-z0-9._:+-]+\Z")

REQUIRED = ("mip", "kind", "author", "created", "size", "chunk_size", "chunks", "meta")
OPTIONAL = ("name", "version", "supersedes", "parents", "expires", "license", "tags", "description",
            "seal")


@dataclass(frozen=True)
class Manifest:
    kind: str
    author: bytes
    created: int
    size: int
    chunk_size: int
    chunks: tuple[bytes, ...]
    meta: dict[str, Any]
    name: str | None = None
    version: int | None = None
    supersedes: bytes | None = None
    parents: tuple[bytes, ...] = ()
    expires: int | None = None
    license: str | None = None
    tags: tuple[str, ...] = ()
    description: str | None = None
    seal: dict[str, Any] | None = None
    sig: bytes | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        # one in-memory form per manifest, whatever sequences the caller passed (tags are signed
        # sorted), so a built manifest equals the one decoded from its own bytes
        object.__setattr__(self, "chunks", tuple(self.chunks))
        object.__setattr__(self, "parents", tuple(self.parents))
        object.__setattr__(self, "tags", tuple(sorted(self.tags)))

    def unsigned_map(self) -> dict[str, Any]:
        m: dict[str, Any] = {
            "mip": limits.MIP_VERSION,
            "kind": self.kind,
            "author": self.author,
            "created": self.created,
            "size": self.size,
            "chunk_size": self.chunk_size,
            "chunks": list(self.chunks),
            "meta": self.meta,
        }
        optional = {
            "name": self.name,
            "version": self.version,
            "supersedes": self.supersedes,
            "parents": list(self.parents) or None,
            "expires": self.expires,
            "license": self.license,
            "tags": sorted(self.tags) or None,
            "description": self.description,
            "seal": self.seal,
        }
        m.update({k: v for k, v in optional.items() if v is not None})
        return m

    def signing_bytes(self) -> bytes:
        return SIGN_DOMAIN + canonical.encode(self.unsigned_map())

    def sign(self, key: Ed25519PrivateKey) -> "Manifest":
        if keys.public_bytes(key) != self.author:
            raise SignatureError("signing key is not the manifest's author key")
        validate_map(self.unsigned_map(), signed=False)
        return replace(self, sig=key.sign(self.signing_bytes()))

    def encode(self) -> bytes:
        """Canonical bytes of the signed manifest (what the cube id hashes)."""
        if self.sig is None:
            raise FormatError("manifest is not signed")
        return canonical.encode({**self.unsigned_map(), "sig": self.sig})

    @property
    def cube_id(self) -> bytes:
        return cid.cid_of(self.encode())

    @property
    def recipients(self) -> list[bytes]:
        """Author keys that can open a sealed cube; empty for a public one."""
        return sealed.recipients_of(self.seal) if self.seal is not None else []

    def chunk_length(self, index: int) -> int:
        return min(self.chunk_size, self.size - index * self.chunk_size)


def _expect(cond: bool, message: str) -> None:
    if not cond:
        raise FormatError(message)


def _string(value: Any, name: str, max_len: int, pattern: re.Pattern | None = None) -> str:
    _expect(isinstance(value, str), f"{name} must be a string")
    _expect(0 < len(value), f"{name} must not be empty")
    if len(value.encode("utf-8")) > max_len:
        raise LimitError(f"{name} is longer than {max_len} bytes")
    if pattern is not None:
        _expect(bool(pattern.match(value)), f"{name} {value!r} has characters MIP v1 does not allow")
    return value


def _uint(value: Any, name: str, low: int = 0, high: int = 2**63 - 1) -> int:
    _expect(isinstance(value, int) and not isinstance(value, bool), f"{name} must be an integer")
    _expect(value >= low, f"{name} must be at least {low}")
    if value > high:
        raise LimitError(f"{name} {value} exceeds the limit {high}")
    return value


def _cid_list(value: Any, name: str, max_len: int) -> list[bytes]:
    _expect(isinstance(value, list), f"{name} must be a list")
    if len(value) > max_len:
        raise LimitError(f"{name} has {len(value)} entries, the limit is {max_len}")
    for item in value:
        _expect(isinstance(item, bytes), f"{name} entries must be binary CIDs")
        cid.check_binary(item)
    return value


def validate_map(m: Any, signed: bool = True) -> None:
    """Check every field of a decoded manifest map against MIP v1; raise FormatError if not."""
    _expect(isinstance(m, dict), "manifest must be a map")
    version = m.get("mip")
    _expect(isinstance(version, int) and not isinstance(version, bool), "manifest has no mip version")
    if version != limits.MIP_VERSION:
        raise FormatError(f"unsupported MIP version {version} (this node speaks MIP {limits.MIP_VERSION})")
    allowed = set(REQUIRED) | set(OPTIONAL) | ({"sig"} if signed else set())
    unknown = sorted(set(m) - allowed)
    _expect(not unknown, f"unknown manifest field(s): {', '.join(unknown)}")
    missing = [k for k in REQUIRED + (("sig",) if signed else ()) if k not in m]
    _expect(not missing, f"manifest lacks field(s): {', '.join(missing)}")
    _expect(m["kind"] in limits.KINDS, f"unknown cube kind {m['kind']!r}")
    _expect(isinstance(m["author"], bytes) and len(m["author"]) == keys.PUBLIC_KEY_LEN,
            "author must be a 32-byte Ed25519 public key")
    created = _uint(m["created"], "created")
    chunk_size = _uint(m["chunk_size"], "chunk_size", limits.MIN_CHUNK_SIZE, limits.MAX_CHUNK_SIZE)
    size = _uint(m["size"], "size", 0, limits.MAX_CHUNKS * chunk_size)
    payload_size = size
    if "seal" in m:  # size counts the ciphertext; the payload limits apply to what it opens to
        sealed.validate_seal(m["seal"], m["kind"], size)
        payload_size = sealed.plaintext_size(size)
    if m["kind"] == "plaintext" and payload_size > limits.MAX_PLAINTEXT_PAYLOAD:
        raise LimitError(f"plaintext payload of {payload_size} bytes exceeds {limits.MAX_PLAINTEXT_PAYLOAD}")
    chunks = _cid_list(m["chunks"], "chunks", limits.MAX_CHUNKS)
    _expect(len(chunks) == -(-size // chunk_size),
            f"manifest lists {len(chunks)} chunks but size {size} needs {-(-size // chunk_size)}")
    if signed:
        _expect(isinstance(m["sig"], bytes) and len(m["sig"]) == keys.SIGNATURE_LEN,
                "sig must be a 64-byte Ed25519 signature")
    if "name" in m or "version" in m:
        _expect("name" in m and "version" in m, "name and version go together")
        _string(m["name"], "name", limits.MAX_NAME, NAME_RE)
        _uint(m["version"], "version", 1)
    if "supersedes" in m:
        _expect("name" in m and m["version"] > 1, "supersedes needs a name with version > 1")
        _cid_list([m["supersedes"]], "supersedes", 1)
    if "parents" in m:
        parents = _cid_list(m["parents"], "parents", limits.MAX_PARENTS)
        _expect(len(parents) > 0, "parents must be omitted rather than empty")
        _expect(len(set(parents)) == len(parents), "parents must not repeat")
    if "expires" in m:
        _expect(_uint(m["expires"], "expires") > created, "expires must be after created")
    if "license" in m:
        _string(m["license"], "license", limits.MAX_LICENSE)
    if "description" in m:
        _string(m["description"], "description", limits.MAX_DESCRIPTION)
    if "tags" in m:
        tags = m["tags"]
        _expect(isinstance(tags, list) and tags, "tags must be a non-empty list (or omitted)")
        if len(tags) > limits.MAX_TAGS:
            raise LimitError(f"{len(tags)} tags, the limit is {limits.MAX_TAGS}")
        for tag in tags:
            _string(tag, "tag", limits.MAX_TAG, TAG_RE)
        _expect(tags == sorted(set(tags)), "tags must be sorted and unique")
    validate_meta(m["kind"], m["meta"])


def from_map(m: dict[str, Any]) -> Manifest:
    validate_map(m, signed=True)
    return Manifest(
        kind=m["kind"],
        author=m["author"],
        created=m["created"],
        size=m["size"],
        chunk_size=m["chunk_size"],
        chunks=tuple(m["chunks"]),
        meta=m["meta"],
        name=m.get("name"),
        version=m.get("version"),
        supersedes=m.get("supersedes"),
        parents=tuple(m.get("parents", ())),
        expires=m.get("expires"),
        license=m.get("license"),
        tags=tuple(m.get("tags", ())),
        description=m.get("description"),
        seal=m.get("seal"),
        sig=m["sig"],
    )


def decode(data: bytes, expected_cid: bytes | None = None) -> Manifest:
    """Parse and authenticate manifest bytes from anywhere untrusted.

    Order matters: size cap, then hash against the CID that was asked for, then canonical
    decoding, then the signature, then field validation — cheap checks before expensive ones,
    and nothing trusted before it is authenticated.
    """
    if len(data) > limits.MAX_MANIFEST:
        raise LimitError(f"manifest is {len(data)} bytes, the limit is {limits.MAX_MANIFEST}")
    if expected_cid is not None:
        cid.verify_block(expected_cid, data)
    m = canonical.decode(data, limits.MAX_MANIFEST)
    _expect(isinstance(m, dict), "manifest must be a map")
    # the version decides how the rest is read (a later MIP may sign differently), so it is
    # checked before the signature; refusing on an unauthenticated field is safe
    version = m.get("mip")
    if version != limits.MIP_VERSION or isinstance(version, bool):
        raise FormatError(f"unsupported MIP version {version!r} (this node speaks MIP {limits.MIP_VERSION})")
    sig = m.get("sig")
    _expect(isinstance(sig, bytes) and len(sig) == keys.SIGNATURE_LEN,
            "manifest has no 64-byte signature")
    author = m.get("author")
    _expect(isinstance(author, bytes) and len(author) == keys.PUBLIC_KEY_LEN,
            "author must be a 32-byte Ed25519 public key")
    unsigned = {k: v for k, v in m.items() if k != "sig"}
    keys.verify(author, SIGN_DOMAIN, canonical.encode(unsigned), sig)
    return from_map(m)
