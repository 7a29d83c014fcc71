"""CIDs (memnet/cube/cid.py) against the independent `multiformats` package, and author keys /
PeerIDs (memnet/cube/keys.py) against py-libp2p's own derivation."""

from __future__ import annotations

import base64
import hashlib

import base58
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from multiformats import CID, multihash

from memnet.cube import cid, keys, manifest
from memnet.errors import CIDError, FormatError, SignatureError
from tests import factories

SETTINGS = settings(max_examples=200, deadline=None)


def reference(data: bytes) -> CID:
    return CID("base32", 1, "raw", multihash.digest(data, "sha2-256"))


# -- CIDs ------------------------------------------------------------------------------------------

@SETTINGS
@given(st.binary(max_size=2048))
def test_cid_matches_multiformats(data):
    ours = cid.cid_of(data)
    ref = reference(data)
    assert ours == bytes(ref)
    assert len(ours) == cid.CID_LEN == 36
    assert cid.to_text(ours) == str(ref)
    assert cid.from_text(str(ref)) == ours
    assert cid.check_binary(ours) is ours
    decoded = CID.decode(ours)
    assert (decoded.version, decoded.codec.name, decoded.hashfun.name) == (1, "raw", "sha2-256")
    assert decoded.raw_digest == hashlib.sha256(data).digest()
    cid.verify_block(ours, data)
    cid.verify_block(ours, memoryview(data))


@SETTINGS
@given(st.binary(min_size=36, max_size=36))
def test_text_binary_round_trip_of_any_digest(raw):
    c = cid.PREFIX + raw[:32]
    text = cid.to_text(c)
    assert text.startswith("bafkrei") and len(text) == 59
    assert text == text.lower()
    assert cid.from_text(text) == c


def test_empty_block_cid_is_the_ipfs_one():
    # `ipfs add --cid-version 1 --raw-leaves` of an empty file
    assert cid.to_text(cid.cid_of(b"")) == "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


DATA = b"memnet test block"
GOOD = str(reference(DATA))


@pytest.mark.parametrize("text, phrase", [
    (str(CID("base58btc", 0, "dag-pb", multihash.digest(DATA, "sha2-256"))), "CIDv0"),
    ("QmatYkNGZnELf8cAGdyJpUca2PyY4szai3RHyyWofNY1pY", "CIDv0"),
    (str(reference(DATA).set(base="base58btc")), "starting with 'b'"),       # z... multibase
    (str(reference(DATA).set(base="base32upper")), "starting with 'b'"),     # B... multibase
    ("f" + bytes(reference(DATA)).hex(), "starting with 'b'"),               # base16 multibase
    (str(reference(DATA).set(codec="dag-cbor")), "raw sha2-256"),
    (str(reference(DATA).set(codec="dag-pb")), "raw sha2-256"),
    (str(CID("base32", 1, "raw", multihash.digest(DATA, "sha2-512"))), "not a CID"),  # too long
    (str(CID("base32", 1, "raw", multihash.digest(DATA, "sha3-256"))), "raw sha2-256"),
    (GOOD[:-1], None),
    (GOOD[:-8], "raw sha2-256"),
    (GOOD[:10], None),
    ("b", "raw sha2-256"),
    (GOOD + "a", None),
    ("b" + GOOD[1:].upper(), "canonical"),            # upper-case body under the lower-case prefix
    (GOOD + "======", None),                          # padding is not part of the canonical form
    (GOOD[:-1] + "v", "canonical"),                   # same bytes, non-zero pad bits
    ("b" + "1" * 58, "base32"),                       # '1' is not in the base32 alphabet
    ("b\u00e9" + GOOD[2:], "base32"),
    ("", "not a CID"),
    ("   ", "not a CID"),
    ("b" * 200, "not a CID"),
])
def test_malformed_text_rejected(text, phrase):
    with pytest.raises(CIDError) as info:
        cid.from_text(text)
    if phrase is not None:
        assert phrase in str(info.value)
    assert "\n" not in str(info.value)


def test_last_character_pad_bits():
    # 36 bytes are 288 bits, 58 base32 digits hold 290: the last digit carries two zero pad bits.
    # Only one of the four digits that decode to the same bytes is accepted.
    last = GOOD[-1]
    index = "abcdefghijklmnopqrstuvwxyz234567".index(last)
    assert index % 4 == 0
    for alias in range(index + 1, index + 4):
        text = GOOD[:-1] + "abcdefghijklmnopqrstuvwxyz234567"[alias]
        body = text[1:].upper()
        assert base64.b32decode(body + "=" * (-len(body) % 8)) == bytes(reference(DATA))
        with pytest.raises(CIDError, match="canonical"):
            cid.from_text(text)


@pytest.mark.parametrize("raw", [
    b"",
    bytes(reference(DATA))[:-1],                             # truncated
    bytes(reference(DATA)) + b"\x00",                        # too long
    bytes(reference(DATA).set(codec="dag-cbor")),            # wrong codec, same length
    bytes(CID("base32", 1, "raw", multihash.digest(DATA, "sha2-512"))),
    bytes(CID("base58btc", 0, "dag-pb", multihash.digest(DATA, "sha2-256"))),   # CIDv0 binary
    b"\x02" + bytes(reference(DATA))[1:],                    # CID version 2
    b"\x01\x55\x12\x21" + bytes(32),                         # digest length byte lies
])
def test_malformed_binary_rejected(raw):
    with pytest.raises(CIDError, match="raw sha2-256"):
        cid.check_binary(raw)
    with pytest.raises(CIDError):
        cid.to_text(raw)


def test_binary_must_be_bytes():
    good = bytes(reference(DATA))
    with pytest.raises(CIDError):
        cid.check_binary(bytearray(good))
    with pytest.raises(CIDError):
        cid.check_binary(good.hex())


@SETTINGS
@given(st.binary(max_size=256), st.data())
def test_verify_block_mismatch(data, draw):
    c = cid.cid_of(data)
    if data:
        i = draw.draw(st.integers(0, len(data) - 1))
        flipped = bytearray(data)
        flipped[i] ^= 1 << draw.draw(st.integers(0, 7))
        with pytest.raises(CIDError, match="does not match"):
            cid.verify_block(c, bytes(flipped))
        with pytest.raises(CIDError, match="does not match"):
            cid.verify_block(c, data[:-1])
    with pytest.raises(CIDError, match=cid.to_text(c)):
        cid.verify_block(c, data + b"\x00")


# -- keys and PeerIDs ------------------------------------------------------------------------------

def libp2p_peer_id(pub: bytes) -> str:
    from libp2p.crypto.ed25519 import Ed25519PublicKey as Libp2pEd25519PublicKey
    from libp2p.peer.id import ID

    return ID.from_pubkey(Libp2pEd25519PublicKey.from_bytes(pub)).to_base58()


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_peer_id_matches_libp2p_and_inverts(seed):
    pub = keys.public_bytes(Ed25519PrivateKey.from_private_bytes(seed))
    pid = keys.peer_id(pub)
    assert pid == libp2p_peer_id(pub)
    assert pid.startswith("12D3KooW")
    assert keys.author_from_peer_id(pid) == pub
    assert keys.author_from_peer_id(f" {pid}\n") == pub


def test_peer_id_of_factory_key_and_public_bytes():
    k = factories.key("alice")
    pub = keys.public_bytes(k)
    assert pub == keys.public_bytes(k.public_key())
    assert len(pub) == keys.PUBLIC_KEY_LEN
    assert keys.peer_id(pub) == libp2p_peer_id(pub)
    assert keys.peer_id(pub) != keys.peer_id(keys.public_bytes(factories.key("bob")))


ALICE = keys.public_bytes(factories.key("alice"))
ALICE_ID = keys.peer_id(ALICE)
ALICE_RAW = base58.b58decode(ALICE_ID)


@pytest.mark.parametrize("text, phrase", [
    ("", "Ed25519 PeerID"),
    ("0OIl", "not a PeerID"),                                     # not base58
    ("12D3KooW\u00e9", "not a PeerID"),
    (ALICE_ID[:-1], "Ed25519 PeerID"),                            # truncated
    (base58.b58encode(ALICE_RAW + b"\x00").decode(), "Ed25519 PeerID"),     # one byte too many
    (base58.b58encode(ALICE_RAW[:-1]).decode(), "Ed25519 PeerID"),
    # an RSA/secp256k1-style PeerID: sha2-256 multihash of the key, not the key itself
    ("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N", "Ed25519 PeerID"),
    # identity multihash, but KeyType secp256k1 (2)
    (base58.b58encode(b"\x00\x24\x08\x02\x12\x20" + ALICE).decode(), "Ed25519 PeerID"),
    # sha2-256 multihash code in place of identity
    (base58.b58encode(b"\x12\x24\x08\x01\x12\x20" + ALICE).decode(), "Ed25519 PeerID"),
])
def test_malformed_peer_id_rejected(text, phrase):
    with pytest.raises(FormatError) as info:
        keys.author_from_peer_id(text)
    assert phrase in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("author", [b"", bytes(31), bytes(33)])
def test_peer_id_needs_a_32_byte_key(author):
    with pytest.raises(FormatError, match="32-byte"):
        keys.peer_id(author)


DOMAIN_A = b"memnet/test/a\x00"
DOMAIN_B = b"memnet/test/b\x00"


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=256))
def test_sign_verify_with_domain_separation(message):
    k = factories.key("alice")
    pub = keys.public_bytes(k)
    sig = keys.sign(k, DOMAIN_A, message)
    assert len(sig) == keys.SIGNATURE_LEN
    keys.verify(pub, DOMAIN_A, message, sig)
    with pytest.raises(SignatureError, match="does not verify"):
        keys.verify(pub, DOMAIN_B, message, sig)
    with pytest.raises(SignatureError, match="does not verify"):
        keys.verify(pub, manifest.SIGN_DOMAIN, message, sig)
    # a bare signature over the message (no domain) is not a domain signature, and vice versa
    with pytest.raises(SignatureError):
        keys.verify(pub, DOMAIN_A, message, k.sign(message))
    with pytest.raises(SignatureError):
        keys.verify(pub, b"", message, sig)
    with pytest.raises(SignatureError):
        keys.verify(pub, DOMAIN_A, message + b"\x00", sig)


def test_verify_rejections():
    k, other = factories.key("alice"), factories.key("bob")
    pub = keys.public_bytes(k)
    sig = keys.sign(k, DOMAIN_A, b"hello")
    keys.verify(pub, DOMAIN_A, b"hello", sig)
    with pytest.raises(SignatureError, match="does not verify"):
        keys.verify(keys.public_bytes(other), DOMAIN_A, b"hello", sig)
    for i in (0, 31, 32, 63):
        forged = bytearray(sig)
        forged[i] ^= 0x01
        with pytest.raises(SignatureError, match="does not verify"):
            keys.verify(pub, DOMAIN_A, b"hello", bytes(forged))
    with pytest.raises(SignatureError):
        keys.verify(pub, DOMAIN_A, b"hello", sig[:-1])
    with pytest.raises(SignatureError):
        keys.verify(pub, DOMAIN_A, b"hello", sig + b"\x00")
    with pytest.raises(SignatureError):
        keys.verify(pub, DOMAIN_A, b"hello", bytes(64))
    with pytest.raises(SignatureError, match="32-byte"):
        keys.verify(pub[:-1], DOMAIN_A, b"hello", sig)
    with pytest.raises(SignatureError):
        keys.verify(bytes(32), DOMAIN_A, b"hello", sig)           # not the author (a low-order point)
    with pytest.raises(SignatureError):
        keys.verify(b"\xff" * 32, DOMAIN_A, b"hello", sig)        # not a valid point encoding


def test_manifest_domain_is_nul_terminated():
    # domains are prefix-free only because each ends in NUL; domain + message must not be confusable
    assert manifest.SIGN_DOMAIN.endswith(b"\x00")
    assert manifest.SIGN_DOMAIN.count(b"\x00") == 1
