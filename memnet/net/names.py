"""Name records in the libp2p DHT: the record validator and a local replay high-water mark.

The daemon builds its KadDHT with validator=validator(), validator_changed=True and
strict_validation=True, so the DHT stores and returns only valid memnet name records under
"/memnet-name/..." keys and revocations under "/memnet-revoke/..." keys (revocation_records.py),
and refuses every other key.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from libp2p.records.validator import NamespacedValidator

from memnet.cube import name_record
from memnet.cube import revocation
from memnet.cube.name_record import NAMESPACE, NameRecord
from memnet.errors import PolicyError
from memnet.net.record_validator import SignedRecordValidator
from memnet.net.revocation_records import RevocationValidator


class NameValidator(SignedRecordValidator):
    """libp2p Validator for the "memnet-name" namespace (expiry checked against clock)."""

    what = "memnet name record"

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock

    def decode(self, key: str, value: bytes) -> NameRecord:
        return name_record.decode(value, key=key, now=int(self._clock()))

    def best(self, records: list[NameRecord]) -> int:
        return name_record.best(records)


def validator(clock: Callable[[], float] = time.time) -> NamespacedValidator:
    """A strict NamespacedValidator that knows only memnet's namespaces: names and revocations."""
    return NamespacedValidator({NAMESPACE: NameValidator(clock), revocation.NAMESPACE: RevocationValidator()},
                               strict_validation=True)


class SeenSequences:
    """Highest seq accepted per DHT key, so a lower one is never accepted again (in memory)."""

    def __init__(self) -> None:
        self._highest: dict[str, int] = {}

    def highest(self, key: str) -> int | None:
        return self._highest.get(key)

    def check_and_update(self, record: NameRecord) -> None:
        """PolicyError if record's seq is below one already accepted for its key; else remember it."""
        key = record.key
        seen = self._highest.get(key)
        if seen is not None and record.seq < seen:
            raise PolicyError(f"name record seq {record.seq} is older than seq {seen} already seen")
        self._highest[key] = record.seq if seen is None else max(seen, record.seq)

    def __len__(self) -> int:
        return len(self._highest)
