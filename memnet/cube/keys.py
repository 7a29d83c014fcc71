"""Ed25519 author keys: signing with domain separation, libp2p PeerIDs, and recipient keys.

The node identity key is the author key, so an author is also a libp2p peer: its PeerID is the
identity multihash of the protobuf-encoded public key (KeyType Ed25519 = 1), base58btc-encoded,
exactly as libp2p derives it ("12D3KooW...").

Sealed cubes (docs/MIP.md section 19) are encrypted to X25519 keys. Each node's X25519 key is
derived from its Ed25519 identity by HKDF, so there is no second key file, and a signing key is
never used for Diffie-Hellman. Its printable form, the recipient string, is
"<PeerID>:<base32(x25519 public key || Ed25519 signature of it)>": the signature binds the
X25519 key to the PeerID, so a string naming one peer with another's key is refused.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import base58
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

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


# -- recipient (X25519) keys -------------------------------------------------------------------

X25519_INFO = b"memnet/mip/v1/x25519"
RECIPIENT_DOMAIN = b"memnet/mip/v1/recipient\x00"
MAX_RECIPIENT_TEXT = 512  # a real one is about 210 characters


def x25519_key(identity: Ed25519PrivateKey) -> X25519PrivateKey:
    """The node's X25519 key: HKDF-SHA256 of the raw Ed25519 secret, under its own info string."""
    seed = identity.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    derived = HKDF(hashes.SHA256(), 32, salt=None, info=X25519_INFO).derive(seed)
    return X25519PrivateKey.from_private_bytes(derived)


@dataclass(frozen=True)
class Recipient:
    """A peer that sealed cubes can be encrypted to: its author key and X25519 key, bound by
    the author key's signature over the X25519 key."""

    author: bytes
    x25519: bytes
    sig: bytes

    @property
    def peer_id(self) -> str:
        return peer_id(self.author)

    def text(self) -> str:
        code = base64.b32encode(self.x25519 + self.sig).decode("ascii").rstrip("=").lower()
        return f"{self.peer_id}:{code}"


def recipient_of(identity: Ed25519PrivateKey) -> Recipient:
    x_pub = x25519_key(identity).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return Recipient(public_bytes(identity), x_pub, sign(identity, RECIPIENT_DOMAIN, x_pub))


def parse_recipient(text: str) -> Recipient:
    """Parse and authenticate a recipient string; FormatError (SignatureError if forged)."""
    if not isinstance(text, str) or len(text) > MAX_RECIPIENT_TEXT:
        raise FormatError("a recipient string is at most 512 characters")
    head, sep, code = text.strip().partition(":")
    if not sep or ":" in code:
        raise FormatError(f"not a recipient string (expected PEERID:KEY, see `memnet id`): {text[:80]!r}")
    author = author_from_peer_id(head)
    try:
        raw = base64.b32decode(code.upper() + "=" * (-len(code) % 8))
    except (binascii.Error, ValueError):
        raise FormatError(f"recipient key of {head} is not base32") from None
    if len(raw) != 32 + SIGNATURE_LEN:
        raise FormatError(f"recipient key of {head} has {len(raw)} bytes, expected {32 + SIGNATURE_LEN}")
    x_pub, sig = raw[:32], raw[32:]
    try:
        verify(author, RECIPIENT_DOMAIN, x_pub, sig)
    except SignatureError:
        raise SignatureError(f"recipient key is not signed by {head} (forged or corrupted string)") from None
    return Recipient(author, x_pub, sig)
