"""`memnet ask`: recall memories, plan, answer with the pinned model, record, promote.

The I/O side of the scheduler: it gathers the facts (recall, the KV cube lookup and its
fetch-or-recompute decision, the memory set's use count), lets plan.py decide, runs the plan,
and writes down what went into the answer (audit log) and how often each memory set was used
(promotion). A memory set used promote_after times gets an activation cube of its prompt prefix,
cut from the cache the answer just computed when that cache is exact (no second prefill).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from memnet.config import AskSettings, ConsolidationSettings
from memnet.cube.build import Cube
from memnet.errors import UsageError
from memnet.governance import audit
from memnet.governance.gate import Gate
from memnet.local import Publisher
from memnet.memory import index
from memnet.model import generate, kv, lora, perf
from memnet.model.loader import LoadedModel
from memnet.scheduler import consolidate, lifecycle, policy
from memnet.scheduler import consolidation as consolidation_policy
from memnet.scheduler.consolidation import ADAPTER, KV, NOTES
from memnet.scheduler import plan as plan_mod
from memnet.scheduler.plan import KvFacts, Plan, Recalled
from memnet.store import Store

MAX_QUESTION = 1000   # characters of a question the audit log keeps (consolidation trains on them)
ADAPTER_SYSTEM = "Answer from what you remember."


@dataclass
class Answer:
    plan: Plan
    generation: generate.Generation | None   # None for a plan-only (dry) run
    promoted: Cube | None = None
    promote_seconds: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.generation.text if self.generation else ""


def memory_filter(store: Store, gate: Gate):
    """Memories that may go into a prompt: not expired or superseded here, and by an author the
    trust policy lets this node inject (revoked cubes are refused by the gate)."""
    states = lifecycle.state_names(store)

    def accept(cube_id: bytes, manifest: Any) -> bool:
        if states.get(cube_id) in policy.FINAL:
            return False
        return gate.allows("inject", cube_id, manifest.author)

    return accept


def ask(publisher: Publisher, gate: Gate, book: perf.PerfBook, loaded: LoadedModel, question: str, *,
        settings: AskSettings, adapter: bytes | None = None, loras: list[tuple[bytes, float]] | None = None,
        swarm: generate.Swarm | None = None, max_new_tokens: int = 96, use_kv: bool = True,
        promote: bool = True, promote_dtype: str = "float32", dry_run: bool = False,
        consolidation: ConsolidationSettings | None = None, way: str = "auto") -> Answer:
    """Answer a question from recalled memories. publisher: this node's store and key (memories
    are read, promoted cubes published with it); gate: what may be injected; book: measured
    costs. consolidation: the node's settings (None: no adapter way); way: auto (the plan
    chooses), or notes / adapter to force one (benchmarks; a missing adapter falls back)."""
    if way not in ("auto", NOTES, ADAPTER):
        raise UsageError("the way must be auto, notes or adapter")
    if consolidation is None and way != "auto":
        consolidation = ConsolidationSettings()
    if not isinstance(question, str) or not question.strip():
        raise UsageError("the question is empty")
    if promote_dtype not in kv.DTYPE_NAMES:
        raise UsageError(f"the promotion dtype must be one of {', '.join(kv.DTYPE_NAMES)}")
    store = publisher.store
    steps: dict[str, float] = {}

    mark = time.perf_counter()
    hits = index.recall(publisher, question, settings.k, accept=memory_filter(store, gate))
    steps["recall"] = time.perf_counter() - mark
    recalled = [Recalled(h.cube_id, h.item, h.text, h.score, h.author) for h in hits]
    chosen, skipped = plan_mod.choose_memories(recalled, settings)

    mark = time.perf_counter()
    prefix_ids, ids = prompt_ids(loaded, plan_mod.system_text(chosen) if chosen else None, question.strip())
    key = plan_mod.set_key(loaded.pinned.fingerprint, adapter, chosen) if prefix_ids else None
    if len(ids) + max_new_tokens > loaded.max_tokens:
        raise UsageError(f"the prompt with its memories is {len(ids)} tokens; with {max_new_tokens} new ones "
                         f"it exceeds the model's {loaded.max_tokens} (lower ask.max_memory_chars or -k)")
    options = generate.Options(max_new_tokens=max_new_tokens, adapter=adapter, use_local=use_kv,
                               use_swarm=use_kv and swarm is not None,
                               boundaries=(len(prefix_ids),) if prefix_ids else ())
    choice = generate.choose_prefix(store, gate, book, loaded, ids, options, swarm) if use_kv \
        else generate.PrefixChoice()
    facts = _facts(choice)
    uses = lifecycle.record_set_use(store, key).count if key is not None and not dry_run else 0
    if key is not None and dry_run:
        uses = lifecycle.set_uses(store, key) + 1
    elif key is not None:
        consolidate.note_members(store, key, [(m.cube_id, m.item) for m in chosen], adapter is not None)
    samples = book.prefill_samples(loaded.pinned.fingerprint)
    way = _way(store, loaded, samples, key, adapter, question.strip(), ids, facts, consolidation, way)
    if way.way == ADAPTER:
        promote_now, why = False, "answered from the consolidated adapter: the notes are not in the prompt"
    elif promote:
        promote_now, why = plan_mod.promotion(uses, settings, len(prefix_ids), facts)
    else:
        promote_now, why = False, "promotion is off for this request"
    plan = Plan(question.strip(), plan_mod.in_layout_order(chosen), skipped, key, len(prefix_ids), len(ids), facts,
                list(loras or []), uses, promote_now, why, perf.estimate_prefill(samples, len(ids)),
                way=way.way, way_reason=way.reason, consolidated=way.adapter, consolidated_accuracy=way.accuracy)
    steps["plan"] = time.perf_counter() - mark
    answer = Answer(plan, None, steps=steps)
    if dry_run:
        return answer

    if way.way == ADAPTER:
        answer.generation = _from_adapter(store, gate, book, loaded, way, options, loras or [])
        consolidate.mark_used(store, key)
        store.record_access(way.adapter)
        _audit(store, question, way.ids, plan, answer)
        return answer
    answer.generation = generate.generate(store, gate, book, loaded, ids, options, swarm, choice)
    for cube_id in dict.fromkeys(m.cube_id for m in chosen):
        store.record_access(cube_id)
    if promote_now:
        mark = time.perf_counter()
        answer.promoted = _promote(publisher, book, loaded, answer.generation, prefix_ids, promote_dtype, adapter)
        lifecycle.mark_promoted(store, key, answer.promoted.cube_id)
        answer.promote_seconds = time.perf_counter() - mark
    _audit(store, question, ids, plan, answer)
    return answer


@dataclass
class _Way:
    way: str = NOTES
    reason: str = ""
    adapter: bytes | None = None
    accuracy: float = 0.0
    ids: list[int] = field(default_factory=list)


def _way(store: Store, loaded: LoadedModel, samples: list, key: bytes | None, adapter: bytes | None, question: str,
         ids: list[int], facts: KvFacts, settings: ConsolidationSettings | None, forced: str) -> _Way:
    """How the memory set reaches the answer: its notes in the prompt (prefilled, or from a KV
    cube), or its consolidated adapter with the question alone (consolidation.choose_path)."""
    reuse = facts.cube_id is not None and facts.usable > 0
    if key is None:
        return _Way(reason="no memory set")
    if settings is None:
        return _Way(KV if reuse else NOTES, "consolidated adapters are not considered here")
    usable = consolidate.usable(store, key) if adapter is None else None
    if usable is None:
        why = "asked with LoRA cubes applied" if adapter is not None else "no consolidated adapter for this memory set"
        return _Way(KV if reuse else NOTES, why)
    plain = question_ids(loaded, question)
    options = [consolidation_policy.PathOption(NOTES, perf.estimate_prefill(samples, len(ids)))]
    if reuse and facts.cost_estimate is not None:
        rest = perf.estimate_prefill(samples, len(ids) - facts.usable) if len(ids) > facts.usable else 0.0
        options.append(consolidation_policy.PathOption(KV, None if rest is None else facts.cost_estimate + rest))
    merge = 0.0 if loaded.adapters.get("specs") == [(usable.adapter, 1000)] else usable.apply_seconds
    question_prefill = perf.estimate_prefill(samples, len(plain))
    options.append(consolidation_policy.PathOption(
        ADAPTER, None if question_prefill is None else question_prefill + merge, usable.accuracy))
    chosen = consolidation_policy.choose_path(options, settings)
    if forced != "auto":
        chosen = consolidation_policy.PathChoice(forced, f"{forced} chosen by the caller (auto: {chosen.reason})",
                                                 options)
    if chosen.way == ADAPTER:
        return _Way(ADAPTER, chosen.reason, usable.adapter, usable.accuracy, plain)
    return _Way(KV if reuse else NOTES, chosen.reason, usable.adapter, usable.accuracy)


def _from_adapter(store: Store, gate: Gate, book: perf.PerfBook, loaded: LoadedModel, way: _Way,
                  options: generate.Options, loras: list[tuple[bytes, float]]) -> generate.Generation:
    """Answer the question alone with the consolidated adapter applied, then give the caller's
    adapters back (there are none: a set asked with adapters has no adapter way)."""
    mark = time.perf_counter()
    fingerprint = lora.activate(store, gate, loaded, [(way.adapter, 1.0)])
    applied = time.perf_counter() - mark
    try:
        plain = generate.Options(max_new_tokens=options.max_new_tokens, adapter=fingerprint, use_local=options.use_local,
                                 use_swarm=False)
        result = generate.generate(store, gate, book, loaded, way.ids, plain)
    finally:
        lora.activate(store, gate, loaded, loras)
    result.steps["apply_adapter"] = applied
    return result


def question_ids(loaded: LoadedModel, question: str) -> list[int]:
    """The adapter way's prompt: a short fixed system turn and the question. What consolidation
    trains on and what `ask` then asks with; short on purpose (SmolLM2's default system turn,
    used when there is none, is 30 tokens: its prefill is the adapter way's whole cost)."""
    return prompt_ids(loaded, ADAPTER_SYSTEM, question)[1]


def prompt_ids(loaded: LoadedModel, system: str | None, question: str) -> tuple[list[int], list[int]]:
    """(memory prefix ids, whole prompt ids). The model's chat template when it has one (system
    turn, user turn), else plain text. The prefix is empty when there are no memories, or when
    the template does not keep the system turn's tokens as the prompt's first tokens."""
    if getattr(loaded.tokenizer, "chat_template", None):
        user = {"role": "user", "content": question}
        if system is None:
            return [], loaded.encode_chat([user], add_generation_prompt=True)
        turn = {"role": "system", "content": system}
        prefix = loaded.encode_chat([turn], add_generation_prompt=False)
        ids = loaded.encode_chat([turn, user], add_generation_prompt=True)
    else:
        if system is None:
            return [], loaded.encode(f"Question: {question}\nAnswer:")
        prefix = loaded.encode(f"{system}\n\n")
        ids = loaded.encode(f"{system}\n\nQuestion: {question}\nAnswer:")
    return (prefix if ids[:len(prefix)] == prefix else []), ids


def _facts(choice: generate.PrefixChoice) -> KvFacts:
    best = choice.best
    if best is None:
        return KvFacts(decision=choice.decision)
    return KvFacts(best.cube_id, "local" if best.local else "peer", best.usable, best.meta["dtype"], best.size,
                   choice.fetch, choice.saved_estimate, choice.cost_estimate, choice.decision)


def _promote(publisher: Publisher, book: perf.PerfBook, loaded: LoadedModel, result: generate.Generation, prefix_ids: list[int], dtype: str,
             adapter: bytes | None) -> Cube:
    """The memory prefix as an activation cube, unpinned (derived and recomputable: eviction may
    take it when it goes cold). The answer's own cache is exact when nothing was reused, and its
    first positions are the prefix's K/V: no second prefill then."""
    publish = {"pin": False, "tags": ("memory-set",), "description": "memory set prefix (promoted by memnet ask)"}
    if result.reused == 0 and result.cache is not None:
        return generate.publish_cache(publisher, loaded, result.cache, prefix_ids, dtype, adapter, **publish)
    cube, _ = generate.build(publisher, book, loaded, prefix_ids, dtype, adapter, **publish)
    return cube


def _audit(store: Store, question: str, ids: list[int], plan: Plan, answer: Answer) -> None:
    via_adapter = plan.way == ADAPTER
    cubes = [] if via_adapter else [{"cid": m.cube_id, "kind": "plaintext", "author": m.author, "role": "plaintext",
                                     "source": "local"} for m in plan.memories]
    if via_adapter:   # the notes did not go in; the adapter's manifest names them as its parents
        cubes.append({"cid": plan.consolidated, "kind": "parameter", "author": store.manifest(plan.consolidated).author,
                      "role": "lora", "source": "local"})
    result = answer.generation
    if result.cube_id is not None:
        cubes.append({"cid": result.cube_id, "kind": "activation", "author": store.manifest(result.cube_id).author,
                      "role": "kv", "source": result.source})
    for cube_id, _weight in plan.loras:
        cubes.append({"cid": cube_id, "kind": "parameter", "author": store.manifest(cube_id).author,
                      "role": "lora", "source": "local"})
    extra = {"prompt_tokens": result.prompt_tokens, "reused": result.reused, "new_tokens": len(result.new_ids),
             "memory_set": plan.set_key, "decision": result.decision[:300] or None,
             "promoted": answer.promoted.cube_id if answer.promoted else None,
             "question": question.strip()[:MAX_QUESTION], "adapter_way": True if via_adapter else None}
    audit.record_answer(store, kind="ask", prompt_ids_or_text_digest=ids, cubes=cubes, answer_digest=result.text,
                        extra=extra, prompt_text=question)

