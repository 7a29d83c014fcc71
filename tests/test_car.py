"""CARv1 archives of cubes (memnet/cube/car.py): round trips checked with independent parsers
(libipld for the DAG-CBOR header, multiformats for every block's CID), then every way an archive
can be truncated, corrupted or malformed — each refused with ArchiveError and nothing else."""

from __future__ import annotations

import io

import cbor2
import libipld
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multiformats import CID, multihash, varint

from memnet.cube import build, car, cid, limits
from memnet.errors import ArchiveError, FormatError
from tests import factories

BIG = 1 << 30


@pytest.fixture(scope="module")
def one():
    return factories.plaintext_cube(texts=("y" * 2500, "z" * 700), chunk_size=1024)


@pytest.fixture(scope="module")
def several():
    # two cubes over the same payload (different tags, so different manifests) share every chunk
    a = factories.plaintext_cube(texts=("shared " * 400,), chunk_size=1024, tags=("a",))
    b = factories.plaintext_cube(texts=("shared " * 400,), chunk_size=1024, tags=("b",))
    return [a, b, factories.parameter_cube(), factories.activation_cube()]


def archive_bytes(cubes) -> bytes:
    buffer = io.BytesIO()
    written = car.write(buffer, cubes)
    data = buffer.getvalue()
    assert written == len(data)
    return data


def read(data: bytes, max_total: int = BIG) -> car.Archive:
    return car.read(io.BytesIO(data), max_total)


def refused(data: bytes, phrase: str | None = None, max_total: int = BIG) -> ArchiveError:
    with pytest.raises(ArchiveError) as info:
        read(data, max_total)
    if phrase is not None:
        assert phrase in str(info.value), str(info.value)
    assert "\n" not in str(info.value)
    return info.value


def split_blocks(data: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """An independent CARv1 parse with multiformats' varint: (header bytes, [(cid, data)])."""
    view = memoryview(data)
    length, n, _ = varint.decode_raw(view)
    header = bytes(view[n:n + length])
    position = n + length
    blocks = []
    while position < len(data):
        length, n, _ = varint.decode_raw(view[position:])
        body = bytes(view[position + n:position + n + length])
        c = CID.decode(body[:36])  # only raw sha2-256 CIDv1 (36 bytes) are expected
        blocks.append((bytes(c), body[36:]))
        position += n + length
    return header, blocks


def block_offsets(data: bytes) -> list[tuple[int, int, int]]:
    """(start of the length varint, start of the CID, end) of every block."""
    view = memoryview(data)
    length, n, _ = varint.decode_raw(view)
    position = n + length
    out = []
    while position < len(data):
        length, n, _ = varint.decode_raw(view[position:])
        out.append((position, position + n, position + n + length))
        position += n + length
    return out


def rebuild(header: bytes, blocks: list[tuple[bytes, bytes]]) -> bytes:
    out = car.encode_varint(len(header)) + header
    for c, body in blocks:
        out += car.encode_varint(len(c) + len(body)) + c + body
    return out


def header_of(roots, version=1, **extra) -> bytes:
    links = [cbor2.CBORTag(42, b"\x00" + r) for r in roots]
    return cbor2.dumps({"roots": links, "version": version, **extra}, canonical=True)


# -- round trips -----------------------------------------------------------------------------------

def test_round_trip_one_cube(one):
    data = archive_bytes([one])
    archive = read(data)
    assert archive.roots == [one.cube_id]
    expected = {one.cube_id: one.manifest_bytes, **{c: bytes(v) for c, v in one.chunks.items()}}
    assert archive.blocks == expected
    again = build.verify(archive.blocks[one.cube_id], one.cube_id, archive.blocks.get)
    assert again.payload() == one.payload()
    # the manifest block comes first, right after the header
    _, blocks = split_blocks(data)
    assert blocks[0] == (one.cube_id, one.manifest_bytes)


def test_round_trip_several_cubes_shares_chunks(several):
    data = archive_bytes(several)
    archive = read(data)
    assert archive.roots == [c.cube_id for c in several]
    distinct = {c.cube_id for c in several} | {k for c in several for k in c.manifest.chunks}
    assert set(archive.blocks) == distinct
    _, blocks = split_blocks(data)
    assert len(blocks) == len(distinct)  # shared chunks written once
    assert several[0].manifest.chunks == several[1].manifest.chunks
    for cube in several:
        again = build.verify(archive.blocks[cube.cube_id], cube.cube_id, archive.blocks.get)
        assert again.payload() == cube.payload()
    # writing the same cube twice keeps its root and every block once
    twice = read(archive_bytes([several[0], several[0]]))
    assert twice.roots == [several[0].cube_id]
    assert len(twice.blocks) == 1 + len(set(several[0].manifest.chunks))


def test_header_is_dag_cbor(several):
    data = archive_bytes(several)
    header, _ = split_blocks(data)
    decoded = libipld.decode_dag_cbor(header)
    assert decoded["version"] == 1
    assert set(decoded) == {"roots", "version"}
    assert [bytes(r) for r in decoded["roots"]] == [c.cube_id for c in several]
    assert header == car.encode_header([c.cube_id for c in several])


def test_every_block_cid_checks_with_multiformats(several):
    _, blocks = split_blocks(archive_bytes(several))
    for block_cid, body in blocks:
        c = CID.decode(block_cid)
        assert (c.version, c.codec.name, c.hashfun.name) == (1, "raw", "sha2-256")
        assert c.digest == multihash.digest(body, "sha2-256")
        assert str(c.set(base="base32")) == cid.to_text(block_cid)


def test_varint_round_trip():
    for value in (0, 1, 127, 128, 255, 300, 16383, 16384, 2**32, 2**63 - 1):
        encoded = car.encode_varint(value)
        assert encoded == varint.encode(value)
        assert car.read_varint(io.BytesIO(encoded), "x") == value
    assert car.read_varint(io.BytesIO(b""), "x") is None


# -- truncation ------------------------------------------------------------------------------------

def test_empty_input():
    refused(b"", "archive is empty")


def test_truncation_at_every_cut_point(one):
    data = archive_bytes([one])
    offsets = block_offsets(data)
    manifest_end = offsets[0][2]
    clean_ends = {end for _, _, end in offsets[1:-1]}  # between chunk blocks, after the root
    parsed = []
    for cut in range(len(data)):
        try:
            archive = read(data[:cut])
        except ArchiveError:
            assert cut not in clean_ends
            continue
        parsed.append(cut)
        # a CAR has no length or block count: a cut exactly between blocks, once the root block is
        # in, is a well-formed shorter archive. The cube check then finds the missing chunks.
        assert cut in clean_ends or cut == manifest_end, cut
        with pytest.raises(FormatError, match="is missing"):
            build.verify(archive.blocks[one.cube_id], one.cube_id, archive.blocks.get)
    assert sorted(parsed) == sorted(clean_ends | {manifest_end})
    assert len(parsed) >= 3


def test_cut_before_the_root_block(one):
    data = archive_bytes([one])
    refused(data[:block_offsets(data)[0][0]], "lacks its root block")


# -- corrupt blocks --------------------------------------------------------------------------------

def flip(data: bytes, index: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[index] ^= mask
    return bytes(out)


def test_flipped_byte_in_a_chunk_block(one):
    data = archive_bytes([one])
    offsets = block_offsets(data)
    for _, cid_start, end in offsets:
        for index in (cid_start + 36, (cid_start + 36 + end) // 2, end - 1):
            refused(flip(data, index), "does not match its CID")


def test_flipped_byte_in_a_cid(one):
    data = archive_bytes([one])
    _, cid_start, _ = block_offsets(data)[1]
    for i in range(36):
        err = refused(flip(data, cid_start + i))
        assert "not a CIDv1" in str(err) or "does not match" in str(err)


def test_unsupported_cid_codec_in_a_block(one):
    header, blocks = split_blocks(archive_bytes([one]))
    for codec in (0x71, 0x70, 0x0129):  # dag-cbor, dag-pb, dag-json
        c, body = blocks[1]
        other = bytes(CID("base32", 1, codec, multihash.digest(body, "sha2-256")))
        refused(rebuild(header, [blocks[0], (other, body)] + blocks[2:]), "not a CIDv1 of a raw sha2-256")
    # another hash function changes the CID length, so the digest no longer lines up
    c, body = blocks[1]
    sha512 = bytes(CID("base32", 1, "raw", multihash.digest(body, "sha2-512")))
    refused(rebuild(header, [blocks[0], (sha512, body)] + blocks[2:]))


def test_duplicate_block(one):
    header, blocks = split_blocks(archive_bytes([one]))
    refused(rebuild(header, blocks + [blocks[1]]), "repeats")
    refused(rebuild(header, [blocks[0], blocks[0]] + blocks[1:]), "repeats")


@pytest.mark.parametrize("length, phrase", [
    (0, "out of range"),
    (1, "out of range"),
    (cid.CID_LEN, "out of range"),              # a CID with no data
    (car.MAX_BLOCK + 1, "out of range"),
    (2**63, "out of range"),
])
def test_block_length_out_of_range(one, length, phrase):
    header, blocks = split_blocks(archive_bytes([one]))
    base = rebuild(header, blocks[:1])
    refused(base + car.encode_varint(length) + b"\x00" * 64, phrase)


def test_block_length_longer_than_what_follows(one):
    header, blocks = split_blocks(archive_bytes([one]))
    base = rebuild(header, blocks)
    refused(base + car.encode_varint(100) + blocks[1][0] + b"x" * 10, "truncated")


def test_varint_too_long(one):
    data = archive_bytes([one])
    refused(b"\x80" * 10 + b"\x01", "varint too long")
    refused(b"\xff" * 11, "varint too long")
    header, blocks = split_blocks(data)
    refused(rebuild(header, blocks[:1]) + b"\x80" * 10 + b"\x01", "varint too long")


def test_varint_non_minimal(one):
    header, blocks = split_blocks(archive_bytes([one]))
    n = len(header)
    assert n < 128
    refused(bytes([0x80 | n, 0x00]) + header, "non-minimal varint")
    refused(bytes([0x80 | n, 0x80, 0x00]) + header, "non-minimal varint")
    body = blocks[0][0] + blocks[0][1]
    padded_len = car.encode_varint(len(body))[:-1] + bytes([car.encode_varint(len(body))[-1] | 0x80, 0x00])
    refused(car.encode_varint(n) + header + padded_len + body, "non-minimal varint")


def test_varint_truncated():
    refused(b"\x80", "truncated inside the length")


# -- header ----------------------------------------------------------------------------------------

def with_header(one, header: bytes) -> bytes:
    _, blocks = split_blocks(archive_bytes([one]))
    return rebuild(header, blocks)


@pytest.mark.parametrize("header", [b"\xff", b"\x1c", b"\xa1", b"\x5f\x41", b"\x9b" + b"\xff" * 8])
def test_header_not_cbor(one, header):
    refused(with_header(one, header), "not CBOR")


def test_header_version_2(one):
    refused(with_header(one, header_of([one.cube_id], version=2)), "CAR version 2 is not supported")
    refused(with_header(one, header_of([one.cube_id], version="1")), "not supported")


def test_header_version_true_or_float_is_not_canonical(one):
    # True == 1.0 == 1 in Python, but the bytes differ from the canonical header
    refused(with_header(one, header_of([one.cube_id], version=True)), "not canonical")
    refused(with_header(one, header_of([one.cube_id], version=1.0)), "not canonical")


def test_header_with_extra_key(one):
    refused(with_header(one, header_of([one.cube_id], extra=1)), "exactly roots and version")
    refused(with_header(one, cbor2.dumps({"version": 1})), "exactly roots and version")
    refused(with_header(one, cbor2.dumps([1, 2])), "exactly roots and version")


def test_header_roots_malformed(one):
    refused(with_header(one, header_of([])), "between 1 and 1024 roots")
    refused(with_header(one, cbor2.dumps({"roots": one.cube_id, "version": 1}, canonical=True)), "roots")
    plain = cbor2.dumps({"roots": [b"\x00" + one.cube_id], "version": 1}, canonical=True)
    refused(with_header(one, plain), "not a CID link")
    no_prefix = cbor2.dumps({"roots": [cbor2.CBORTag(42, one.cube_id)], "version": 1}, canonical=True)
    refused(with_header(one, no_prefix), "not a CID link")
    dag_cbor = bytes(CID("base32", 1, "dag-cbor", multihash.digest(b"x", "sha2-256")))
    refused(with_header(one, header_of([dag_cbor])), "archive root")
    refused(with_header(one, header_of([one.cube_id] * (car.MAX_ROOTS + 1))), "between 1 and 1024")


def test_header_not_canonical(one):
    links = [cbor2.CBORTag(42, b"\x00" + one.cube_id)]
    reordered = cbor2.dumps({"version": 1, "roots": links})  # not length-first key order
    assert reordered != header_of([one.cube_id])
    refused(with_header(one, reordered), "not canonical")
    refused(with_header(one, header_of([one.cube_id]) + b"\x00"), "not canonical")


def test_header_length_out_of_range(one):
    _, blocks = split_blocks(archive_bytes([one]))
    refused(b"\x00" + rebuild(b"", blocks)[1:], "header length 0")
    refused(car.encode_varint(car.MAX_HEADER + 1) + b"\xa0" * 10, "out of range")


def test_header_truncated(one):
    header = header_of([one.cube_id])
    refused(car.encode_varint(len(header)) + header[:-1], "truncated")


def test_root_missing_from_blocks(one, several):
    other = several[2].cube_id
    refused(with_header(one, header_of([one.cube_id, other])), "lacks its root block")
    refused(with_header(one, header_of([other])), "lacks its root block")


def test_max_total(several):
    data = archive_bytes(several)
    header, blocks = split_blocks(data)
    total = sum(36 + len(body) for _, body in blocks)
    assert read(data, max_total=total).roots == [c.cube_id for c in several]
    refused(data, f"more than {total - 1} bytes", max_total=total - 1)
    refused(data, "more than 100 bytes", max_total=100)


# -- fuzz: whatever the bytes, only ArchiveError ---------------------------------------------------

@pytest.fixture(scope="module")
def small_archive():
    return archive_bytes([factories.plaintext_cube(texts=("fuzz",))])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutations_raise_only_archive_error(small_archive, data):
    mutated = bytearray(small_archive)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "set", "insert", "delete"]))
        i = data.draw(st.integers(0, len(mutated) - 1))
        if op == "flip":
            mutated[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set":
            mutated[i] = data.draw(st.integers(0, 255))
        elif op == "insert":
            mutated[i:i] = data.draw(st.binary(min_size=1, max_size=8))
        elif len(mutated) > 1:
            del mutated[i]
    try:
        archive = read(bytes(mutated))
    except ArchiveError:
        return
    # anything that does parse holds only blocks that hash to their CIDs
    for block_cid, body in archive.blocks.items():
        cid.verify_block(block_cid, body)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_archive_error(data):
    with pytest.raises(ArchiveError):
        read(data)


def test_max_block_allows_the_largest_manifest_and_chunk():
    assert car.MAX_BLOCK >= limits.MAX_MANIFEST + cid.CID_LEN
    assert car.MAX_BLOCK >= limits.MAX_CHUNK_SIZE + cid.CID_LEN


def test_header_with_a_root_twice_is_refused(several):
    root = several[0].cube_id
    header = cbor2.dumps({"roots": [cbor2.CBORTag(42, b"\x00" + root)] * 2, "version": 1}, canonical=True)
    with pytest.raises(ArchiveError, match="root twice"):
        car._parse_header(header)
