"""The trust policy: whose cubes this node fetches, pins and injects without being asked.

Config (config.json "trust"), one list of entries per action; an entry is "self" (this node's
own key), "*" (anyone) or a PeerID:

    "trust": {"fetch": ["*"], "pin": ["self"], "inject": ["self"]}

Defaults, and why:
- fetch "*": fetched bytes are verified (hash, signature, payload) before they are stored, and
  storing a cube runs nothing; discovery is what the swarm is for.
- pin "self": a pin keeps a cube and makes this node serve it to everyone; serving someone else's
  memory should be a decision, not a side effect of having once used it.
- inject "self": a KV cache, a LoRA or a plaintext memory in the prompt steers the model's answer,
  and its prefix keys are only the author's word (MIP §9); a stranger's cube must not reach the
  model until the user trusts its author.

Pure: no I/O. memnet/config parses the "trust" object into a TrustPolicy (checks.trust) and
writes it back (`memnet trust add` sets the "trust" setting).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from memnet.cube import keys
from memnet.errors import FormatError, UsageError

ACTIONS = ("fetch", "pin", "inject")
SELF, ANYONE = "self", "*"
DEFAULTS: dict[str, tuple[str, ...]] = {"fetch": (ANYONE,), "pin": (SELF,), "inject": (SELF,)}
MAX_ENTRIES = 1024  # per action: a config, not a database


def check_entry(text: str) -> str:
    """"self", "*" or a PeerID (normalised); UsageError naming the bad entry otherwise."""
    if not isinstance(text, str):
        raise UsageError(f"a trust entry must be a string, not {type(text).__name__}")
    entry = text.strip()
    if entry in (SELF, ANYONE):
        return entry
    try:
        keys.author_from_peer_id(entry)
    except FormatError:
        raise UsageError(f"not a PeerID (nor \"self\" or \"*\"): {text[:80]!r}") from None
    return entry


def parse_actions(text: str | Iterable[str]) -> tuple[str, ...]:
    """"fetch,pin" -> ("fetch", "pin"), in ACTIONS order; UsageError for an unknown action."""
    items = text.split(",") if isinstance(text, str) else list(text)
    wanted = {item.strip() for item in items if item.strip()}
    unknown = sorted(wanted - set(ACTIONS))
    if unknown or not wanted:
        raise UsageError(f"actions must be among {', '.join(ACTIONS)}, got {', '.join(unknown) or 'none'}")
    return tuple(a for a in ACTIONS if a in wanted)


@dataclass(frozen=True)
class TrustPolicy:
    fetch: tuple[str, ...] = DEFAULTS["fetch"]
    pin: tuple[str, ...] = DEFAULTS["pin"]
    inject: tuple[str, ...] = DEFAULTS["inject"]

    def to_config(self) -> dict[str, list[str]]:
        return {action: list(self.entries(action)) for action in ACTIONS}

    def entries(self, action: str) -> tuple[str, ...]:
        if action not in ACTIONS:
            raise ValueError(f"unknown trust action {action!r}")
        return getattr(self, action)

    def _match(self, action: str, author: bytes, self_author: bytes | None) -> str | None:
        """The entry that lets author do action, or None."""
        entries = self.entries(action)
        if ANYONE in entries:
            return ANYONE
        if self_author is not None and author == self_author and SELF in entries:
            return SELF
        if len(author) == keys.PUBLIC_KEY_LEN and keys.peer_id(author) in entries:
            return keys.peer_id(author)
        return None

    def allows(self, action: str, author: bytes, self_author: bytes) -> bool:
        """Whether cubes by author may be used for action ("fetch", "pin" or "inject")."""
        return self._match(action, author, self_author) is not None

    def reason(self, action: str, author: bytes, self_author: bytes | None = None) -> str:
        """One line saying why author may or may not be used for action."""
        who = _who(author, self_author)
        entry = self._match(action, author, self_author)
        listed = ", ".join(self.entries(action)) or "nobody"
        if entry == ANYONE:
            return f"{action}: allowed for anyone (trust.{action} has \"*\")"
        if entry is not None:
            return f"{action}: {who} is trusted (trust.{action} lists {entry!r})"
        hint = f"; `memnet trust add {keys.peer_id(author)} --for {action}` allows it" \
            if len(author) == keys.PUBLIC_KEY_LEN else ""
        return f"{action}: author {who} is not trusted (trust.{action}: {listed}){hint}"

    def add(self, entry: str, actions: Iterable[str]) -> TrustPolicy:
        entry = check_entry(entry)
        lists = self.to_config()
        for action in parse_actions(actions):
            if entry not in lists[action]:
                lists[action].append(entry)
        return TrustPolicy(**{a: tuple(v) for a, v in lists.items()})

    def remove(self, entry: str, actions: Iterable[str] = ACTIONS) -> TrustPolicy:
        entry = check_entry(entry)
        lists = self.to_config()
        for action in parse_actions(actions):
            lists[action] = [e for e in lists[action] if e != entry]
        return TrustPolicy(**{a: tuple(v) for a, v in lists.items()})


def _who(author: bytes, self_author: bytes | None) -> str:
    if self_author is not None and author == self_author:
        return "self"
    if len(author) == keys.PUBLIC_KEY_LEN:
        return keys.peer_id(author)
    return f"<{len(author)}-byte key>"
