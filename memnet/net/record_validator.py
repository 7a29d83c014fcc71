"""The libp2p Validator shape shared by memnet's signed DHT records (names, revocations).

Invalid records raise InvalidRecordType, the exception libp2p's own validators raise; KadDHT
then refuses the PUT_VALUE and drops the GET_VALUE candidate. Invalid values never win select.
"""

from __future__ import annotations

from typing import Any

from libp2p.records.utils import InvalidRecordType
from libp2p.records.validator import Validator

from memnet.errors import MemnetError


class SignedRecordValidator(Validator):
    what = "memnet record"

    def decode(self, key: str, value: bytes) -> Any:
        """The parsed record; MemnetError if it is not valid under key."""
        raise NotImplementedError

    def best(self, records: list[Any]) -> int:
        """Index of the record to keep among valid ones."""
        raise NotImplementedError

    def _decode(self, key: str, value: bytes) -> Any:
        try:
            return self.decode(key, value)
        except MemnetError as exc:
            raise InvalidRecordType(f"invalid {self.what}: {exc}") from None

    def validate(self, key: str, value: bytes) -> None:
        self._decode(key, value)

    def select(self, key: str, values: list[bytes]) -> int:
        """Index of the best valid value; InvalidRecordType if none is valid."""
        valid: list[tuple[int, Any]] = []
        for index, value in enumerate(values):
            try:
                valid.append((index, self._decode(key, value)))
            except InvalidRecordType:
                continue
        if not valid:
            raise InvalidRecordType(f"none of {len(values)} {self.what}s is valid")
        return valid[self.best([record for _, record in valid])][0]
