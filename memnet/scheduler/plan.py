"""What one request will use, and why: the scheduler's per-request decisions, pure.

A request (`memnet ask`) recalls plaintext memories, keeps the ones worth their prompt space,
lays them out in a stable order (so the same memory set always gives the same token prefix, and
a KV cube of that prefix is reused by the next request with the same set), and takes the KV
cube and LoRA cubes the I/O side found. Nothing here reads the store, the network or the model:
ask.py gathers the facts, these functions decide, and a simulator can call them with made-up
facts (tests/test_ask.py does).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from memnet.config import AskSettings
from memnet.cube import cid
from memnet.render import human_size

LAYOUT_VERSION = 1
HEADER = ("You are a helpful assistant. Answer the user's question in a few sentences. "
          "These notes from your memory may help; ignore the ones that do not apply.\n\nNotes:")


@dataclass(frozen=True)
class Recalled:
    cube_id: bytes
    item: int
    text: str
    score: float
    author: bytes


@dataclass(frozen=True)
class KvFacts:
    """The cached prefix the I/O side found (generate.choose_prefix), as plain facts."""

    cube_id: bytes | None = None
    source: str = "none"            # none | local | peer
    usable: int = 0
    dtype: str | None = None
    size: int = 0
    fetch: bool = False
    saved_estimate: float | None = None
    cost_estimate: float | None = None
    decision: str = ""


@dataclass
class Plan:
    question: str
    memories: list[Recalled]
    skipped: list[tuple[Recalled, str]]
    set_key: bytes | None
    prefix_tokens: int = 0
    prompt_tokens: int = 0
    kv: KvFacts = field(default_factory=KvFacts)
    loras: list[tuple[bytes, float]] = field(default_factory=list)
    uses: int = 0                   # uses of this memory set, this one included
    promote: bool = False
    promote_reason: str = ""
    prefill_estimate: float | None = None  # seconds to prefill the whole prompt with no reuse
    way: str = "notes"              # notes | kv | adapter: how the memory set reaches the answer
    way_reason: str = ""
    consolidated: bytes | None = None       # the memory set's consolidated adapter, if any
    consolidated_accuracy: float = 0.0

    def explain(self) -> list[str]:
        """The plan as lines a person can check: each choice with its reason and estimated cost."""
        lines = [f"plan for {_quote(self.question, 70)}"]
        if self.memories:
            lines.append(f"  memories  {len(self.memories)} used, in layout order:")
            for m in self.memories:
                lines.append(f"    {m.score:.2f}  {_short(m.cube_id)}:{m.item}  {_quote(m.text, 60)}")
        else:
            lines.append("  memories  none used")
        for m, why in self.skipped:
            lines.append(f"    skip {m.score:.2f}  {_short(m.cube_id)}:{m.item}  {why}")
        if self.set_key is not None:
            lines.append(f"  prompt    {self.prompt_tokens} tokens: {self.prefix_tokens} memory prefix "
                         f"(set {self.set_key.hex()[:12]}, use {self.uses}) + "
                         f"{self.prompt_tokens - self.prefix_tokens} question")
        else:
            lines.append(f"  prompt    {self.prompt_tokens} tokens, no memory prefix")
        lines.append("  kv        " + self._kv_line())
        if self.consolidated is not None:
            lines.append(f"  adapter   {_short(self.consolidated)} (consolidated, {self.consolidated_accuracy:.0%} by its gate): "
                         + ("answering from it, with the question alone" if self.way == "adapter" else "not used"))
        if self.set_key is not None:
            lines.append(f"  way       {self.way}: {self.way_reason}")
        if self.loras:
            lines.append("  lora      " + ", ".join(f"{_short(c)} ×{w:g}" for c, w in self.loras))
        else:
            lines.append("  lora      none")
        lines.append(("  promote   yes: " if self.promote else "  promote   no: ") + self.promote_reason)
        return lines

    def _kv_line(self) -> str:
        kv = self.kv
        full = f"full prefill ≈ {_secs(self.prefill_estimate)}"
        if kv.cube_id is None:
            return f"none cached; {full}" + (f" ({kv.decision})" if kv.decision else "")
        where = "local store" if kv.source == "local" else "fetch from a peer"
        cost = f"{'fetch+load' if kv.fetch else 'load'} ≈ {_secs(kv.cost_estimate)}"
        return (f"{_short(kv.cube_id)} ({where}, {kv.dtype}, {human_size(kv.size)}): reuse "
                f"{kv.usable}/{self.prompt_tokens} tokens; {cost} vs prefill of them ≈ "
                f"{_secs(kv.saved_estimate)}" + (f"; {kv.decision}" if kv.decision else ""))


def choose_memories(hits: Sequence[Recalled], settings: AskSettings) -> tuple[list[Recalled], list[tuple[Recalled, str]]]:
    """The recalled items worth their prompt space: best first, at least min_score, within the
    character budget. Returns (chosen, skipped with the reason)."""
    chosen: list[Recalled] = []
    skipped: list[tuple[Recalled, str]] = []
    used = 0
    for hit in sorted(hits, key=lambda h: -h.score):
        if hit.score < settings.min_score:
            skipped.append((hit, f"score below {settings.min_score:g}"))
        elif used + len(hit.text) > settings.max_memory_chars:
            skipped.append((hit, f"over the prompt budget of {settings.max_memory_chars} characters"))
        else:
            chosen.append(hit)
            used += len(hit.text)
    return chosen, skipped


def in_layout_order(memories: Sequence[Recalled]) -> list[Recalled]:
    """A memory set's one order (by cube id, then item), whatever the recall scores were."""
    return sorted(memories, key=lambda m: (m.cube_id, m.item))


def system_text(memories: Sequence[Recalled]) -> str:
    """The system message: a fixed header, then each note on its own line, in layout order."""
    notes = "\n".join("- " + " ".join(m.text.split()) for m in in_layout_order(memories))
    return f"{HEADER}\n{notes}"


def set_key(model: bytes, adapter: bytes | None, memories: Sequence[Recalled]) -> bytes:
    """sha256 naming a memory set under a model, adapter set and layout version: the key usage is
    counted under (promotion), independent of recall order and scores."""
    h = hashlib.sha256(b"memnet/memory-set/v1\x00")
    h.update(struct.pack(">I", LAYOUT_VERSION) + model + (adapter or b"\x00" * 32))
    for m in in_layout_order(memories):
        h.update(m.cube_id + struct.pack(">I", m.item))
    return h.digest()


def promotion(uses: int, settings: AskSettings, prefix_tokens: int, kv: KvFacts) -> tuple[bool, str]:
    """Whether to build a KV cube of this memory set's prefix after answering, and why. A set
    whose cube was evicted is promoted again on its next use: it is still hot."""
    if prefix_tokens == 0:
        return False, "no memory prefix"
    if kv.cube_id is not None and kv.usable >= prefix_tokens:
        return False, f"a KV cube already covers the {prefix_tokens}-token memory prefix"
    if prefix_tokens < settings.min_promote_tokens:
        return False, f"a {prefix_tokens}-token prefix is cheaper to recompute than to cache"
    if uses < settings.promote_after:
        return False, f"memory set used {uses}/{settings.promote_after} times"
    return True, f"memory set used {uses} times (threshold {settings.promote_after}): its {prefix_tokens}-token " \
                 "prefix becomes an activation cube"


def _short(cube_id: bytes) -> str:
    return "…" + cid.to_text(cube_id)[-10:]


def _quote(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return '"' + (flat if len(flat) <= limit else flat[:limit - 1] + "…") + '"'


def _secs(value: float | None) -> str:
    if value is None:
        return "? (not measured yet)"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"
