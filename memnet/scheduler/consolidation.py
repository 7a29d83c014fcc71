"""Consolidation decisions, pure: which memory sets become parameter (LoRA) cubes, whether a
trained adapter passes its gate, when an adapter is demoted or superseded, and which of the three
ways to bring a memory set into an answer `ask` takes.

MemOS moves memory by use: plaintext used often becomes activation memory (promotion, plan.py),
and what is used most becomes parameters. Like policy.py, nothing here reads a store, a clock or
a model: consolidate.py gathers the facts, these functions decide, and a simulator can drive them.

The fact judge: an answer is judged by the facts it states, not by its wording. A reference
answer's facts are its words that come from the notes and not from the question (numbers, names,
places: "tangerine-42", "Friday", "basement"); an answer is correct when it states at least
fact_recall of them. A reference that states none of the notes' facts did not answer from them,
so its question is not judged at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from memnet.config import ConsolidationSettings
from memnet.scheduler.policy import ago

# record states of a consolidated memory set
ACTIVE, ARCHIVED, SUPERSEDED, DISCARDED = "active", "archived", "superseded", "discarded"
STATES = (ACTIVE, ARCHIVED, SUPERSEDED, DISCARDED)
NOTES, KV, ADAPTER = "notes", "kv", "adapter"   # the three ways to bring a memory set

_WORD = re.compile(r"[0-9a-z]+(?:[-'.,:][0-9a-z]+)*")
_CASED = re.compile(r"[0-9A-Za-z]+(?:[-'.,:][0-9A-Za-z]+)*")
STOPWORDS = frozenset("""a about above after again all also am an and any are as at be because been before
being below between both but by can could did do does doing down during each few for from further had has
have having he her here hers him his how i if in into is it its itself just me more most my no nor not
now of off on once only or other our out over own same she should so some such than that the their them
then there these they this those through to too under until up very was we were what when where which
while who whom why will with would you your yours yes please note notes remember memory tell know""".split())


@dataclass(frozen=True)
class SetFacts:
    """What the policy knows of one memory set, from the usage table and the audit log."""

    set_key: bytes
    uses: int
    last_used: int
    repeated: int = 0          # distinct questions asked more than once
    agreeing: int = 0          # of those, how many always got the same answer
    notes: tuple[bytes, ...] = ()
    notes_live: bool = True    # every note still stored and neither superseded nor expired
    with_adapters: bool = False  # asked with LoRA cubes applied: not consolidated


@dataclass(frozen=True)
class Record:
    """A memory set's consolidation record (consolidate.py keeps them in the store)."""

    set_key: bytes
    state: str
    at: int                            # when the state was entered
    adapter: bytes | None = None
    accuracy: float = 0.0
    judged: int = 0
    parents: tuple[bytes, ...] = ()
    last_used: int = 0
    uses_at: int = 0                   # the set's uses when it was distilled
    reason: str = ""


@dataclass(frozen=True)
class Verdict:
    set_key: bytes
    candidate: bool
    reason: str


@dataclass(frozen=True)
class Transition:
    set_key: bytes
    new_state: str
    reason: str


@dataclass(frozen=True)
class GateResult:
    passed: bool
    accuracy: float        # of the judged questions, the share the adapter answered
    judged: int            # held-back questions the notes path answered (the denominator)
    correct: int
    reason: str


@dataclass(frozen=True)
class PathOption:
    way: str                    # notes | kv | adapter
    seconds: float | None       # estimated time to the first token
    accuracy: float = 1.0       # the notes path is the reference; an adapter has its gate's figure
    note: str = ""


@dataclass(frozen=True)
class PathChoice:
    way: str
    reason: str
    options: list[PathOption] = field(default_factory=list)


# -- candidates ---------------------------------------------------------------------------------

def stable(s: SetFacts, config: ConsolidationSettings) -> bool:
    """Answers are stable when repeated questions got the same answer (greedy decoding gives the
    same one unless the notes or the model changed); with no repeat yet, nothing contradicts it."""
    return s.repeated == 0 or s.agreeing >= config.stable_fraction * s.repeated


def verdicts(sets: Iterable[SetFacts], records: dict[bytes, Record], spent_today: float,
             config: ConsolidationSettings, now: int) -> list[Verdict]:
    """Every memory set with whether it is a candidate now and why, most used first. The budget
    and the adapter cap apply to all: over them, no set is a candidate."""
    active = sum(1 for r in records.values() if r.state == ACTIVE)
    out = []
    for s in sorted(sets, key=lambda s: (-s.uses, s.set_key)):
        out.append(Verdict(s.set_key, *_one(s, records.get(s.set_key), active, spent_today, config, now)))
    return out


def _one(s: SetFacts, record: Record | None, active: int, spent: float, config: ConsolidationSettings,
         now: int) -> tuple[bool, str]:
    if record is not None and record.state == ACTIVE:
        return False, "already consolidated"
    if record is not None and record.state == DISCARDED and now - record.at < config.retry_after:
        return False, f"failed its gate {ago(now - record.at)} ago ({record.reason}); retried after {ago(config.retry_after)}"
    if s.with_adapters:
        return False, "asked with LoRA cubes applied"
    if not s.notes or not s.notes_live:
        return False, "its notes are gone or have a newer version"
    if s.uses < config.after_uses:
        return False, f"used {s.uses}/{config.after_uses} times"
    if not stable(s, config):
        return False, f"answers not stable: {s.agreeing} of {s.repeated} repeated questions got the same answer"
    if active >= config.max_adapters:
        return False, f"the cap of {config.max_adapters} consolidated adapters is reached"
    if spent >= config.cpu_budget_per_day:
        return False, f"today's CPU budget is spent ({spent:.0f}/{config.cpu_budget_per_day:.0f} s)"
    return True, f"used {s.uses} times (threshold {config.after_uses}), answers stable"


def next_candidate(sets: Iterable[SetFacts], records: dict[bytes, Record], spent_today: float,
                   config: ConsolidationSettings, now: int) -> bytes | None:
    """The memory set to distil next (the most used candidate), or None."""
    if not config.enabled:
        return None
    return next((v.set_key for v in verdicts(sets, records, spent_today, config, now) if v.candidate), None)


def remaining_cpu(spent_today: float, config: ConsolidationSettings) -> float:
    return max(0.0, config.cpu_budget_per_day - spent_today)


def day_of(now: int) -> int:
    """The UTC day a CPU second is counted in."""
    return now // 86400


# -- demotion and supersession ------------------------------------------------------------------

def demotions(records: Iterable[Record], parents_live: dict[bytes, bool], now: int,
              config: ConsolidationSettings) -> list[Transition]:
    """Active adapters that must stop being used: superseded when a parent note is gone or has a
    newer version (never answer from stale facts), archived when unused for archive_after;
    an archived adapter whose notes changed is superseded too. parents_live: set key -> whether
    all its parent notes are still current."""
    out = []
    for r in sorted(records, key=lambda r: r.set_key):
        if r.state not in (ACTIVE, ARCHIVED):
            continue
        if not parents_live.get(r.set_key, False):
            out.append(Transition(r.set_key, SUPERSEDED, "a parent note is gone or has a newer version"))
        elif r.state == ACTIVE and config.archive_after is not None and now - (r.last_used or r.at) > config.archive_after:
            out.append(Transition(r.set_key, ARCHIVED, f"unused for {ago(now - (r.last_used or r.at))}"))
    return out


# -- the gate -----------------------------------------------------------------------------------

def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def facts(reference: str, notes: str, question: str) -> set[str]:
    """The facts a reference answer states: its words found in the notes, not in the question,
    and not stopwords. When some of them are distinctive (hold a digit, or are names: written
    capitalised inside a sentence of the notes), only those count: "Heron" and "tangerine-42"
    are the facts of "The office wifi network is Heron; its password is tangerine-42", not
    "network"."""
    from_notes, asked = set(words(notes)), set(words(question))
    found = {w for w in words(reference) if w in from_notes and w not in asked and w not in STOPWORDS}
    names = _names(notes)
    distinctive = {w for w in found if any(ch.isdigit() for ch in w) or w in names}
    return distinctive or found


def _names(notes: str) -> set[str]:
    """Words the notes write capitalised other than at the start of a sentence or line."""
    out = set()
    for match in _CASED.finditer(notes):
        before = notes[:match.start()].rstrip(" \t\"'(")
        if match.group()[0].isupper() and before and before[-1] not in ".!?\n:-*":
            out.add(match.group().lower())
    return out


def states_facts(answer: str, wanted: set[str], config: ConsolidationSettings) -> bool:
    """Whether an answer states at least fact_recall of the wanted facts."""
    if not wanted:
        return False
    said = set(words(answer))
    return len(wanted & said) >= config.fact_recall * len(wanted)


def gate(judged: Sequence[tuple[bool, bool]], config: ConsolidationSettings) -> GateResult:
    """judged: per held-back question (notes path correct, adapter alone correct). The adapter
    passes when it answers at least gate_accuracy of the questions the notes path answers, over
    at least min_judged of them (gate_accuracy 0 with min_judged 0: no gate at all)."""
    reference = [adapter for notes, adapter in judged if notes]
    n, correct = len(reference), sum(reference)
    accuracy = correct / n if n else 0.0
    if n < config.min_judged or (n == 0 and config.gate_accuracy > 0):
        return GateResult(False, accuracy, n, correct,
                          f"the notes path answered only {n} of {len(judged)} held-back questions "
                          f"(at least {max(1, config.min_judged)} needed to judge)")
    if accuracy + 1e-9 < config.gate_accuracy:
        return GateResult(False, accuracy, n, correct, f"answered {correct} of {n} held-back questions "
                          f"({accuracy:.0%}) without the notes; the gate is {config.gate_accuracy:.0%}")
    return GateResult(True, accuracy, n, correct, f"answered {correct} of {n} held-back questions ({accuracy:.0%}) "
                      f"without the notes; the gate is {config.gate_accuracy:.0%}")


# -- use ----------------------------------------------------------------------------------------

def choose_path(options: Sequence[PathOption], config: ConsolidationSettings) -> PathChoice:
    """The fastest way whose accuracy is good enough. The notes in the prompt are the reference
    (always allowed); a KV cube of the same prefix gives the same answer; an adapter alone is
    allowed when its gate accuracy is at least use_accuracy. Unmeasured costs lose to measured
    ones, except that the notes path is the fallback."""
    allowed = [o for o in options if o.way != ADAPTER or o.accuracy + 1e-9 >= config.use_accuracy]
    refused = [o for o in options if o not in allowed]
    timed = [o for o in allowed if o.seconds is not None]
    best = min(timed, key=lambda o: (o.seconds, o.way != NOTES)) if timed else \
        next((o for o in allowed if o.way == NOTES), allowed[0])
    parts = [f"{o.way} ≈ {_secs(o.seconds)}" + (f" ({o.accuracy:.0%} by its gate)" if o.way == ADAPTER else "")
             for o in options]
    reason = f"{best.way} is the fastest allowed: " + ", ".join(parts)
    for o in refused:
        reason += f"; adapter not used: its gate accuracy {o.accuracy:.0%} is below {config.use_accuracy:.0%}"
    return PathChoice(best.way, reason, list(options))


def _secs(value: float | None) -> str:
    if value is None:
        return "?"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"
