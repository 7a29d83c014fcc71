"""Sealed cubes (docs/MIP.md section 19): a payload encrypted so only listed recipients read it.

Pure, no I/O. The cube's chunks hold the ciphertext, so its CID covers the ciphertext and any
provider can store, verify and serve the cube without being able to read it.

    K              32 random bytes, fresh for every cube (the content key)
    payload key    HKDF-SHA256(K, info "memnet/mip/v1/seal/payload")
    commit         HKDF-SHA256(K, info "memnet/mip/v1/seal/commit")     -> seal map
    ciphertext     payload in 64 KiB segments, each ChaCha20-Poly1305(payload key,
                   nonce = u88be(index) || last-flag, aad = "memnet/mip/v1/seal" 0 || author || kind)
    epk            public half of one ephemeral X25519 key per cube          -> seal map
    per recipient  wrap key = HKDF-SHA256(X25519(esk, rpk) || epk || rpk, info "memnet/mip/v1/seal/wrap")
                   key = ChaCha20-Poly1305(wrap key, nonce 0^12, K,
                         aad = "memnet/mip/v1/seal/wrap" 0 || author || to || kind)  -> seal map

Why not one AEAD call over the payload with a nonce in the seal map: `cryptography` refuses
inputs over 2 GiB, and an activation cube may be 16 GiB; segments also bound memory per call.
Why the commit: ChaCha20-Poly1305 is not key-committing, so without it an author could wrap
different keys for different recipients over one ciphertext that opens to different payloads
under each, and one cube id would show different contents to different readers.
Why the author in both AADs: otherwise anyone could copy the ciphertext and seal map into a
manifest signed by themselves, and recipients would read the payload as that signer's.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from memnet.cube import keys, limits
from memnet.cube.keys import Recipient
from memnet.errors import FormatError, LimitError, PolicyError, SealError

ALG = "x25519-chacha20poly1305"
SEGMENT = 64 * 1024
TAG = 16
KEY_LEN = 32
WRAPPED_LEN = KEY_LEN + TAG
FIELDS = ("alg", "commit", "epk", "recipients")
PAYLOAD_INFO = b"memnet/mip/v1/seal/payload"
COMMIT_INFO = b"memnet/mip/v1/seal/commit"
WRAP_INFO = b"memnet/mip/v1/seal/wrap"
PAYLOAD_AAD = b"memnet/mip/v1/seal\x00"
WRAP_AAD = b"memnet/mip/v1/seal/wrap\x00"
NOT_A_RECIPIENT = "this cube is private and this node is not one of its recipients"
# Their meta carries the prefix keys, hashes of the token ids that nodes announce in the DHT: anyone
# can confirm a guessed prompt against them, so "private" would promise what it cannot keep.
NO_ACTIVATION = ("activation cubes cannot be sealed: their prefix keys, announced in the DHT, "
                 "identify the prompt they cache")


@dataclass(frozen=True)
class Secrets:
    """The random inputs of one seal. Fresh ones for every cube; fixed ones only for vectors."""

    content_key: bytes
    ephemeral: bytes

    @classmethod
    def fresh(cls) -> "Secrets":
        return cls(os.urandom(KEY_LEN), os.urandom(KEY_LEN))


def _hkdf(ikm: bytes, info: bytes) -> bytes:
    return HKDF(hashes.SHA256(), KEY_LEN, salt=None, info=info).derive(ikm)


def _raw(public: X25519PublicKey) -> bytes:
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _wrap_key(mine: X25519PrivateKey, theirs: bytes, epk: bytes, rpk: bytes) -> bytes:
    try:
        shared = mine.exchange(X25519PublicKey.from_public_bytes(theirs))
    except ValueError:  # a low-order point gives the all-zero secret, which cryptography refuses
        raise SealError("seal.epk or a recipient key is not a usable X25519 public key") from None
    return _hkdf(shared + epk + rpk, WRAP_INFO)


def _nonce(index: int, last: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def _payload_aad(author: bytes, kind: str) -> bytes:
    return PAYLOAD_AAD + author + kind.encode("ascii")


def _wrap_aad(author: bytes, to: bytes, kind: str) -> bytes:
    return WRAP_AAD + author + to + kind.encode("ascii")


def sealed_size(payload_size: int) -> int:
    """Ciphertext length of a payload: one tag per segment, at least one segment."""
    return payload_size + TAG * max(1, -(-payload_size // SEGMENT))


def plaintext_size(ciphertext_size: int) -> int:
    """Inverse of sealed_size; SealError for a length no sealing produces."""
    full, tail = divmod(ciphertext_size, SEGMENT + TAG)
    if tail == 0 and full > 0:
        return full * SEGMENT
    if tail < TAG or (tail == TAG and full > 0):
        raise SealError(f"{ciphertext_size} bytes is not the length of a sealed payload")
    return full * SEGMENT + tail - TAG


def seal(payload: bytes | memoryview, recipients: Sequence[Recipient], *, kind: str, author: bytes,
         secrets: Secrets | None = None) -> tuple[bytes, dict[str, Any]]:
    """Encrypt payload to recipients: (ciphertext, seal map for the manifest)."""
    if kind == "activation":
        raise FormatError(NO_ACTIVATION)
    by_author: dict[bytes, Recipient] = {}
    for r in recipients:
        if by_author.setdefault(r.author, r).x25519 != r.x25519:
            raise FormatError(f"two different keys given for recipient {r.peer_id}")
    if not by_author:
        raise FormatError("a sealed cube needs at least one recipient")
    if len(by_author) > limits.MAX_RECIPIENTS:
        raise LimitError(f"{len(by_author)} recipients, the limit is {limits.MAX_RECIPIENTS}")
    secrets = secrets or Secrets.fresh()
    ephemeral = X25519PrivateKey.from_private_bytes(secrets.ephemeral)
    epk = _raw(ephemeral.public_key())
    content_key = secrets.content_key
    entries = []
    for to in sorted(by_author):
        rpk = by_author[to].x25519
        wrap = ChaCha20Poly1305(_wrap_key(ephemeral, rpk, epk, rpk))
        entries.append({"key": wrap.encrypt(bytes(12), content_key, _wrap_aad(author, to, kind)), "to": to})
    aead, aad = ChaCha20Poly1305(_hkdf(content_key, PAYLOAD_INFO)), _payload_aad(author, kind)
    view = memoryview(payload)
    count = max(1, -(-len(view) // SEGMENT))
    parts = [aead.encrypt(_nonce(i, i == count - 1), view[i * SEGMENT:(i + 1) * SEGMENT], aad)
             for i in range(count)]
    seal_map = {"alg": ALG, "commit": _hkdf(content_key, COMMIT_INFO), "epk": epk, "recipients": entries}
    return b"".join(parts), seal_map


def open_sealed(ciphertext: bytes | memoryview, seal_map: dict[str, Any], *, kind: str, author: bytes,
                identity: Ed25519PrivateKey) -> bytes:
    """Decrypt a sealed payload with this node's identity (whose X25519 key is derived from it).
    PolicyError if the node is not a recipient, SealError if seal or ciphertext were altered."""
    validate_seal(seal_map, kind, len(ciphertext))
    me = keys.public_bytes(identity)
    entry = next((r for r in seal_map["recipients"] if r["to"] == me), None)
    if entry is None:
        raise PolicyError(NOT_A_RECIPIENT)
    mine = keys.x25519_key(identity)
    epk = seal_map["epk"]
    wrap = ChaCha20Poly1305(_wrap_key(mine, epk, epk, _raw(mine.public_key())))
    try:
        content_key = wrap.decrypt(bytes(12), entry["key"], _wrap_aad(author, me, kind))
    except InvalidTag:
        raise SealError("the content key sealed to this node does not open: the seal was altered "
                        "or made for another key") from None
    if not hmac.compare_digest(_hkdf(content_key, COMMIT_INFO), seal_map["commit"]):
        raise SealError("the content key sealed to this node does not match seal.commit")
    aead, aad = ChaCha20Poly1305(_hkdf(content_key, PAYLOAD_INFO)), _payload_aad(author, kind)
    view = memoryview(ciphertext)
    step = SEGMENT + TAG
    count = max(1, -(-len(view) // step))
    parts = []
    for i in range(count):
        try:
            parts.append(aead.decrypt(_nonce(i, i == count - 1), view[i * step:(i + 1) * step], aad))
        except InvalidTag:
            raise SealError(f"sealed payload segment {i} of {count} fails authentication: "
                            "the ciphertext was altered") from None
    return b"".join(parts)


def _expect(cond: bool, message: str) -> None:
    if not cond:
        raise SealError(message)


def _fields(m: Any, where: str, names: tuple[str, ...]) -> None:
    _expect(isinstance(m, dict), f"{where} must be a map")
    unknown = sorted(set(m) - set(names))
    _expect(not unknown, f"{where} has unknown field(s) {', '.join(unknown)}")
    missing = [k for k in names if k not in m]
    _expect(not missing, f"{where} lacks {', '.join(missing)}")


def _bin(value: Any, where: str, length: int) -> None:
    _expect(isinstance(value, bytes) and len(value) == length, f"{where} must be {length} bytes")


def validate_seal(seal_map: Any, kind: str, size: int) -> None:
    """Check a manifest's seal map (and that `size` is a ciphertext length) against MIP v1."""
    if kind == "activation":
        raise FormatError(NO_ACTIVATION)
    _fields(seal_map, "seal", FIELDS)
    _expect(seal_map["alg"] == ALG, f"seal.alg {seal_map['alg']!r} is not supported (only {ALG})")
    _bin(seal_map["epk"], "seal.epk", KEY_LEN)
    _bin(seal_map["commit"], "seal.commit", KEY_LEN)
    entries = seal_map["recipients"]
    _expect(isinstance(entries, list) and entries, "seal.recipients must be a non-empty list")
    if len(entries) > limits.MAX_RECIPIENTS:
        raise LimitError(f"seal.recipients has {len(entries)} entries, the limit is {limits.MAX_RECIPIENTS}")
    for entry in entries:
        _fields(entry, "seal.recipients entry", ("key", "to"))
        _bin(entry["to"], "seal.recipients[].to", keys.PUBLIC_KEY_LEN)
        _bin(entry["key"], "seal.recipients[].key", WRAPPED_LEN)
    tos = [e["to"] for e in entries]
    _expect(tos == sorted(set(tos)), "seal.recipients must be sorted by to, each recipient once")
    plaintext_size(size)


def recipients_of(seal_map: dict[str, Any]) -> list[bytes]:
    """The author keys a sealed cube is readable by."""
    return [entry["to"] for entry in seal_map["recipients"]]
