"""CARv1 archives (the IPFS content-addressed archive format) of whole cubes.

Layout: varint(len) DAG-CBOR header {"roots": [CID...], "version": 1}, then for each block
varint(len(cid)+len(data)) cid data. memnet writes one root per cube (the manifest's CID), then
the manifest block, then each distinct chunk, so `ipfs dag import` or any CAR tool can read and
check every block. Reading is strict: bounded lengths, only raw sha2-256 CIDv1 blocks, every
block hashed against its CID, no duplicates, no truncation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

import cbor2

from memnet.cube import cid, limits
from memnet.cube.build import Cube
from memnet.errors import ArchiveError, CIDError

MAX_HEADER = 64 * 1024
CID_TAG = 42
MAX_ROOTS = 1024
MAX_BLOCK = max(limits.MAX_MANIFEST, limits.MAX_CHUNK_SIZE) + cid.CID_LEN


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_varint(stream: BinaryIO, what: str) -> int | None:
    """Read an unsigned LEB128 varint; None at a clean end of stream."""
    value, shift = 0, 0
    for position in range(10):
        byte = stream.read(1)
        if not byte:
            if position == 0:
                return None
            raise ArchiveError(f"archive truncated inside the length of {what}")
        value |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            if position > 0 and byte[0] == 0:
                raise ArchiveError(f"non-minimal varint in the length of {what}")
            return value
        shift += 7
    raise ArchiveError(f"varint too long in the length of {what}")


def _read_exact(stream: BinaryIO, n: int, what: str) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise ArchiveError(f"archive truncated: {what} needs {n} bytes, only {len(data)} remain")
    return data


def write(stream: BinaryIO, cubes: Iterable[Cube]) -> int:
    """Write cubes as one CARv1 archive; returns the number of bytes written."""
    cubes = list({c.cube_id: c for c in cubes}.values())  # each root once, in first-seen order
    header = encode_header([c.cube_id for c in cubes])
    written = stream.write(encode_varint(len(header)) + header)
    seen: set[bytes] = set()
    for cube in cubes:
        blocks = [(cube.cube_id, cube.manifest_bytes)]
        blocks += [(c, cube.chunks[c]) for c in cube.manifest.chunks]
        for block_cid, data in blocks:
            if block_cid in seen:
                continue
            seen.add(block_cid)
            written += stream.write(encode_varint(len(block_cid) + len(data)) + block_cid)
            written += stream.write(data)
    return written


def encode_header(roots: list[bytes]) -> bytes:
    # DAG-CBOR: a CID link is tag 42 over 0x00 + binary CID; canonical map key order
    links = [cbor2.CBORTag(CID_TAG, b"\x00" + root) for root in roots]
    return cbor2.dumps({"roots": links, "version": 1}, canonical=True)


@dataclass
class Archive:
    roots: list[bytes]
    blocks: dict[bytes, bytes]


def read(stream: BinaryIO, max_total: int) -> Archive:
    """Parse a CARv1 archive of at most max_total bytes of blocks, verifying every block."""
    header_len = read_varint(stream, "the header")
    if header_len is None:
        raise ArchiveError("archive is empty")
    if header_len == 0 or header_len > MAX_HEADER:
        raise ArchiveError(f"archive header length {header_len} is out of range")
    roots = _parse_header(_read_exact(stream, header_len, "the header"))
    blocks: dict[bytes, bytes] = {}
    total = 0
    while True:
        index = len(blocks)
        length = read_varint(stream, f"block {index}")
        if length is None:
            break
        if length <= cid.CID_LEN or length > MAX_BLOCK:
            raise ArchiveError(f"block {index} length {length} is out of range")
        total += length
        if total > max_total:
            raise ArchiveError(f"archive holds more than {max_total} bytes")
        body = _read_exact(stream, length, f"block {index}")
        block_cid, data = body[:cid.CID_LEN], body[cid.CID_LEN:]
        try:
            cid.check_binary(block_cid)
            cid.verify_block(block_cid, data)
        except CIDError as exc:
            raise ArchiveError(f"block {index}: {exc}") from None
        if block_cid in blocks:
            raise ArchiveError(f"block {index} repeats {cid.to_text(block_cid)}")
        blocks[block_cid] = data
    missing = [r for r in roots if r not in blocks]
    if missing:
        raise ArchiveError(f"archive lacks its root block {cid.to_text(missing[0])}")
    return Archive(roots, blocks)


def _parse_header(raw: bytes) -> list[bytes]:
    try:
        header = cbor2.loads(raw)
    except (cbor2.CBORDecodeError, ValueError, RecursionError) as exc:
        raise ArchiveError(f"archive header is not CBOR: {exc}") from None
    if not isinstance(header, dict) or set(header) != {"roots", "version"}:
        raise ArchiveError("archive header must hold exactly roots and version")
    if header["version"] != 1:
        raise ArchiveError(f"CAR version {header['version']!r} is not supported (only 1)")
    roots = header["roots"]
    if not isinstance(roots, list) or not roots or len(roots) > MAX_ROOTS:
        raise ArchiveError("archive header must list between 1 and 1024 roots")
    result = []
    for root in roots:
        if not (isinstance(root, cbor2.CBORTag) and root.tag == CID_TAG and isinstance(root.value, bytes)
                and root.value[:1] == b"\x00"):
            raise ArchiveError("archive root is not a CID link")
        try:
            result.append(cid.check_binary(root.value[1:]))
        except CIDError as exc:
            raise ArchiveError(f"archive root: {exc}") from None
    if len(set(result)) != len(result):
        raise ArchiveError("archive header lists a root twice")
    if encode_header(result) != raw:
        raise ArchiveError("archive header is not canonical DAG-CBOR")
    return result
