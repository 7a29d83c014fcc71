"""The store and model side of consolidation (decisions in consolidation.py): what memory sets
were used and how, distillation of one set into a LoRA cube behind a measured gate, demotion,
and the adapter `ask` may answer from.

Records tables (store.records), values canonical msgpack:
  set_members        memory set key -> {"members": [[cube id, item], ...], "adapters": bool}
                     (written by `ask` on each use: what the set is, for distilling it later)
  consolidation      memory set key -> {"state", "at", "reason", "accuracy" (per mille), "judged",
                     "parents": [cube id, ...], "uses_at", "last_used", "cpu_ms", ["adapter"]}
  consolidation_cpu  UTC day (u32be) -> {"cpu_ms"}: CPU spent distilling, against the day's budget

A distillation, for one memory set:
  1. questions: those asked of the set (the audit log keeps each ask's question), each in a few
     wordings, and one per note; some wordings and one question per note are held back;
  2. answers: the model's, with the notes in the prompt (the path the adapter must match);
  3. training: a LoRA on (question without notes -> that answer), plus (question about a note ->
     the note itself) (model/distill.py);
  4. the gate: the adapter alone, with no notes in the prompt, answers the held-back questions;
     each answer is judged by the reference answer's facts (consolidation.facts). It is published
     (unpinned, parents = the notes, meta.base_model = the model) only when it passes; otherwise
     it is discarded and the reason kept in the record and the log.
"""

from __future__ import annotations

import logging
import struct
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from memnet.config import ConsolidationSettings
from memnet.cube import canonical, cid
from memnet.cube.build import Cube
from memnet.errors import FormatError, NotFoundError, UsageError
from memnet.governance import audit, revocations
from memnet.governance.gate import Gate
from memnet.local import Publisher
from memnet.memory import index
from memnet.model import distill, generate, lora, perf
from memnet.model.loader import LoadedModel
from memnet.scheduler import consolidation as policy
from memnet.scheduler import lifecycle
from memnet.scheduler import plan as plan_mod
from memnet.scheduler.consolidation import GateResult, Record, SetFacts
from memnet.scheduler.policy import FINAL
from memnet.store import Store

log = logging.getLogger("memnet.consolidate")

MEMBERS_TABLE = "set_members"
TABLE = "consolidation"
CPU_TABLE = "consolidation_cpu"
MAX_RECORD = 16 * 1024
MAX_QUESTIONS = 6            # distinct asked questions a distillation uses (the newest)
ANSWER_TOKENS = 32           # tokens of each answer (references run 10-25; a bad adapter rambles to the cap)
TRAIN_WORDINGS = ("{q}", "Quick question: {q}", "Remind me: {q}", "{q} Answer briefly.")
HELD_WORDINGS = ("Do you happen to know this: {q}", "I forgot. {q}", "Tell me again: {q}")
NOTE_TRAIN = "What do my notes say about {topic}?"
NOTE_HELD = "What do you remember about {topic}?"
TAG = "consolidated"

Progress = Callable[[str, int, int], None]   # (stage, done, total)


# -- records ------------------------------------------------------------------------------------

def note_members(store: Store, set_key: bytes, members: Sequence[tuple[bytes, int]], adapters: bool) -> None:
    """Remember which items make a memory set (once: a set key names its members)."""
    if store.get_record(MEMBERS_TABLE, set_key) is None:
        value = {"members": [[c, i] for c, i in members], "adapters": adapters}
        store.put_records(MEMBERS_TABLE, [(set_key, canonical.encode(value))])


def members_of(store: Store, set_key: bytes) -> tuple[list[tuple[bytes, int]], bool] | None:
    raw = store.get_record(MEMBERS_TABLE, set_key)
    if raw is None:
        return None
    try:
        value = canonical.decode(raw, MAX_RECORD)
        members = [(cid.check_binary(c), i) for c, i in value["members"]]
        if not members or not all(_count(i) for _, i in members) or not isinstance(value["adapters"], bool):
            return None
        return members, value["adapters"]
    except (FormatError, TypeError, KeyError, ValueError):
        return None


def encode_record(r: Record, cpu_seconds: float = 0.0, apply_seconds: float = 0.0) -> bytes:
    value: dict[str, Any] = {"state": r.state, "at": r.at, "reason": r.reason[:500],
                             "accuracy": round(r.accuracy * 1000), "judged": r.judged, "parents": list(r.parents),
                             "uses_at": r.uses_at, "last_used": r.last_used, "cpu_ms": round(cpu_seconds * 1000),
                             "apply_ms": round(apply_seconds * 1000)}
    if r.adapter is not None:
        value["adapter"] = r.adapter
    return canonical.encode(value)


def decode_record(set_key: bytes, raw: bytes) -> tuple[Record, dict[str, Any]]:
    """(the record, its raw map); FormatError when it is not one."""
    value = canonical.decode(raw, MAX_RECORD)
    try:
        counts = [value[k] for k in ("at", "accuracy", "judged", "last_used", "uses_at", "cpu_ms", "apply_ms")]
        if (value["state"] not in policy.STATES or not all(_count(n) for n in counts) or value["accuracy"] > 1000
                or not isinstance(value["reason"], str) or not isinstance(value["parents"], list)):
            raise ValueError("a field out of range")
        adapter = value.get("adapter")
        record = Record(set_key, value["state"], value["at"], None if adapter is None else cid.check_binary(adapter),
                        value["accuracy"] / 1000, value["judged"], tuple(cid.check_binary(p) for p in value["parents"]),
                        value["last_used"], value["uses_at"], value["reason"])
    except (TypeError, KeyError, ValueError, FormatError) as exc:
        raise FormatError(f"malformed consolidation record: {exc}") from None
    return record, value


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def records(store: Store) -> dict[bytes, Record]:
    """Every readable consolidation record by set key (an unreadable one counts as none)."""
    out = {}
    for key, raw in store.records(TABLE):
        try:
            out[key] = decode_record(key, raw)[0]
        except FormatError:
            log.warning("unreadable consolidation record %s ignored", key.hex()[:12])
    return out


def record_of(store: Store, set_key: bytes) -> tuple[Record, dict[str, Any]] | None:
    raw = store.get_record(TABLE, set_key)
    if raw is None:
        return None
    try:
        return decode_record(set_key, raw)
    except FormatError:
        return None


def _put(store: Store, record: Record, raw: dict[str, Any] | None = None) -> None:
    raw = raw or {}
    store.put_records(TABLE, [(record.set_key, encode_record(record, raw.get("cpu_ms", 0) / 1000,
                                                             raw.get("apply_ms", 0) / 1000))])


def spent_today(store: Store, now: int | None = None) -> float:
    now = int(time.time()) if now is None else now
    raw = store.get_record(CPU_TABLE, struct.pack(">I", policy.day_of(now)))
    try:
        return int(canonical.decode(raw, 256)["cpu_ms"]) / 1000 if raw is not None else 0.0
    except (FormatError, TypeError, KeyError, ValueError):
        return 0.0


def add_cpu(store: Store, seconds: float, now: int | None = None) -> float:
    """Count CPU seconds spent distilling against today's budget; returns today's total."""
    now = int(time.time()) if now is None else now
    total = spent_today(store, now) + max(0.0, seconds)
    store.put_records(CPU_TABLE, [(struct.pack(">I", policy.day_of(now)),
                                   canonical.encode({"cpu_ms": round(total * 1000)}))])
    return total


# -- facts for the policy -----------------------------------------------------------------------

def notes_live(store: Store, cubes: Sequence[bytes]) -> bool:
    """Every note cube still stored, not revoked, not superseded or expired by an upkeep pass,
    and with no newer version of its name stored (checked here too: a new version counts from
    the moment it arrives, not from the next pass)."""
    states = lifecycle.state_names(store)
    now = int(time.time())
    for cube_id in cubes:
        if not store.has(cube_id) or states.get(cube_id) in FINAL or revocations.is_revoked(store, cube_id):
            return False
        m = store.manifest(cube_id)
        if m.expires is not None and now >= m.expires:
            return False
        if m.name is not None and m.version is not None:
            latest = store.latest(m.author, m.name)
            if latest is not None and latest[0] > m.version:
                return False
    return True


def _answers_by_set(store: Store) -> dict[bytes, dict[bytes, list[bytes]]]:
    """memory set key -> prompt digest -> the answer digests it got, one per ask (audit log).
    Answers given from an adapter are not counted: stability is about the notes path."""
    out: dict[bytes, dict[bytes, list[bytes]]] = defaultdict(lambda: defaultdict(list))
    for entry in audit.entries(store):
        extra = entry.get("extra") or {}
        key = extra.get("memory_set")
        if entry.get("kind") == "ask" and isinstance(key, bytes) and "adapter_way" not in extra:
            out[key][entry["prompt"]].append(entry["answer"])
    return out


def any_used(store: Store, uses: int) -> bool:
    """Whether some memory set has at least this many uses: a cheap test before set_facts,
    which reads the whole audit log."""
    return any(lifecycle.decode_usage(raw).count >= uses for _, raw in store.records(lifecycle.USAGE_TABLE))


def set_facts(store: Store) -> list[SetFacts]:
    """Every memory set with members on record, as the policy sees it. A prompt asked more than
    once is a repeat; it agrees when every answer it got was the same."""
    answers = _answers_by_set(store)
    out = []
    for key, raw in store.records(lifecycle.USAGE_TABLE):
        found = members_of(store, key)
        if found is None:
            continue
        members, adapters = found
        usage = lifecycle.decode_usage(raw)
        repeats = [set(got) for got in answers.get(key, {}).values() if len(got) > 1]
        cubes = tuple(dict.fromkeys(c for c, _ in members))
        out.append(SetFacts(key, usage.count, usage.last, repeated=len(repeats),
                            agreeing=sum(1 for got in repeats if len(got) == 1), notes=cubes,
                            notes_live=notes_live(store, cubes), with_adapters=adapters))
    return out


# -- distillation -------------------------------------------------------------------------------

@dataclass
class Material:
    """A memory set's notes and the questions asked of it."""

    set_key: bytes
    notes: list[plan_mod.Recalled]
    questions: list[str]
    uses: int

    @property
    def parents(self) -> tuple[bytes, ...]:
        return tuple(dict.fromkeys(n.cube_id for n in self.notes))

    @property
    def notes_text(self) -> str:
        return "\n".join(n.text for n in self.notes)


@dataclass
class Outcome:
    set_key: bytes
    gate: GateResult | None
    cube: Cube | None                 # the published adapter (None: discarded)
    record: Record
    cpu_seconds: float
    seconds: float
    pairs: int = 0
    held_back: int = 0
    loss: tuple[float, float] = (0.0, 0.0)
    examples: list[dict[str, Any]] = field(default_factory=list)   # held-back: question, reference, adapter, correct


def find_set(store: Store, prefix: str) -> bytes:
    """A memory set key from its hex (or a unique hex prefix of at least 6 digits)."""
    text = prefix.strip().lower()
    if len(text) < 6 or any(ch not in "0123456789abcdef" for ch in text):
        raise UsageError(f"{prefix!r} is not a memory set key (hex, at least 6 digits; see `memnet consolidate`)")
    found = [k for k, _ in store.records(MEMBERS_TABLE) if k.hex().startswith(text)]
    if not found:
        raise NotFoundError(f"no memory set {text} on record (sets are recorded when `memnet ask` uses them)")
    if len(found) > 1:
        raise UsageError(f"{text} names {len(found)} memory sets; give more digits")
    return found[0]


def material(publisher: Publisher, set_key: bytes) -> Material:
    """The set's notes (as `ask` lays them out) and its questions, newest first."""
    store = publisher.store
    found = members_of(store, set_key)
    if found is None:
        raise NotFoundError(f"no members on record for memory set {set_key.hex()[:12]}")
    notes = []
    for cube_id, item in found[0]:
        text = index.item_text(publisher, cube_id, item)
        notes.append(plan_mod.Recalled(cube_id, item, text, 1.0, store.manifest(cube_id).author))
    questions: list[str] = []
    for entry in reversed(audit.entries(store)):
        extra = entry.get("extra") or {}
        if entry.get("kind") == "ask" and extra.get("memory_set") == set_key:
            question = extra.get("question") or entry.get("preview")
            if isinstance(question, str) and question.strip() and question not in questions:
                questions.append(question)
        if len(questions) >= MAX_QUESTIONS:
            break
    return Material(set_key, plan_mod.in_layout_order(notes), questions, lifecycle.set_uses(store, set_key))


def topic(note: str, n: int = 4) -> str:
    """A note's first few content words: what a question about it names."""
    picked = [w for w in policy.words(note) if w not in policy.STOPWORDS][:n]
    return " ".join(picked) or note[:40]


def questions_of(m: Material) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """(training questions, held-back questions, (question about a note, the note)). Held back:
    other wordings of the asked questions, and a question about each note in another wording;
    none of them is trained on."""
    train = [w.format(q=q) for q in m.questions for w in TRAIN_WORDINGS]
    held = [w.format(q=q) for q in m.questions for w in HELD_WORDINGS]
    about = [(NOTE_TRAIN.format(topic=topic(n.text)), n.text) for n in m.notes]
    held += [NOTE_HELD.format(topic=topic(n.text)) for n in m.notes]
    return train, held, about


def _answer(store: Store, gate: Gate, book: perf.PerfBook, loaded: LoadedModel, ids: list[int]) -> generate.Generation:
    options = generate.Options(max_new_tokens=ANSWER_TOKENS, use_local=True, use_swarm=False, overlap=False)
    return generate.generate(store, gate, book, loaded, ids, options)


def _answer_ids(loaded: LoadedModel, text: str) -> list[int]:
    ids = list(loaded.tokenizer(text.strip(), add_special_tokens=False)["input_ids"])
    eos = loaded.tokenizer.eos_token_id
    return ids + ([eos] if eos is not None else [])


@dataclass
class Lesson:
    """What a distillation learns from and is judged on: the training pairs (question alone ->
    the notes path's answer) and the held-back questions with their reference answers' facts."""

    material: Material
    pairs: list[tuple[list[int], list[int]]]
    held: list[str]
    references: list[str]
    wanted: list[set[str]]
    cpu_seconds: float
    seconds: float


def distil(publisher: Publisher, gate: Gate, book: perf.PerfBook, loaded: LoadedModel, set_key: bytes,
           config: ConsolidationSettings, *, progress: Progress | None = None, now: int | None = None,
           seed: int = 0) -> Outcome:
    """Distil one memory set into a LoRA cube behind the gate (the module doc's four steps);
    records the outcome and the CPU spent. Refuses (UsageError) a set whose notes are gone or
    changed, and a day whose budget is spent."""
    lesson = collect(publisher, gate, book, loaded, set_key, config, progress=progress, now=now)
    return train_and_judge(publisher, gate, book, loaded, lesson, config, progress=progress, now=now, seed=seed)


def collect(publisher: Publisher, gate: Gate, book: perf.PerfBook, loaded: LoadedModel, set_key: bytes,
            config: ConsolidationSettings, *, progress: Progress | None = None, now: int | None = None) -> Lesson:
    """Steps 1 and 2: the questions, and the model's answers with the notes in the prompt."""
    from memnet.scheduler.ask import prompt_ids, question_ids

    store = publisher.store
    say = progress or (lambda stage, done, total: None)
    spent = spent_today(store, now)
    if spent >= config.cpu_budget_per_day:
        raise UsageError(f"today's consolidation CPU budget is spent ({spent:.0f}/{config.cpu_budget_per_day:.0f} s; "
                         "raise consolidation.cpu_budget_per_day)")
    m = material(publisher, set_key)
    if not notes_live(store, m.parents):
        raise UsageError(f"memory set {set_key.hex()[:12]}: a note is gone or has a newer version")
    cpu0, wall0 = time.process_time(), time.perf_counter()
    system = plan_mod.system_text(m.notes)
    train_qs, held_qs, about = questions_of(m)
    pairs, total = [], len(train_qs) + len(held_qs)
    for done, question in enumerate(train_qs, 1):
        reference = _answer(store, gate, book, loaded, prompt_ids(loaded, system, question)[1]).text
        pairs.append((question_ids(loaded, question), _answer_ids(loaded, reference)))
        say("answers", done, total)
    pairs += [(question_ids(loaded, q), _answer_ids(loaded, note)) for q, note in about]
    references = []
    for done, question in enumerate(held_qs, len(train_qs) + 1):
        references.append(_answer(store, gate, book, loaded, prompt_ids(loaded, system, question)[1]).text)
        say("answers", done, total)
    wanted = [policy.facts(r, m.notes_text, q) for q, r in zip(held_qs, references)]
    return Lesson(m, pairs, held_qs, references, wanted, time.process_time() - cpu0, time.perf_counter() - wall0)


def train_and_judge(publisher: Publisher, gate: Gate, book: perf.PerfBook, loaded: LoadedModel, lesson: Lesson,
                    config: ConsolidationSettings, *, progress: Progress | None = None, now: int | None = None,
                    seed: int = 0) -> Outcome:
    """Steps 3 and 4: train, judge on the held-back questions, publish or discard, record. The
    CPU and time counted are the lesson's and this step's (a lesson may be trained on twice: tests
    and benchmarks compare training settings on the same answers)."""
    from memnet.scheduler.ask import question_ids

    store, m, wanted = publisher.store, lesson.material, lesson.wanted
    say = progress or (lambda stage, done, total: None)
    cpu0, wall0 = time.process_time() - lesson.cpu_seconds, time.perf_counter() - lesson.seconds
    pairs, held = len(lesson.pairs), len(lesson.held)
    hopeless = policy.gate([(bool(w), True) for w in wanted], config)
    if not hopeless.passed:   # even a perfect adapter would fail: the notes path itself does not answer
        return _finish(publisher, loaded, m, config, hopeless, None, cpu0, wall0, pairs, held, now, (0.0, 0.0), [], 0.0)
    trained = distill.train_pairs(store, gate, loaded, lesson.pairs, steps=config.steps, rank=config.rank, seed=seed,
                                  progress=lambda step, steps, loss: say("training", step, steps))
    judged, examples = [], []
    mark = time.perf_counter()
    with lora.trial(store, gate, loaded, trained.payload, trained.meta):
        apply_seconds = time.perf_counter() - mark
        for done, (question, reference, facts) in enumerate(zip(lesson.held, lesson.references, wanted), 1):
            answer = _answer(store, gate, book, loaded, question_ids(loaded, question)).text
            verdict = (bool(facts), policy.states_facts(answer, facts, config))
            judged.append(verdict)
            examples.append({"question": question, "reference": reference, "adapter": answer,
                             "facts": sorted(facts), "judged": verdict[0], "correct": verdict[1]})
            say("gate", done, held)
    return _finish(publisher, loaded, m, config, policy.gate(judged, config), trained, cpu0, wall0, pairs, held, now,
                   (trained.loss_before, trained.loss_after), examples, apply_seconds)


def _finish(publisher: Publisher, loaded: LoadedModel, m: Material, config: ConsolidationSettings, result: GateResult,
            trained: distill.Trained | None, cpu0: float, wall0: float, pairs: int, held: int, now: int | None,
            loss: tuple[float, float], examples: list[dict[str, Any]], apply_seconds: float) -> Outcome:
    """Publish the adapter if it passed, else discard it; record either, and count the CPU."""
    store, set_key = publisher.store, m.set_key
    now = int(time.time()) if now is None else now
    cpu = time.process_time() - cpu0
    cube = None
    if result.passed and trained is not None:
        cube = publisher.publish(
            "parameter", trained.payload, trained.meta, pin=False, parents=m.parents, tags=(TAG,),
            description=(f"memory set {set_key.hex()[:12]} consolidated into a rank-{config.rank} LoRA for "
                         f"{loaded.pinned.name} ({loaded.pinned.short}): {len(m.notes)} notes, "
                         f"{pairs} pairs, gate {result.correct}/{result.judged}"))
        record = Record(set_key, policy.ACTIVE, now, cube.cube_id, result.accuracy, result.judged, m.parents,
                        0, m.uses, result.reason)
        log.info("consolidated memory set %s into %s: %s", set_key.hex()[:12], cid.to_text(cube.cube_id), result.reason)
    else:
        record = Record(set_key, policy.DISCARDED, now, None, result.accuracy, result.judged, m.parents,
                        0, m.uses, result.reason)
        log.info("discarded the adapter for memory set %s: %s", set_key.hex()[:12], result.reason)
    _put(store, record, {"cpu_ms": cpu * 1000, "apply_ms": apply_seconds * 1000})
    add_cpu(store, cpu, now)
    return Outcome(set_key, result, cube, record, cpu, time.perf_counter() - wall0, pairs, held, loss, examples)


# -- demotion, and the adapter `ask` may use ----------------------------------------------------

def upkeep(store: Store, config: ConsolidationSettings, now: int | None = None) -> list[policy.Transition]:
    """Archive unused adapters and supersede those whose notes changed (consolidation.demotions)."""
    now = int(time.time()) if now is None else now
    found = records(store)
    live = {key: notes_live(store, r.parents) and (r.adapter is None or store.has(r.adapter))
            for key, r in found.items()}
    changes = policy.demotions(found.values(), live, now, config)
    for t in changes:
        old, raw = record_of(store, t.set_key) or (found[t.set_key], {})
        _put(store, replace(old, state=t.new_state, at=now, reason=t.reason), raw)
        log.info("consolidated adapter of memory set %s is now %s (%s)", t.set_key.hex()[:12], t.new_state, t.reason)
    return changes


@dataclass(frozen=True)
class Usable:
    adapter: bytes
    accuracy: float
    judged: int
    apply_seconds: float


def usable(store: Store, set_key: bytes) -> Usable | None:
    """The memory set's adapter when `ask` may answer from it: active, stored, and every parent
    note still current (checked now, not only at upkeep: stale facts are never used)."""
    found = record_of(store, set_key)
    if found is None:
        return None
    r, raw = found
    if r.state != policy.ACTIVE or r.adapter is None or not store.has(r.adapter) or not notes_live(store, r.parents):
        return None
    return Usable(r.adapter, r.accuracy, r.judged, raw.get("apply_ms", 0) / 1000)


def mark_used(store: Store, set_key: bytes, now: int | None = None) -> None:
    found = record_of(store, set_key)
    if found is None:
        return
    r, raw = found
    now = int(time.time()) if now is None else now
    _put(store, replace(r, last_used=now), raw)


def candidates(store: Store, config: ConsolidationSettings, now: int | None = None) -> list[policy.Verdict]:
    now = int(time.time()) if now is None else now
    return policy.verdicts(set_facts(store), records(store), spent_today(store, now), config, now)


def record_stopped(store: Store, set_key: bytes, why: str, cpu_seconds: float, now: int | None = None) -> None:
    """A distillation that did not finish (stopped at the CPU budget, cancelled, failed): its CPU
    counts, and the set waits retry_after like a discarded one."""
    now = int(time.time()) if now is None else now
    found = members_of(store, set_key)
    parents = tuple(dict.fromkeys(c for c, _ in found[0])) if found else ()
    _put(store, Record(set_key, policy.DISCARDED, now, None, 0.0, 0, parents, 0,
                       lifecycle.set_uses(store, set_key), f"stopped: {why}"), {"cpu_ms": cpu_seconds * 1000})
    add_cpu(store, cpu_seconds, now)
