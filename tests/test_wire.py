"""The MIP exchange codec (memnet/net/wire.py): frames and messages round-trip, and every forged,
truncated, oversized or non-canonical input is refused with a memnet error (never another one)."""

from __future__ import annotations

import struct

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memnet.cube import canonical, cid, limits
from memnet.errors import CanonicalError, CIDError, FormatError, LimitError, MemnetError
from memnet.net import chunk_frames, wire

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

C1, C2, C3 = (cid.cid_of(bytes([i])) for i in range(3))
DAG_PB = bytes([0x01, 0x70]) + C1[2:]

SAMPLES = [
    wire.get_manifest(1, C1),
    wire.manifest(2, b"\x85manifest"),
    wire.get_chunks(3, C1, [C2, C3]),
    wire.chunk(3, C2, b"chunk bytes"),
    wire.missing(3, C3),
    wire.get_have(wire.MAX_ID, C1),
    wire.have(0, b""),
    wire.have(5, wire.bits_from_flags([True, False, True])),
    wire.error(0, "bad_request", "h\u00e9 \U0001f600"),
    wire.get_prefix(6, bytes(range(32))),
    wire.cubes(6, [C1, C2]),
    wire.cubes(7, []),
]


def varint(n: int) -> bytes:
    return wire._varint(n)


def frame(body: bytes) -> bytes:
    return varint(len(body)) + body


def decode_all(data: bytes, max_frame: int = wire.MAX_FRAME) -> list[dict]:
    decoder = wire.FrameDecoder(max_frame)
    decoder.feed(data)
    out = []
    while (message := decoder.next()) is not None:
        out.append(message)
    decoder.eof()
    return out


def raw_map(*pairs: tuple[str, bytes]) -> bytes:
    """A msgpack map of (key, already-encoded value) pairs in the order given."""
    out = msgpack.Packer().pack_map_header(len(pairs))
    for key, value in pairs:
        out += canonical.encode(key) + value
    return out


# -- round trips -------------------------------------------------------------------------------

def test_message_types():
    assert wire.REQUESTS | wire.RESPONSES == set(wire.FIELDS) and not wire.REQUESTS & wire.RESPONSES
    assert wire.REQUESTS == {"get_manifest", "get_chunks", "get_have", "get_prefix"}
    assert {m.t for m in SAMPLES} == set(wire.FIELDS)
    assert wire.SUPPORTED == (wire.PROTOCOL_ID,) == ("/memnet/mip/1.0.0",)


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: m.t)
def test_round_trip(message):
    data = wire.encode_frame(message)
    body = canonical.encode(message.to_map())
    assert data == varint(len(body)) + body
    assert decode_all(data) == [message]


def test_largest_frames_fit():
    big_chunk = wire.encode_frame(wire.chunk(wire.MAX_ID, C1, bytes(limits.MAX_CHUNK_SIZE)))
    big_manifest = wire.encode_frame(wire.manifest(wire.MAX_ID, bytes(limits.MAX_MANIFEST)))
    many = wire.encode_frame(wire.get_chunks(1, C1, [cid.cid_of(bytes([i])) for i in range(wire.MAX_BATCH)]))
    for data in (big_chunk, big_manifest, many):
        assert len(data) - len(varint(wire.MAX_FRAME)) <= wire.MAX_FRAME
    decoder = wire.FrameDecoder()
    for start in range(0, len(big_chunk), 65536):  # typical read size: linear, not quadratic
        decoder.feed(big_chunk[start:start + 65536])
        message = decoder.next()
    assert message.data == bytes(limits.MAX_CHUNK_SIZE) and decoder.pending == 0


def test_split_at_every_byte():
    data = wire.encode_frame(SAMPLES[2])
    for cut in range(len(data) + 1):
        decoder = wire.FrameDecoder()
        decoder.feed(data[:cut])
        if cut < len(data):
            assert decoder.next() is None and decoder.pending == cut
            decoder.feed(data[cut:])
        assert decoder.next() == SAMPLES[2]
        assert decoder.pending == 0 and decoder.next() is None


def test_one_byte_at_a_time():
    stream = b"".join(wire.encode_frame(m) for m in SAMPLES)
    decoder, got = wire.FrameDecoder(), []
    for position in range(len(stream)):
        decoder.feed(stream[position:position + 1])
        while (message := decoder.next()) is not None:
            got.append(message)
    assert got == SAMPLES and decoder.pending == 0
    decoder.eof()


def test_several_frames_in_one_feed():
    assert decode_all(b"".join(wire.encode_frame(m) for m in SAMPLES)) == SAMPLES


def test_memoryview_and_bytearray_feeds():
    data = wire.encode_frame(SAMPLES[3])
    decoder = wire.FrameDecoder()
    decoder.feed(memoryview(data)[:5])
    decoder.feed(bytearray(data[5:]))
    assert decoder.next() == SAMPLES[3]


# -- framing errors ----------------------------------------------------------------------------

@pytest.mark.parametrize("cut", [1, 5, -1])
def test_truncated_frame(cut):
    data = wire.encode_frame(wire.chunk(1, C1, bytes(300)))  # 2-byte length: cut 1 is mid-prefix
    decoder = wire.FrameDecoder()
    decoder.feed(data[:cut])
    assert decoder.next() is None and decoder.pending == len(data[:cut])
    with pytest.raises(FormatError, match="truncated"):
        decoder.eof()


def test_eof_at_boundary():
    decoder = wire.FrameDecoder()
    decoder.eof()
    decoder.feed(wire.encode_frame(SAMPLES[0]))
    assert decoder.next() == SAMPLES[0]
    decoder.eof()


@pytest.mark.parametrize("max_frame", [100, wire.MAX_FRAME])
def test_oversized_length_refused_before_the_body(max_frame):
    decoder = wire.FrameDecoder(max_frame)
    decoder.feed(varint(max_frame + 1))  # no body at all
    with pytest.raises(LimitError):
        decoder.next()
    decoder = wire.FrameDecoder(max_frame)
    decoder.feed(varint(max_frame) + b"\x80")  # the limit itself is fine: wait for the body
    assert decoder.next() is None


def test_max_frame_argument():
    with pytest.raises(ValueError):
        wire.FrameDecoder(wire.MAX_FRAME + 1)
    with pytest.raises(ValueError):
        wire.FrameDecoder(0)


@pytest.mark.parametrize("prefix", [b"\x85\x00", b"\x80\x80\x00", b"\x81\x80\x80\x00"], ids=["2", "3", "4"])
def test_non_minimal_varint(prefix):
    with pytest.raises(FormatError, match="not minimal"):
        decode_all(prefix + bytes(8))


def test_over_long_varint_refused_at_the_fourth_byte():
    decoder = wire.FrameDecoder()
    decoder.feed(b"\x80\x80\x80")
    assert decoder.next() is None
    decoder.feed(b"\x80")
    with pytest.raises(FormatError, match="longer than 4"):
        decoder.next()
    with pytest.raises(FormatError):
        decode_all(b"\xff\xff\xff\xff\x01")


def test_zero_length_frame():
    with pytest.raises(FormatError, match="empty frame"):
        decode_all(b"\x00")


# -- forged bodies -----------------------------------------------------------------------------

def msg(t: str, **fields) -> dict:
    return {"t": t, "id": 1, **fields}


FORGED = [
    ("not a map", [1, 2], FormatError),
    ("a str", "get_manifest", FormatError),
    ("unknown type", msg("get_everything", cube=C1), FormatError),
    ("type is an int", {"t": 1, "id": 1}, FormatError),
    ("no type", {"id": 1, "cube": C1}, FormatError),
    ("missing key", msg("get_manifest"), FormatError),
    ("missing id", {"t": "get_manifest", "cube": C1}, FormatError),
    ("extra key", msg("get_manifest", cube=C1, x=1), FormatError),
    ("extra key on missing", msg("missing", cid=C1, data=b"x"), FormatError),
    ("bool id", {"t": "missing", "id": True, "cid": C1}, FormatError),
    ("negative id", {"t": "missing", "id": -1, "cid": C1}, FormatError),
    ("id 2^32", {"t": "missing", "id": 2**32, "cid": C1}, FormatError),
    ("str id", {"t": "missing", "id": "1", "cid": C1}, FormatError),
    ("cube as str", msg("get_have", cube=C1.hex()), FormatError),
    ("data as str", msg("manifest", data="manifest"), FormatError),
    ("cube with dag-pb codec", msg("get_manifest", cube=DAG_PB), CIDError),
    ("cube of 35 bytes", msg("get_manifest", cube=C1[:35]), CIDError),
    ("chunk cid of 37 bytes", msg("chunk", cid=C1 + b"\x00", data=b"x"), CIDError),
    ("chunks not a list", msg("get_chunks", cube=C1, chunks=C2), FormatError),
    ("chunk entry is a str", msg("get_chunks", cube=C1, chunks=[C2, "x"]), FormatError),
    ("chunk entry not a CID", msg("get_chunks", cube=C1, chunks=[C2, DAG_PB]), CIDError),
    ("duplicate chunk CIDs", msg("get_chunks", cube=C1, chunks=[C2, C3, C2]), FormatError),
    ("too many chunks", msg("get_chunks", cube=C1, chunks=[cid.cid_of(bytes([i])) for i in range(65)]), LimitError),
    ("empty chunk list", msg("get_chunks", cube=C1, chunks=[]), FormatError),
    ("empty chunk data", msg("chunk", cid=C1, data=b""), FormatError),
    ("chunk data over MAX_CHUNK_SIZE", msg("chunk", cid=C1, data=bytes(limits.MAX_CHUNK_SIZE + 1)), LimitError),
    ("empty manifest", msg("manifest", data=b""), FormatError),
    ("manifest over MAX_MANIFEST", msg("manifest", data=bytes(limits.MAX_MANIFEST + 1)), LimitError),
    ("have bits too long", msg("have", bits=bytes(wire.MAX_HAVE_BYTES + 1)), LimitError),
    ("have bits as a list", msg("have", bits=[True]), FormatError),
    ("error code not in the set", msg("error", code="teapot", message=""), FormatError),
    ("error code as bytes", msg("error", code=b"busy", message=""), FormatError),
    ("error message too long", msg("error", code="busy", message="x" * 513), LimitError),
    ("error message as bytes", msg("error", code="busy", message=b"x"), FormatError),
]


@pytest.mark.parametrize("value, exc", [pytest.param(v, e, id=n) for n, v, e in FORGED])
def test_forged_body(value, exc):
    with pytest.raises(exc) as info:
        decode_all(frame(canonical.encode(value)))
    assert type(info.value) is exc  # not a subclass: a CIDError must not pass as a LimitError
    with pytest.raises(exc):
        wire.validate(value)
    with pytest.raises(exc):
        wire.encode_frame(value)


GET = msg("get_manifest", cube=C1)
NON_CANONICAL = [
    ("unsorted keys", msgpack.packb({"t": "get_manifest", "id": 1, "cube": C1}, use_bin_type=True)),
    ("id 1 as uint32", raw_map(("cube", canonical.encode(C1)), ("id", b"\xce" + struct.pack(">I", 1)),
                               ("t", canonical.encode("get_manifest")))),
    ("map16 header", b"\xde\x00\x03" + canonical.encode(GET)[1:]),
    ("duplicate key", raw_map(("cube", canonical.encode(C1)), ("id", b"\x01"), ("id", b"\x01"),
                              ("t", canonical.encode("get_manifest")))),
    ("trailing byte after the map", canonical.encode(GET) + b"\x00"),
    ("float id", raw_map(("cube", canonical.encode(C1)), ("id", b"\xcb" + struct.pack(">d", 1.0)),
                         ("t", canonical.encode("get_manifest")))),
    ("nil cube", raw_map(("cube", b"\xc0"), ("id", b"\x01"), ("t", canonical.encode("get_manifest")))),
    ("truncated map", canonical.encode(GET)[:-3]),
    ("cube as bin16", raw_map(("cube", b"\xc5\x00\x24" + C1), ("id", b"\x01"),
                              ("t", canonical.encode("get_manifest")))),
]


@pytest.mark.parametrize("body", [pytest.param(b, id=n) for n, b in NON_CANONICAL])
def test_non_canonical_body(body):
    with pytest.raises(CanonicalError):
        decode_all(frame(body))


# -- chunk frames: the hand codec (memnet/net/chunk_frames.py) -------------------------------------


def fast_decode(body: bytes):
    """chunk_frames.decode as a typed message (None: the general decoder decides)."""
    got = chunk_frames.decode(memoryview(body))
    return None if got is None else wire.Chunk(id=got[0], cid=got[1], data=got[2])

CHUNK_IDS = [0, 1, 127, 128, 255, 256, 65535, 65536, wire.MAX_ID]
CHUNK_SIZES = [1, 255, 256, 65535, 65536, limits.MAX_CHUNK_SIZE]


@pytest.mark.parametrize("rid", CHUNK_IDS)
@pytest.mark.parametrize("size", CHUNK_SIZES)
def test_chunk_frame_is_the_canonical_encoding(rid, size):
    message = wire.chunk(rid, C2, bytes([size % 251]) * size)
    body = canonical.encode(message.to_map())
    assert wire.encode_frame(message) == frame(body)
    fast = fast_decode(body)
    assert fast == message == wire.from_map(canonical.decode(body, wire.MAX_FRAME))
    assert isinstance(fast.data, memoryview) and fast.data.readonly


def chunk_body(*, cid_value: bytes = C2, data: bytes = b"abc", rid: bytes = b"\x07",
               data_header: bytes | None = None) -> bytes:
    """A chunk map with fields in canonical order, each value given already encoded."""
    encoded = canonical.encode(data)
    header = encoded[:len(encoded) - len(data)] if data_header is None else data_header
    return raw_map(("cid", canonical.encode(cid_value)), ("data", header + data), ("id", rid),
                   ("t", canonical.encode("chunk")))


CHUNK_FORGED = [
    ("data length bin16 for 3 bytes", chunk_body(data_header=b"\xc5\x00\x03"), CanonicalError),
    ("data length bin32 for 300 bytes", chunk_body(data=bytes(300), data_header=b"\xc6\x00\x00\x01\x2c"),
     CanonicalError),
    ("id 7 as uint8", chunk_body(rid=b"\xcc\x07"), CanonicalError),
    ("id 200 as uint16", chunk_body(rid=b"\xcd\x00\xc8"), CanonicalError),
    ("id 2^32 as uint64", chunk_body(rid=b"\xcf" + struct.pack(">Q", 2**32)), FormatError),
    ("id 1 as uint64", chunk_body(rid=b"\xcf" + struct.pack(">Q", 1)), CanonicalError),
    ("negative id", chunk_body(rid=b"\xff"), FormatError),
    ("cid as bin16", raw_map(("cid", b"\xc5\x00\x24" + C2), ("data", canonical.encode(b"abc")),
                             ("id", b"\x07"), ("t", canonical.encode("chunk"))), CanonicalError),
    ("cid with dag-pb codec", chunk_body(cid_value=DAG_PB), CIDError),
    ("cid of 37 bytes", chunk_body(cid_value=C2 + b"\x00"), CIDError),
    ("empty data", chunk_body(data=b""), FormatError),
    ("data over MAX_CHUNK_SIZE", chunk_body(data=bytes(limits.MAX_CHUNK_SIZE + 1)), LimitError),
    ("length says more than there is", chunk_body(data_header=b"\xc4\x04"), CanonicalError),
    ("length says less than there is", chunk_body(data_header=b"\xc4\x02"), CanonicalError),
    ("trailing byte after the map", chunk_body() + b"\x00", CanonicalError),
    ("truncated after the data", chunk_body()[:-4], CanonicalError),
    ("type missing", raw_map(("cid", canonical.encode(C2)), ("data", canonical.encode(b"abc")),
                             ("id", b"\x07")), FormatError),
    ("type 'missing' with data", chunk_body()[:-6] + canonical.encode("missing"), FormatError),
    ("keys out of order", raw_map(("data", canonical.encode(b"abc")), ("cid", canonical.encode(C2)),
                                  ("id", b"\x07"), ("t", canonical.encode("chunk"))), CanonicalError),
    ("extra key", raw_map(("cid", canonical.encode(C2)), ("data", canonical.encode(b"abc")), ("id", b"\x07"),
                          ("s", b"\x01"), ("t", canonical.encode("chunk"))), FormatError),
]


@pytest.mark.parametrize("body, exc", [pytest.param(b, e, id=n) for n, b, e in CHUNK_FORGED])
def test_forged_chunk_body(body, exc):
    assert fast_decode(body) is None  # the general decoder decides
    with pytest.raises(exc) as info:
        decode_all(frame(body))
    assert type(info.value) is exc


def test_good_chunk_body_helper():
    assert chunk_body() == canonical.encode(wire.chunk(7, C2, b"abc").to_map())
    assert decode_all(frame(chunk_body())) == [wire.chunk(7, C2, b"abc")]


def test_oversized_chunk_frame_refused_before_the_body():
    data = wire.encode_frame(wire.chunk(1, C1, bytes(200)))
    with pytest.raises(LimitError):
        decode_all(data, max_frame=100)


def test_decoded_chunk_is_a_view_of_an_immutable_copy():
    fed = bytearray(wire.encode_frame(wire.chunk(1, C1, b"abc")))
    decoder = wire.FrameDecoder()
    decoder.feed(fed)
    fed[-12] ^= 0xFF  # a caller reusing its buffer must not change what was decoded
    message = decoder.next()
    assert message == wire.chunk(1, C1, b"abc") and message.data.readonly


def test_validate_python_values():
    assert wire.validate(dict(GET)) == GET
    for value in (None, (1, 2), {1: 2, "t": "missing"}, {"t": ["get_manifest"], "id": 1}):
        with pytest.raises(FormatError):
            wire.validate(value)
    with pytest.raises(FormatError):  # validate is strict: a tuple is not the list msgpack decodes to
        wire.validate(msg("get_chunks", cube=C1, chunks=(C2,)))
    with pytest.raises(FormatError):
        wire.validate(msg("chunk", cid=C1, data=bytearray(b"x")))
    assert wire.validate(msg("chunk", cid=C1, data=memoryview(b"x")))  # as decoded: a view
    with pytest.raises(FormatError):
        wire.validate(msg("manifest", data=memoryview(b"x")))
    assert wire.get_chunks(1, C1, (C2, C3)).chunks == [C2, C3]  # constructors take any sequence


def test_error_constructor_never_refuses_its_message():
    long = wire.error(7, "internal", "\u00e9" * 1000)
    assert long.message == "\u00e9" * wire.MAX_MESSAGE_TEXT
    surrogate = wire.error(7, "internal", "bad \udc80 text")
    assert surrogate.message == "bad ? text"
    assert decode_all(wire.encode_frame(surrogate)) == [surrogate]
    assert wire.error(1, "busy", ValueError("boom")).message == "boom"
    with pytest.raises(FormatError):
        wire.error(1, "nope", "x")


def test_encode_frame_limit(monkeypatch):
    monkeypatch.setattr(wire, "MAX_FRAME", 1000)
    wire.encode_frame(wire.chunk(1, C1, bytes(900)))
    with pytest.raises(LimitError):
        wire.encode_frame(wire.chunk(1, C1, bytes(1000)))


# -- bitfields ---------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, bits", [
    ([], b""),
    ([True], b"\x80"),
    ([False] * 7 + [True], b"\x01"),
    ([True, False, True, True, False, False, False, False, True], b"\xb0\x80"),
    ([True] * 16, b"\xff\xff"),
])
def test_bitfield(flags, bits):
    assert wire.bits_from_flags(flags) == bits
    assert wire.flags_from_bits(bits, len(flags)) == flags


@pytest.mark.parametrize("bits, n", [(b"", 1), (b"\x80", 0), (b"\x80\x00", 8), (b"\xff", 9)])
def test_bitfield_wrong_length(bits, n):
    with pytest.raises(FormatError, match="bytes for"):
        wire.flags_from_bits(bits, n)


@pytest.mark.parametrize("bits, n", [(b"\x40", 1), (b"\x81", 7), (b"\xff\x40", 9)])
def test_bitfield_padding_bits(bits, n):
    with pytest.raises(FormatError, match="padding"):
        wire.flags_from_bits(bits, n)


@given(st.lists(st.booleans(), max_size=300))
@SETTINGS
def test_bitfield_round_trip(flags):
    bits = wire.bits_from_flags(flags)
    assert len(bits) == -(-len(flags) // 8)
    assert wire.flags_from_bits(bits, len(flags)) == flags


# -- properties --------------------------------------------------------------------------------

ids = st.one_of(st.sampled_from([0, 1, 127, 128, wire.MAX_ID]), st.integers(0, wire.MAX_ID))
cids = st.binary(min_size=32, max_size=32).map(lambda digest: cid.PREFIX + digest)
blobs = st.binary(min_size=1, max_size=200)
messages = st.one_of(
    st.builds(wire.get_manifest, ids, cids),
    st.builds(wire.manifest, ids, blobs),
    st.builds(wire.get_chunks, ids, cids, st.lists(cids, min_size=1, max_size=wire.MAX_BATCH, unique=True)),
    st.builds(wire.chunk, ids, cids, blobs),
    st.builds(wire.missing, ids, cids),
    st.builds(wire.get_have, ids, cids),
    st.builds(wire.have, ids, st.lists(st.booleans(), max_size=80).map(wire.bits_from_flags)),
    st.builds(wire.error, ids, st.sampled_from(sorted(wire.ERROR_CODES)), st.text(max_size=600)),
)


def feed_in_pieces(data: bytes, cuts: list[int]) -> list[dict]:
    decoder, got, previous = wire.FrameDecoder(), [], 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}) + [len(data)]:
        decoder.feed(data[previous:cut])
        previous = cut
        while (message := decoder.next()) is not None:
            got.append(message)
    decoder.eof()
    return got


@given(st.lists(messages, min_size=1, max_size=4), st.lists(st.integers(0, 1 << 16), max_size=8))
@SETTINGS
def test_messages_round_trip_under_any_split(batch, cuts):
    data = b"".join(wire.encode_frame(m) for m in batch)
    assert feed_in_pieces(data, cuts) == batch


mutations = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 16), st.integers(1, 255)),
    st.tuples(st.just("set"), st.integers(0, 1 << 16), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 16), st.binary(min_size=1, max_size=4)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 16), st.integers(1, 4)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 16), st.none()),
)


def mutate(data: bytes, ops: list) -> bytes:
    out = bytearray(data)
    for op, where, arg in ops:
        at = where % (len(out) + 1)
        if op == "flip" and at < len(out):
            out[at] ^= arg
        elif op == "set" and at < len(out):
            out[at] = arg
        elif op == "insert":
            out[at:at] = arg
        elif op == "delete":
            del out[at:at + arg]
        elif op == "truncate":
            del out[at:]
    return bytes(out)


@given(st.lists(messages, min_size=1, max_size=2), st.lists(mutations, min_size=1, max_size=3),
       st.lists(st.integers(0, 1 << 16), max_size=4))
@SETTINGS
def test_mutated_frames_raise_only_memnet_errors(batch, ops, cuts):
    data = mutate(b"".join(wire.encode_frame(m) for m in batch), ops)
    try:
        for message in feed_in_pieces(data, cuts):
            assert wire.validate(message) is message
    except MemnetError:
        pass


@given(st.builds(wire.chunk, ids, cids, blobs), st.lists(mutations, min_size=1, max_size=3))
@SETTINGS
def test_chunk_fast_path_accepts_only_what_the_general_decoder_accepts(message, ops):
    body = mutate(canonical.encode(message.to_map()), ops)
    fast = fast_decode(body)
    if fast is not None:  # then the bytes are canonical and the message is valid: same answer
        assert fast == wire.from_map(canonical.decode(body, wire.MAX_FRAME))
        assert canonical.encode({**fast.to_map(), "data": bytes(fast.data)}) == body


def test_varint_encoding():
    assert [varint(n).hex() for n in (1, 127, 128, 300, 2**21 - 1, 2**21, wire.MAX_FRAME)] == \
        ["01", "7f", "8001", "ac02", "ffff7f", "80808001", "80808402"]


# -- get_prefix / cubes (longest cached prefix, docs/MIP.md §14.3, §17.1) ---------------------------

@pytest.mark.parametrize("message,error", [
    ({"t": "get_prefix", "id": 1, "key": bytes(31)}, FormatError),          # truncated key
    ({"t": "get_prefix", "id": 1, "key": bytes(33)}, FormatError),          # oversized key
    ({"t": "get_prefix", "id": 1, "key": "00" * 32}, FormatError),          # key as text
    ({"t": "get_prefix", "id": 1}, FormatError),                            # missing key
    ({"t": "get_prefix", "id": 1, "key": bytes(32), "n": 1}, FormatError),  # unknown field
    ({"t": "cubes", "id": 1, "cubes": C1}, FormatError),                    # not a list
    ({"t": "cubes", "id": 1, "cubes": [C1, C1]}, FormatError),              # listed twice
    ({"t": "cubes", "id": 1, "cubes": [DAG_PB]}, CIDError),                 # forged: not a raw CID
    ({"t": "cubes", "id": 1, "cubes": [C1[:-1]]}, CIDError),                # truncated CID
    ({"t": "cubes", "id": 1, "cubes": [cid.cid_of(bytes([i, 1])) for i in range(wire.MAX_PREFIX_CUBES + 1)]},
     LimitError),                                                          # oversized reply
])
def test_prefix_messages_refused(message, error):
    with pytest.raises(error):
        wire.validate(message)
    with pytest.raises(error):  # the same through the frame decoder
        decode_all(frame(canonical.encode(message)))


def test_prefix_reply_at_its_limit_round_trips():
    ids = [cid.cid_of(bytes([i])) for i in range(wire.MAX_PREFIX_CUBES)]
    message = wire.cubes(wire.MAX_ID, ids)
    assert decode_all(wire.encode_frame(message)) == [message]
