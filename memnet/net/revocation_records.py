"""Revocations in the libp2p DHT (docs/MIP.md §20): the record validator and the lookup.

The validator accepts under "/memnet-revoke/<hex>" only a well-signed revocation whose own
(author, cube) key is that key, so nobody but a cube's author can place a record where fetchers
look for that cube's withdrawal. Whether the author is really the cube's is checked by the node
that knows the manifest (memnet.governance.revocations.accept).
"""

from __future__ import annotations

import logging

from memnet.cube import revocation
from memnet.cube.revocation import Revocation
from memnet.errors import MemnetError
from memnet.net.discovery import Discovery
from memnet.net.record_validator import SignedRecordValidator

log = logging.getLogger("memnet.revocation")


class RevocationValidator(SignedRecordValidator):
    what = "memnet revocation"

    def decode(self, key: str, value: bytes) -> Revocation:
        return revocation.decode(value, key=key)

    def best(self, records: list[Revocation]) -> int:
        return revocation.best(records)


async def find(discovery: Discovery, author: bytes, cube_id: bytes) -> bytes | None:
    """A valid revocation of cube_id by author from this node or the k closest peers, or None."""
    key = revocation.dht_key(author, cube_id)
    for value in await discovery.get_values(key):
        try:
            record = revocation.decode(value, key=key)
            revocation.check_author(record, cube_id, author)
            return record.encode()
        except MemnetError as exc:  # forged or misplaced: the DHT validators should have kept it out
            log.info("ignoring a bad revocation under %s: %s", key, exc)
    return None


async def publish(discovery: Discovery, record: bytes) -> None:
    parsed = revocation.decode(record)
    await discovery.put_value(parsed.key, record, "revocation")
