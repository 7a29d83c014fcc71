#!/usr/bin/env python
"""Benchmark (not a test): consolidation on SmolLM2-135M-Instruct — the three ways to bring a hot
memory set into an answer, side by side in one process, and when distilling it pays back.

    .venv/bin/python scripts/bench_consolidate.py [--hot 3] [--k 4] [--uses 3] [--steps 60]
                                                  [--tokens 24] [--seed 11] [--queries 2,7,13]
                                                  [--models DIR] [--json PATH]

The notes are the labelled recall set shipped with the tests (tests/data/recall_set.json; each
query lists the facts a correct answer states). --hot queries (seeded) are each asked --uses
times, which makes their memory sets hot (and promotes each set's prefix to a float32 KV cube);
then each set is distilled (memnet consolidate: answers with the notes, LoRA training, the gate).
Each hot set is then asked its query in three wordings (the query, and two wordings distillation
never trained on), each way in turn:
  notes    the notes in the prompt, full prefill (no KV cube);
  kv       the notes in the prompt, their prefix from the set's KV cube;
  adapter  the set's consolidated adapter, the question alone (no notes in the prompt).
Reported per way: accuracy against the labels (an answer stating half of the query's facts),
TTFT (median, from `ask`), CPU seconds to the first token (median: the model's part, one-token
generations; the adapter already applied, as a resident model keeps it, and its apply-and-remove
cost apart, which `memnet ask` pays once per process); per set: training CPU-seconds, the gate's verdict, and the
number of uses after which distilling pays back its CPU against each other way (never, when the
adapter costs as much per answer or more).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from memnet import home as home_mod  # noqa: E402
from memnet.config import AskSettings, ConsolidationSettings  # noqa: E402
from memnet.memory import index  # noqa: E402
from memnet.model import generate, loader, lora  # noqa: E402
from memnet.scheduler import ask as ask_mod  # noqa: E402
from memnet.scheduler import consolidate as cons  # noqa: E402
from memnet.scheduler import consolidation as policy  # noqa: E402
from memnet.scheduler import plan as plan_mod  # noqa: E402

RECALL_SET = REPO / "tests" / "data" / "recall_set.json"
WORDINGS = ("{q}", "Could you tell me this: {q}", "{q}, do you remember?")
WAYS = ("notes", "kv", "adapter")


def correct(answer: str, labels: list[str]) -> bool:
    return policy.states_facts(answer, set(labels), ConsolidationSettings(fact_recall=0.5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hot", type=int, default=3)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--uses", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--tokens", type=int, default=24, help="new tokens per answer")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--queries", help="Comma-separated indexes into the set's queries (instead of a seeded sample).")
    parser.add_argument("--models", type=Path, help="A models folder to reuse (else SmolLM2 is converted).")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="memnet-bench-consolidate-"))
    os.environ["MEMNET_MODELS"] = str(args.models or root / "models")
    data = json.loads(RECALL_SET.read_text())
    node = home_mod.init(root / "node")
    model, _ = node.models.pin("smollm2", print)
    loaded = loader.load(model)
    for note in data["notes"]:
        index.remember(node.publisher, note["text"])
    settings = AskSettings(k=args.k, promote_after=2, min_promote_tokens=16)
    consolidation = ConsolidationSettings(after_uses=args.uses, steps=args.steps, use_accuracy=0.0)
    if args.queries:
        queries = [data["queries"][int(i)] for i in args.queries.split(",")]
    else:
        queries = random.Random(args.seed).sample(data["queries"], args.hot)

    def ask(question: str, **kw):
        cpu = time.process_time()
        kw.setdefault("max_new_tokens", args.tokens)
        answer = ask_mod.ask(node.publisher, node.gate(), node.perf, loaded, question, settings=settings,
                             consolidation=consolidation, **kw)
        return answer, time.process_time() - cpu

    def first_token_cpu(way: str, question: str, memories, outcome) -> float:
        """CPU seconds to the first token of one way, the model's part only (no recall): notes =
        the whole prompt prefilled, kv = the set's cube + the rest, adapter = the question alone
        with the adapter already applied (as a resident model keeps it; apply_cpu is its cost)."""
        if way == "adapter":
            ids = ask_mod.question_ids(loaded, question)
            adapter = lora.activate(node.store, node.gate(), loaded, [(outcome.cube.cube_id, 1.0)])
        else:
            ids = ask_mod.prompt_ids(loaded, plan_mod.system_text(memories), question)[1]
            adapter = None
        options = generate.Options(max_new_tokens=1, adapter=adapter, use_local=way == "kv", use_swarm=False)
        cpu = time.process_time()
        generate.generate(node.store, node.gate(), node.perf, loaded, ids, options)
        cpu = time.process_time() - cpu
        lora.activate(node.store, node.gate(), loaded, [])
        return cpu

    def apply_cpu(adapter: bytes) -> float:
        """CPU seconds to apply an adapter and take it off again (what `memnet ask` pays per process)."""
        cpu = time.process_time()
        lora.activate(node.store, node.gate(), loaded, [(adapter, 1.0)])
        lora.activate(node.store, node.gate(), loaded, [])
        return time.process_time() - cpu

    print(f"SmolLM2-135M, {os.cpu_count()} cores; {len(data['notes'])} notes; k={args.k}; {len(queries)} hot sets, "
          f"{args.steps} training steps each")
    sets = []
    for q in queries:
        for _ in range(args.uses):
            first, _cpu = ask(q["query"], way="notes")
        key = first.plan.set_key
        outcome = cons.distil(node.publisher, node.gate(), node.perf, loaded, key, consolidation)
        row = {"query": q["query"], "facts": q["facts"], "notes": len(first.plan.memories),
               "prefix_tokens": first.plan.prefix_tokens, "train_cpu": outcome.cpu_seconds,
               "train_seconds": outcome.seconds, "gate": outcome.gate.reason, "published": outcome.cube is not None,
               "ways": {w: {"ttft": [], "cpu": [], "correct": 0, "asked": 0} for w in WAYS}, "other_set": 0}
        print(f"\nset {key.hex()[:12]} ({row['notes']} notes, {row['prefix_tokens']}-token prefix) for "
              f"\"{q['query']}\": distilled in {outcome.seconds:.0f} s, {outcome.cpu_seconds:.0f} CPU-s; "
              f"{'published' if outcome.cube else 'DISCARDED'}: {outcome.gate.reason}")
        for wording in WORDINGS:
            question = wording.format(q=q["query"])
            for way in WAYS:
                forced = {"way": "adapter" if way == "adapter" else "notes", "use_kv": way != "notes", "promote": False}
                answer, _ = ask(question, **forced)
                if answer.plan.set_key != key:   # recall found another set for this wording: not comparable
                    row["other_set"] += 1
                    continue
                if way == "adapter" and answer.plan.way != "adapter":
                    continue                      # no adapter (discarded): nothing to measure
                stats = row["ways"][way]
                if way == "kv" and answer.plan.kv.cube_id is not None:
                    row["kv_bytes"] = answer.plan.kv.size
                stats["ttft"].append(answer.generation.ttft)
                stats["cpu"].append(first_token_cpu(way, question, first.plan.memories, outcome))
                stats["asked"] += 1
                stats["correct"] += correct(answer.text, q["facts"])
                print(f"  {way:<8} TTFT {answer.generation.ttft * 1000:6.0f} ms  CPU {stats['cpu'][-1]:5.2f} s  "
                      f"{'ok ' if correct(answer.text, q['facts']) else 'bad'} {answer.text.strip()[:70]!r}")
        if outcome.cube is not None:
            row["apply_cpu"] = statistics.median(apply_cpu(outcome.cube.cube_id) for _ in range(3))
            row["adapter_bytes"] = outcome.cube.manifest.size
            print(f"  sizes: KV cube {row.get('kv_bytes', 0) / 2**20:.1f} MiB (float32), adapter "
                  f"{row['adapter_bytes'] / 2**20:.1f} MiB; apply + remove {row['apply_cpu']:.2f} CPU-s")
        sets.append(row)

    print("\nper way, over all hot sets (medians; accuracy = answers stating half the labelled facts)")
    summary = {}
    for way in WAYS:
        ttft = [t for r in sets for t in r["ways"][way]["ttft"]]
        cpu = [c for r in sets for c in r["ways"][way]["cpu"]]
        asked = sum(r["ways"][way]["asked"] for r in sets)
        right = sum(r["ways"][way]["correct"] for r in sets)
        summary[way] = {"ttft_ms": round(statistics.median(ttft) * 1000, 1) if ttft else None,
                        "cpu_s": round(statistics.median(cpu), 3) if cpu else None, "correct": right, "asked": asked}
        if ttft:
            print(f"  {way:<8} accuracy {right}/{asked}  TTFT {summary[way]['ttft_ms']:.0f} ms  "
                  f"CPU to the first token {summary[way]['cpu_s']:.2f} s")
        else:
            print(f"  {way:<8} no answers (no adapter passed its gate)")
    print("\npayback: uses after which the training CPU is won back = training CPU / CPU saved per first "
          "token (resident: the adapter stays applied; per process: `memnet ask` applies it each time)")
    for r in sets:
        med = {w: statistics.median(r["ways"][w]["cpu"]) if r["ways"][w]["cpu"] else None for w in WAYS}
        r["payback"] = {}
        for other in ("notes", "kv"):
            for label, extra in (("resident", 0.0), ("per process", r.get("apply_cpu", 0.0))):
                if med["adapter"] is None or med[other] is None:
                    r["payback"][f"{other}, {label}"] = None
                    continue
                saved = med[other] - med["adapter"] - extra
                r["payback"][f"{other}, {label}"] = round(r["train_cpu"] / saved) if saved > 0 else None
        if med["adapter"] is None:
            print(f"  {r['query'][:50]:<50} train {r['train_cpu']:.0f} CPU-s; no adapter: {r['gate']}")
            continue
        shown = "; ".join(f"vs {o}: " + (f"{v} uses" if v else "never") for o, v in r["payback"].items())
        print(f"  {r['query'][:50]:<50} train {r['train_cpu']:.0f} CPU-s, apply {r.get('apply_cpu', 0):.2f} CPU-s; "
              f"{shown}")
    if args.json:
        args.json.write_text(json.dumps({"sets": sets, "summary": summary, "args": vars(args) | {"models": None,
                                         "json": None}}, indent=2, default=str))


if __name__ == "__main__":
    main()
