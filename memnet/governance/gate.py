"""One place that decides whether this node may fetch, pin or inject a given cube: the trust
policy (whose cubes) and the revocations in the store (which cubes). It remembers what it refused
and why, so generation can say why it ran a full prefill."""

from __future__ import annotations

from memnet.cube import cid
from memnet.cube.manifest import Manifest
from memnet.errors import PolicyError
from memnet.governance import revocations
from memnet.governance.trust import TrustPolicy
from memnet.store.lmdb_store import Store


class Gate:
    def __init__(self, store: Store, policy: TrustPolicy, self_author: bytes):
        self.store, self.policy, self.self_author = store, policy, self_author
        self.refused: dict[bytes, str] = {}  # cube id -> why, in the order refused

    def refusal(self, action: str, cube_id: bytes, author: bytes) -> str | None:
        """Why action on this cube is refused, or None if it is allowed."""
        record = revocations.stored(self.store, cube_id)
        if record is not None:
            return f"cube {cid.to_text(cube_id)} was revoked by its author" + \
                (f" ({record.reason})" if record.reason else "")
        if not self.policy.allows(action, author, self.self_author):
            return f"cube {cid.to_text(cube_id)}: {self.policy.reason(action, author, self.self_author)}"
        return None

    def allows(self, action: str, cube_id: bytes, author: bytes) -> bool:
        why = self.refusal(action, cube_id, author)
        if why is not None:
            self.refused.setdefault(cube_id, why)
        return why is None

    def check(self, action: str, cube_id: bytes, author: bytes) -> None:
        why = self.refusal(action, cube_id, author)
        if why is not None:
            raise PolicyError(why)

    def usable(self, cube_id: bytes, manifest: Manifest, local: bool) -> bool:
        """For generation: a cube may be injected, and a peer's cube also fetched."""
        return (local or self.allows("fetch", cube_id, manifest.author)) and \
            self.allows("inject", cube_id, manifest.author)

    def summary(self) -> str:
        """The refusals as one line ("" if none)."""
        if not self.refused:
            return ""
        reasons = list(self.refused.values())
        more = f" (and {len(reasons) - 2} more)" if len(reasons) > 2 else ""
        return "not used: " + "; ".join(reasons[:2]) + more
