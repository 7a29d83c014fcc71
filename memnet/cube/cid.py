"""CIDv1 for raw blocks hashed with sha2-256, the only CID form MIP v1 uses.

Binary form: varint(1) varint(0x55 raw) varint(0x12 sha2-256) varint(32) digest — 36 bytes.
Text form: multibase base32 lower-case without padding, prefix "b" (as `ipfs add --cid-version 1
--raw-leaves` prints), so any IPFS tool computes the same identifier for the same bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from memnet.errors import CIDError

PREFIX = bytes([0x01, 0x55, 0x12, 0x20])
CID_LEN = len(PREFIX) + 32
MAX_TEXT_LEN = 80


def cid_of(data: bytes | memoryview) -> bytes:
    """The binary CID of a block."""
    return PREFIX + hashlib.sha256(data).digest()


def check_binary(cid: bytes) -> bytes:
    """Return cid if it is a well-formed binary raw/sha2-256 CIDv1, else raise CIDError."""
    if not isinstance(cid, bytes) or len(cid) != CID_LEN or cid[:4] != PREFIX:
        raise CIDError("not a CIDv1 of a raw sha2-256 block")
    return cid


def to_text(cid: bytes) -> str:
    check_binary(cid)
    return "b" + base64.b32encode(cid).decode("ascii").lower().rstrip("=")


def from_text(text: str) -> bytes:
    """Parse the base32 text form; raise CIDError with the reason if it is not one."""
    text = text.strip()
    if not text or len(text) > MAX_TEXT_LEN:
        raise CIDError(f"not a CID: {text[:MAX_TEXT_LEN]!r}")
    if text.startswith("Qm"):
        raise CIDError(f"{text}: CIDv0 is not used by memnet; expected a base32 CIDv1 starting with 'b'")
    if text[0] != "b":
        raise CIDError(f"{text}: expected a base32 CIDv1 starting with 'b'")
    body = text[1:].upper()
    try:
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
    except (binascii.Error, ValueError):
        raise CIDError(f"{text}: not valid base32") from None
    try:
        cid = check_binary(raw)
    except CIDError:
        raise CIDError(f"{text}: not a CIDv1 of a raw sha2-256 block") from None
    if to_text(cid) != text:
        raise CIDError(f"{text}: not in canonical base32 form")
    return cid


def verify_block(cid: bytes, data: bytes | memoryview) -> None:
    """Raise CIDError unless data hashes to cid."""
    if cid_of(data) != cid:
        raise CIDError(f"block content does not match its CID {to_text(cid)}")
