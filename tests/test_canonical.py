"""Property tests for canonical msgpack (memnet/cube/canonical.py): build valid values, then mutate
their encodings and check that every non-canonical form is refused with CanonicalError."""

from __future__ import annotations

import random
import struct

import msgpack
import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from memnet.cube import canonical
from memnet.cube.canonical import MAX_DEPTH
from memnet.errors import CanonicalError, FormatError, LimitError

SETTINGS = settings(max_examples=200, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
chars = st.characters(codec="utf-8")  # no lone surrogates: they cannot be UTF-8 encoded
BIG = 1 << 26

# Integers at the edges of every msgpack size class (fixint, uint8..uint64, negative fixint, int8..int64).
INT_EDGES = [
    0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1,
    -1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**63) + 1, -(2**63),
]
ints = st.one_of(st.sampled_from(INT_EDGES), st.integers(min_value=-(2**63), max_value=2**64 - 1))
# Lengths at the edges of fixstr/str8 (and bin8/bin16) inside composite values; the str16/str32
# edges are covered by test_long_scalars_round_trip on their own (they would make nesting slow).
LEN_EDGES = [0, 1, 31, 32, 255, 256]
LONG_EDGES = [65535, 65536]
texts = st.one_of(
    st.text(chars, max_size=40),
    st.builds(lambda c, n: c * n, chars, st.sampled_from(LEN_EDGES)),
)
blobs = st.one_of(st.binary(max_size=40), st.builds(bytes, st.sampled_from(LEN_EDGES)))
scalars = st.one_of(ints, texts, blobs, st.booleans())
long_scalars = st.one_of(
    st.builds(lambda c, n: c * n, chars, st.sampled_from(LONG_EDGES)),
    st.builds(bytes, st.sampled_from(LONG_EDGES)),
)


def depth(value) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(st.text(chars, max_size=10), children, max_size=6),
        # fixarray/fixmap end at 15 entries: cover array16/map16 too
        st.lists(children, min_size=16, max_size=17),
        st.dictionaries(st.text(chars, max_size=4), st.integers(0, 3), min_size=16, max_size=17),
    ),
    max_leaves=16,
).filter(lambda v: depth(v) <= MAX_DEPTH)
small_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(chars, max_size=6), children, max_size=3),
    max_leaves=4,
)
maps = st.dictionaries(st.text(chars, max_size=10), small_values, max_size=8)


def same(a, b) -> bool:
    """Equality that also tells True from 1 and bytes from str, all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


def shuffled(value, rng: random.Random):
    """The same value with every map's insertion order permuted."""
    if isinstance(value, list):
        return [shuffled(v, rng) for v in value]
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: shuffled(v, rng) for k, v in items}
    return value


def sort_maps(value):
    if isinstance(value, list):
        return [sort_maps(v) for v in value]
    if isinstance(value, dict):
        return {k: sort_maps(value[k]) for k in sorted(value, key=lambda k: k.encode())}
    return value


def rejected(data: bytes, phrase: str | None = None) -> CanonicalError:
    with pytest.raises(CanonicalError) as info:
        canonical.decode(data, BIG)
    if phrase is not None:
        assert phrase in str(info.value)
    assert "\n" not in str(info.value)
    return info.value


# -- valid values ----------------------------------------------------------------------------------

@SETTINGS
@given(values)
def test_round_trip(value):
    data = canonical.encode(value)
    back = canonical.decode(data, len(data))
    assert same(back, sort_maps(value))
    assert back == value
    assert canonical.encode(back) == data


@settings(SETTINGS, max_examples=20)
@given(long_scalars)
def test_long_scalars_round_trip(value):
    data = canonical.encode(value)
    assert same(canonical.decode(data, len(data)), value)
    assert data[0] in (0xDA, 0xDB, 0xC5, 0xC6)  # str16/str32/bin16/bin32


@SETTINGS
@given(values, st.randoms(use_true_random=False))
def test_encoding_ignores_dict_insertion_order(value, rng):
    assert canonical.encode(shuffled(value, rng)) == canonical.encode(value)


@SETTINGS
@given(maps)
def test_decoded_maps_come_back_in_key_byte_order(value):
    back = canonical.decode(canonical.encode(value), BIG)
    keys = [k.encode() for k in back]
    assert keys == sorted(keys)


@SETTINGS
@given(ints)
def test_integers_use_the_smallest_encoding(n):
    data = canonical.encode(n)
    assert canonical.decode(data, 16) == n
    # the smallest msgpack form: 1 byte for fixints, else 1 type byte + the narrowest width
    if -32 <= n <= 127:
        assert len(data) == 1
    else:
        width = next(w for w in (1, 2, 4, 8)
                     if (0 <= n < 2 ** (8 * w)) or (n < 0 and -(2 ** (8 * w - 1)) <= n))
        assert len(data) == 1 + width


def test_bool_and_int_stay_distinct():
    assert canonical.encode(True) == b"\xc3"
    assert canonical.encode(1) == b"\x01"
    assert canonical.decode(b"\xc3", 1) is True
    assert type(canonical.decode(b"\x01", 1)) is int


def test_bin_and_str_stay_distinct():
    assert canonical.decode(canonical.encode(b"a"), 8) == b"a"
    assert canonical.decode(canonical.encode("a"), 8) == "a"
    assert canonical.encode(b"a") == b"\xc4\x01a"
    assert canonical.encode("a") == b"\xa1a"
    # bytearray / memoryview are accepted as bytes and encode identically
    assert canonical.encode(bytearray(b"a")) == canonical.encode(memoryview(b"a")) == b"\xc4\x01a"


def test_max_depth_is_accepted_one_more_is_not():
    def nest(n):
        v: list = []
        for _ in range(n):
            v = [v]
        return v

    ok = canonical.encode(nest(MAX_DEPTH))
    assert canonical.decode(ok, BIG) == nest(MAX_DEPTH)
    with pytest.raises(CanonicalError, match="nested deeper"):
        canonical.encode(nest(MAX_DEPTH + 1))
    with pytest.raises(CanonicalError, match="nested deeper"):
        canonical.encode({"a": nest(MAX_DEPTH)})
    rejected(b"\x91" * (MAX_DEPTH + 1) + b"\x90", "nested deeper")
    rejected(b"\x81\xa1a" * (MAX_DEPTH + 1) + b"\x80", "nested deeper")
    # far deeper than any stack: refused, never a RecursionError or crash
    rejected(b"\x91" * 200_000 + b"\x90")


# -- what encode refuses ---------------------------------------------------------------------------

@pytest.mark.parametrize("value, phrase", [
    (1.5, "floats"),
    (0.0, "floats"),
    ({"a": 1.0}, "floats"),
    (None, "nil"),
    ([None], "nil"),
    ({1: "x"}, "not a string"),
    ({b"k": "x"}, "not a string"),
    (2**64, "64 bits"),
    (-(2**63) - 1, "64 bits"),
    ({"x"}, "cannot be encoded"),
    ("\ud800", "UTF-8"),
    ({"\udc00": 1}, "UTF-8"),
])
def test_encode_refuses(value, phrase):
    with pytest.raises(CanonicalError, match=phrase):
        canonical.encode(value)


# -- mutations of valid encodings ------------------------------------------------------------------

WIDER_INT_FORMS = [  # (type byte, struct format, lowest, highest)
    (0xCC, ">B", 0, 2**8 - 1), (0xCD, ">H", 0, 2**16 - 1), (0xCE, ">I", 0, 2**32 - 1),
    (0xCF, ">Q", 0, 2**64 - 1), (0xD0, ">b", -(2**7), 2**7 - 1), (0xD1, ">h", -(2**15), 2**15 - 1),
    (0xD2, ">i", -(2**31), 2**31 - 1), (0xD3, ">q", -(2**63), 2**63 - 1),
]


def int_forms(n: int) -> list[bytes]:
    forms = [bytes([t]) + struct.pack(fmt, n) for t, fmt, lo, hi in WIDER_INT_FORMS if lo <= n <= hi]
    if 0 <= n <= 127 or -32 <= n < 0:
        forms.append(struct.pack(">b", n))
    return forms


@SETTINGS
@given(ints)
def test_non_minimal_integers_rejected(n):
    minimal = canonical.encode(n)
    forms = int_forms(n)
    assert minimal in forms
    for form in forms:
        if form != minimal:
            rejected(form, "canonical form")
            rejected(b"\x81\xa1n" + form, "canonical form")      # inside a map
            rejected(b"\x92\x00" + form, "canonical form")       # inside a list


def test_one_as_uint8_and_uint64_rejected():
    assert canonical.decode(b"\x01", 1) == 1
    rejected(b"\xcc\x01", "canonical form")
    rejected(b"\xcf" + (1).to_bytes(8, "big"), "canonical form")
    rejected(b"\xd3" + (1).to_bytes(8, "big"), "canonical form")


@SETTINGS
@given(st.text(chars, max_size=31))
def test_str8_for_a_short_string_rejected(s):
    raw = s.encode()
    assume(len(raw) < 32)
    assert canonical.encode(s) == bytes([0xA0 | len(raw)]) + raw
    rejected(b"\xd9" + bytes([len(raw)]) + raw, "canonical form")
    rejected(b"\xda" + struct.pack(">H", len(raw)) + raw, "canonical form")
    rejected(b"\xdb" + struct.pack(">I", len(raw)) + raw, "canonical form")


@SETTINGS
@given(st.binary(max_size=255))
def test_bin16_for_short_bytes_rejected(b):
    assert canonical.encode(b) == b"\xc4" + bytes([len(b)]) + b
    rejected(b"\xc5" + struct.pack(">H", len(b)) + b, "canonical form")


@SETTINGS
@given(st.lists(st.integers(0, 127), max_size=15))
def test_array16_and_map16_for_short_containers_rejected(items):
    body = bytes(items)
    rejected(b"\xdc" + struct.pack(">H", len(items)) + body, "canonical form")
    keys = sorted({f"k{i}" for i in items}, key=str.encode)
    pairs = b"".join(canonical.encode(k) + b"\x00" for k in keys)
    assert canonical.decode(bytes([0x80 | len(keys)]) + pairs, BIG) == {k: 0 for k in keys}
    rejected(b"\xde" + struct.pack(">H", len(keys)) + pairs, "canonical form")


@SETTINGS
@given(st.dictionaries(st.text(chars, max_size=8), small_values, min_size=2, max_size=8))
def test_map_keys_out_of_order_rejected(m):
    ordered = sorted(m, key=str.encode)
    unsorted = {k: sort_maps(m[k]) for k in reversed(ordered)}
    data = msgpack.packb(unsorted, use_bin_type=True)  # msgpack keeps insertion order
    rejected(data, "canonical form")
    rejected(b"\x91" + data, "canonical form")
    assert canonical.decode(canonical.encode(unsorted), BIG) == m


def test_key_order_is_by_utf8_bytes_not_length_or_code_points():
    # "\uffff" sorts before "\U00010000" by code point too, but by UTF-8 bytes ef bf bf < f0 90 80 80;
    # "b" > "aa" bytewise even though shorter (unlike CBOR's length-first order)
    m = {"b": 1, "aa": 2, "\U00010000": 3, "\uffff": 4}
    assert list(canonical.decode(canonical.encode(m), BIG)) == ["aa", "b", "\uffff", "\U00010000"]
    rejected(msgpack.packb({"b": 1, "aa": 2}), "canonical form")


@SETTINGS
@given(st.text(chars, max_size=8), small_values, small_values)
def test_duplicate_keys_rejected(key, first, second):
    entry_a = canonical.encode(key) + canonical.encode(first)
    entry_b = canonical.encode(key) + canonical.encode(second)
    err = rejected(b"\x82" + entry_a + entry_b, "duplicate map key")
    assert repr(key)[:20] in str(err) or len(key) > 15
    rejected(b"\x91\x82" + entry_a + entry_b, "duplicate map key")


@SETTINGS
@given(values, st.binary(min_size=1, max_size=8))
def test_trailing_bytes_rejected(value, extra):
    rejected(canonical.encode(value) + extra, "trailing bytes")


SAMPLE = {
    "author": bytes(range(32)),
    "chunks": [b"\x01" * 36, b"\x02" * 300],
    "created": 1_790_000_000,
    "kind": "plaintext",
    "meta": {"items": 2, "nested": [[1, -2, 2**40], {"x": "y" * 40}]},
    "neg": -(2**63),
    "ok": True,
    "text": "h\u00e9llo \U0001f600" * 5,
}


def test_every_truncation_of_a_sample_is_rejected():
    data = canonical.encode(SAMPLE)
    assert canonical.decode(data, BIG) == SAMPLE
    for cut in range(len(data)):
        with pytest.raises(CanonicalError):
            canonical.decode(data[:cut], BIG)


@SETTINGS
@given(values, st.data())
def test_truncations_of_any_value_are_rejected(value, data):
    encoded = canonical.encode(value)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(CanonicalError):
        canonical.decode(encoded[:cut], BIG)


@pytest.mark.parametrize("data", [
    b"\xca" + struct.pack(">f", 1.5),
    b"\xcb" + struct.pack(">d", 1.5),
    b"\xcb" + struct.pack(">d", 0.0),
    b"\x81\xa1a\xcb" + struct.pack(">d", 2.0),
])
def test_floats_rejected(data):
    rejected(data, "floats")


def test_nil_rejected():
    rejected(b"\xc0", "nil")
    rejected(b"\x81\xa1a\xc0", "nil")


@pytest.mark.parametrize("data", [
    b"\xd4\x01\x00",                      # fixext1
    b"\xd5\x02\x00\x00",                  # fixext2
    b"\xd6\x05" + b"\x00" * 4,            # fixext4
    b"\xd7\x05" + b"\x00" * 8,            # fixext8
    b"\xd8\x05" + b"\x00" * 16,           # fixext16
    b"\xc7\x00\x05",                      # ext8, empty
    b"\xc8\x00\x01\x05\x00",              # ext16
    b"\xc9\x00\x00\x00\x01\x05\x00",      # ext32
    b"\xd6\xff\x00\x00\x00\x01",          # timestamp32 (type -1)
    b"\xd7\xff" + b"\x00" * 8,            # timestamp64
    b"\x91\xd4\x01\x00",                  # nested
])
def test_extension_types_rejected(data):
    err = rejected(data)
    assert "extension" in str(err) or "Timestamp" in str(err)


@pytest.mark.parametrize("data", [
    b"\x81\x01\x02",                      # int key
    b"\x81\xc4\x01a\x01",                 # bin key (bin vs str confusion)
    b"\x81\xc3\x01",                      # bool key
    b"\x81\x90\x01",                      # list key
    b"\x81\x80\x01",                      # map key
    b"\x91\x81\x01\x02",                  # nested
])
def test_non_string_keys_rejected(data):
    rejected(data, "not a string")


def test_bin_vs_str_confusion():
    # the same bytes as bin and as str are two different values with two different encodings
    as_bin, as_str = canonical.decode(b"\xc4\x01a", 4), canonical.decode(b"\xa1a", 4)
    assert as_bin == b"a" and as_str == "a"
    assert canonical.encode({"k": b"a"}) != canonical.encode({"k": "a"})
    # a str holding bytes that are not UTF-8 is malformed, never smuggled through as bin
    rejected(b"\xa2\xff\xfe", "malformed")
    rejected(b"\xa1\x80", "malformed")
    # raw (old-spec) encoding of bytes as str: comes back as str, not bytes
    assert canonical.decode(msgpack.packb(b"abc", use_bin_type=False), 8) == "abc"


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x91", b"\xa5ab", b"\xc4\x05a", b"\xdc\x00"])
def test_malformed_rejected(data):
    rejected(data)


@SETTINGS
@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_canonically_or_raise_canonical_error(data):
    try:
        value = canonical.decode(data, BIG)
    except CanonicalError:
        return
    assert canonical.encode(value) == data


@SETTINGS
@given(values)
def test_oversize_input_is_a_limit_error(value):
    data = canonical.encode(value)
    assert same(canonical.decode(data, len(data)), sort_maps(value))
    with pytest.raises(LimitError, match="limit"):
        canonical.decode(data, len(data) - 1)


def test_size_limit_is_checked_before_parsing():
    # garbage larger than the limit is a LimitError, not a parse error
    with pytest.raises(LimitError):
        canonical.decode(b"\xc1" * 100, 99)
    assert issubclass(CanonicalError, FormatError) and issubclass(LimitError, FormatError)
