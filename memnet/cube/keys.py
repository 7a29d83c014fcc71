"""Ed25519 author keys: signing with domain separation, and libp2p PeerIDs.

The node identity key is the author key, so an author is also a libp2p peer: its PeerID is the
identity multihash of the protobuf-encoded public key (KeyType Ed25519 = 1), base58btc-encoded,
exactly as libp2p derives it ("12D3KooW...").
"""

from __future__ import annotations

import base58
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from memnet.errors import FormatError, SignatureError

PUBLIC_KEY_LEN = 32
SIGNATURE_LEN = 64
_LIBP2P_ED25519_PROTOBUF = bytes([0x08, 0x01, 0x12, 0x20])  # KeyType=Ed25519, Data=32 bytes
_IDENTITY_MULTIHASH = bytes([0x00, 0x24])  # identity hash, 36 bytes


def public_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)


def sign(key: Ed25519PrivateKey, domain: bytes, message: bytes) -> bytes:
    """Sign message under a domain tag, so a signature for one purpose is useless for another."""
    return key.sign(domain + message)


def verify(author: bytes, domain: bytes, message: bytes, signature: bytes) -> None:
    if len(author) != PUBLIC_KEY_LEN:
        raise SignatureError("author key is not a 32-byte Ed25519 public key")
    try:
        Ed25519PublicKey.from_public_bytes(author).verify(signature, domain + message)
    except (InvalidSignature, ValueError):
        raise SignatureError("signature does not verify under the author key") from None


def peer_id(author: bytes) -> str:
    """The libp2p PeerID (base58btc text) of an Ed25519 public key."""
    if len(author) != PUBLIC_KEY_LEN:
        raise FormatError("author key is not a 32-byte Ed25519 public key")
    return base58.b58encode(_IDENTITY_MULTIHASH + _LIBP2P_ED25519_PROTOBUF + author).decode("ascii")


def author_from_peer_id(text: str) -> bytes:
    """Inverse of peer_id, for Ed25519 PeerIDs (the only kind memnet nodes have)."""
    try:
        raw = base58.b58decode(text.strip())
    except ValueError:
        raise FormatError(f"not a PeerID: {text!r}") from None
    head = _IDENTITY_MULTIHASH + _LIBP2P_ED25519_PROTOBUF
    if len(raw) != len(head) + PUBLIC_KEY_LEN or not raw.startswith(head):
        raise FormatError(f"not an Ed25519 PeerID: {text!r}")
    return raw[len(head):]
