"""Signed name records (memnet.cube.name_record) and their libp2p glue (memnet.net.names)."""

from __future__ import annotations

import itertools

import msgpack
import pytest
from libp2p.records.utils import InvalidRecordType

from memnet.cube import canonical, cid, keys, name_record
from memnet.cube.name_record import MAX_RECORD, MAX_TTL, NameRecord, best, decode, dht_key, parse_path, sign
from memnet.errors import CanonicalError, CIDError, FormatError, LimitError, PolicyError, SignatureError
from memnet.net.names import NameValidator, SeenSequences, validator
from tests.factories import key

NOW = 1_790_000_000
EXPIRES = NOW + name_record.DEFAULT_TTL
CUBE = cid.cid_of(b"a cube manifest")
OTHER_CUBE = cid.cid_of(b"another cube manifest")
NAME = "notes/physics"


def record(seq: int = 1, expires: int = EXPIRES, name: str = NAME, cube: bytes = CUBE, k=None) -> bytes:
    return sign(k or key(), name, cube, seq, expires)


def author(k=None) -> bytes:
    return keys.public_bytes(k or key())


def fields(data: bytes) -> dict:
    return canonical.decode(data, MAX_RECORD)


def resign(data: bytes, k=None, **changes) -> bytes:
    """The record's map with changes, validly signed by k (default alice) — bypasses sign()'s checks."""
    unsigned = {name: value for name, value in fields(data).items() if name != "sig"}
    unsigned.update(changes)
    sig = keys.sign(k or key(), name_record.SIGN_DOMAIN, canonical.encode(unsigned))
    return canonical.encode({**unsigned, "sig": sig})


def tampered(data: bytes, **changes) -> bytes:
    """The record's map with changes and the original signature."""
    return canonical.encode({**fields(data), **changes})


# -- record ------------------------------------------------------------------------------------

def test_round_trip():
    data = record(seq=7)
    rec = decode(data, key=dht_key(author(), NAME), now=NOW)
    assert rec == NameRecord(author(), NAME, CUBE, 7, EXPIRES, fields(data)["sig"])
    assert rec.encode() == data
    assert rec.key == dht_key(author(), NAME)
    assert list(fields(data)) == ["author", "cube", "expires", "name", "seq", "sig"]  # canonical order
    assert len(data) < MAX_RECORD
    assert sign(key(), NAME, CUBE, 7, EXPIRES) == data  # deterministic


def test_signature_covers_the_documented_bytes():
    data = record()
    m = fields(data)
    unsigned = {k: v for k, v in m.items() if k != "sig"}
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    Ed25519PublicKey.from_public_bytes(m["author"]).verify(
        m["sig"], b"memnet/mip/v1/name\x00" + canonical.encode(unsigned))


def test_dht_key():
    import hashlib

    expected = hashlib.sha256(b"memnet/name\x00" + author() + NAME.encode()).hexdigest()
    assert dht_key(author(), NAME) == "/memnet-name/" + expected
    assert dht_key(author(), NAME) != dht_key(author(), NAME + "2")
    assert dht_key(author(), NAME) != dht_key(author(key("bob")), NAME)


def test_flipped_signature_byte():
    data = record()
    sig = bytearray(fields(data)["sig"])
    sig[10] ^= 1
    with pytest.raises(SignatureError):
        decode(tampered(data, sig=bytes(sig)), now=NOW)


def test_flipped_cube_byte():
    data = record()
    cube = bytearray(CUBE)
    cube[-1] ^= 1
    with pytest.raises(SignatureError):
        decode(tampered(data, cube=bytes(cube)), now=NOW)


def test_seq_changed_without_resigning():
    with pytest.raises(SignatureError):
        decode(tampered(record(seq=1), seq=2), now=NOW)


def test_expires_changed_without_resigning():
    with pytest.raises(SignatureError):
        decode(tampered(record(), expires=EXPIRES + 1), now=NOW)


def test_wrong_author_key():
    # bob's key in the author field, alice's signature
    with pytest.raises(SignatureError):
        decode(tampered(record(), author=author(key("bob"))), now=NOW)
    # alice's author field, signed by bob
    with pytest.raises(SignatureError):
        decode(resign(record(), k=key("bob")), now=NOW)


def test_signed_under_another_domain():
    data = record()
    unsigned = {k: v for k, v in fields(data).items() if k != "sig"}
    sig = keys.sign(key(), b"memnet/mip/v1/manifest\x00", canonical.encode(unsigned))
    with pytest.raises(SignatureError):
        decode(tampered(data, sig=sig), now=NOW)


def test_expired():
    data = record()
    decode(data, now=EXPIRES - 1)
    with pytest.raises(PolicyError, match="expired"):
        decode(data, now=EXPIRES)
    with pytest.raises(PolicyError):
        decode(data, now=EXPIRES + 10**6)


def test_too_far_in_the_future():
    far = record(expires=NOW + MAX_TTL + 1)
    with pytest.raises(PolicyError):
        decode(far, now=NOW)
    decode(record(expires=NOW + MAX_TTL), now=NOW)  # the bound itself is fine
    with pytest.raises(PolicyError):
        decode(record(expires=2**63 - 1), now=NOW)


def test_wall_clock_is_the_default():
    with pytest.raises(PolicyError, match="expired"):  # 2001-09-09, long past
        decode(record(expires=1_000_000_000))


def test_key_mismatch():
    data = record()
    decode(data, key=dht_key(author(), NAME), now=NOW)
    with pytest.raises(PolicyError):  # stored under another name of the same author
        decode(data, key=dht_key(author(), "notes/chemistry"), now=NOW)
    with pytest.raises(PolicyError):  # stored under the same name of another author
        decode(data, key=dht_key(author(key("bob")), NAME), now=NOW)
    with pytest.raises(PolicyError):
        decode(data, key="/memnet-name/not-a-digest", now=NOW)


def test_truncated():
    data = record()
    for cut in (0, 1, len(data) // 2, len(data) - 1):
        with pytest.raises(CanonicalError):
            decode(data[:cut], now=NOW)


def test_oversized():
    with pytest.raises(LimitError):
        decode(record() + bytes(MAX_RECORD), now=NOW)
    big = canonical.encode({**fields(record()), "pad": bytes(MAX_RECORD)})
    with pytest.raises(LimitError):
        decode(big, now=NOW)


def test_trailing_bytes():
    with pytest.raises(CanonicalError):
        decode(record() + b"\x00", now=NOW)


def test_not_canonical():
    m = fields(record())
    reordered = msgpack.packb(dict(reversed(m.items())), use_bin_type=True)  # keys out of order
    assert reordered != record()
    with pytest.raises(CanonicalError):
        decode(reordered, now=NOW)
    wide_seq = bytearray(record(seq=1))
    at = wide_seq.index(canonical.encode("seq")) + 4
    padded = bytes(wide_seq[:at]) + b"\xcc" + bytes(wide_seq[at:])  # seq 1 as uint8
    with pytest.raises(CanonicalError):
        decode(padded, now=NOW)


@pytest.mark.parametrize("value", [b"", b"\xc0", canonical.encode([1, 2]), canonical.encode("record"),
                                   canonical.encode(7), b"not msgpack \xc1"])
def test_malformed(value):
    with pytest.raises(FormatError):
        decode(value, now=NOW)


def test_not_bytes():
    with pytest.raises(FormatError):
        decode("a record", now=NOW)


@pytest.mark.parametrize("changes, error", [
    ({"extra": 1}, FormatError),
    ({"seq": -1}, FormatError),
    ({"seq": True}, FormatError),
    ({"seq": 2**63}, LimitError),
    ({"expires": "tomorrow"}, FormatError),
    ({"name": ""}, FormatError),
    ({"name": "-bad"}, FormatError),
    ({"name": "a" * 129}, LimitError),
    ({"name": b"bytes"}, FormatError),
    ({"cube": b"\x01" * 36}, CIDError),
    ({"cube": "not bytes"}, FormatError),
    ({"author": b"\x00" * 31}, FormatError),
])
def test_bad_fields(changes, error):
    with pytest.raises(error):
        decode(resign(record(), **changes), now=NOW)


@pytest.mark.parametrize("missing", ["author", "name", "cube", "seq", "expires", "sig"])
def test_missing_field(missing):
    m = fields(record())
    del m[missing]
    with pytest.raises(FormatError, match="lacks"):
        decode(canonical.encode(m), now=NOW)


def test_sign_checks_its_fields():
    with pytest.raises(FormatError):
        sign(key(), "bad name", CUBE, 1, EXPIRES)
    with pytest.raises(CIDError):
        sign(key(), NAME, b"\x00" * 36, 1, EXPIRES)
    with pytest.raises(FormatError):
        sign(key(), NAME, CUBE, -1, EXPIRES)


def test_best_picks_highest_seq_in_any_order():
    recs = [decode(record(seq=s, cube=c), now=NOW) for s, c in ((3, CUBE), (9, OTHER_CUBE), (5, CUBE))]
    for order in itertools.permutations(recs):
        assert order[best(list(order))].seq == 9


def test_best_tie_breaks():
    early = decode(record(seq=4, expires=EXPIRES), now=NOW)
    late = decode(record(seq=4, expires=EXPIRES + 60), now=NOW)
    a = decode(record(seq=4, cube=CUBE), now=NOW)
    b = decode(record(seq=4, cube=OTHER_CUBE), now=NOW)
    assert [early, late][best([early, late])] == late
    assert [late, early][best([late, early])] == late
    winner = max(a, b, key=NameRecord.encode)
    assert [a, b][best([a, b])] == winner == [b, a][best([b, a])]
    with pytest.raises(ValueError):
        best([])


def test_parse_path():
    peer = keys.peer_id(author())
    assert parse_path(f"{peer}/{NAME}") == (author(), NAME)
    assert parse_path(f" {peer}/x ") == (author(), "x")


@pytest.mark.parametrize("text", ["", "/", "notes", "/notes", "{peer}", "{peer}/", "{peer}/-x",
                                  "{peer}/a b", "12D3KooWnotapeer/notes", "Qmfoo/notes", "{peer}/" + "a" * 129])
def test_parse_path_bad(text):
    with pytest.raises(FormatError):
        parse_path(text.format(peer=keys.peer_id(author())))


# -- libp2p glue -------------------------------------------------------------------------------

def clock():
    return NOW + 0.5


KEY = dht_key(author(), NAME)


def test_validator_accepts_a_good_record():
    NameValidator(clock).validate(KEY, record())
    validator(clock).validate(KEY, record())


@pytest.mark.parametrize("bad", [
    lambda: tampered(record(seq=1), seq=2),
    lambda: record(expires=NOW - 1),
    lambda: record(name="other"),
    lambda: b"\x00garbage",
])
def test_validator_rejects(bad):
    with pytest.raises(InvalidRecordType):
        NameValidator(clock).validate(KEY, bad())
    with pytest.raises(InvalidRecordType):
        validator(clock).validate(KEY, bad())


def test_namespaced_validator_is_strict():
    v = validator(clock)
    assert v.strict_validation
    for foreign in ("/pk/whatever", "/ipns/whatever", "plain-key"):
        with pytest.raises(InvalidRecordType):
            v.validate(foreign, record())


def test_validator_uses_the_wall_clock_by_default():
    with pytest.raises(InvalidRecordType):
        NameValidator().validate(KEY, record(expires=1_000_000_000))


def test_select_picks_the_higher_sequence():
    low, high = record(seq=1), record(seq=2, cube=OTHER_CUBE)
    v = NameValidator(clock)
    assert v.select(KEY, [low, high]) == 1
    assert v.select(KEY, [high, low]) == 0
    assert validator(clock).select(KEY, [low, high]) == 1


def test_select_skips_invalid_records():
    good = record(seq=1)
    forged = tampered(record(seq=1), seq=99)
    v = NameValidator(clock)
    assert v.select(KEY, [forged, good]) == 1
    assert v.select(KEY, [good, forged]) == 0
    assert v.select(KEY, [record(seq=50, name="other"), good]) == 1  # higher seq, wrong key
    with pytest.raises(InvalidRecordType):
        v.select(KEY, [forged, b""])


def test_seen_sequences_refuse_replay():
    seen = SeenSequences()
    old, new = (decode(record(seq=s), now=NOW) for s in (3, 4))
    seen.check_and_update(old)
    seen.check_and_update(new)
    seen.check_and_update(new)  # the same seq again is fine
    assert seen.highest(KEY) == 4
    with pytest.raises(PolicyError):
        seen.check_and_update(old)
    assert seen.highest(KEY) == 4
    seen.check_and_update(decode(record(seq=1, name="other"), now=NOW))  # another key is separate
    assert len(seen) == 2
