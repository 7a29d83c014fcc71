#!/usr/bin/env python
"""Benchmark (not a test): the scheduler (`memnet ask`) against answering without it, side by
side in one run, on SmolLM2-135M-Instruct.

    .venv/bin/python scripts/bench_ask.py [--requests 60] [--hot 5] [--repeat 0.7] [--k 4]
                                          [--tokens 16] [--seed 7] [--models DIR] [--json PATH]

The notes are the labelled recall set shipped with the tests (tests/data/recall_set.json), each
note a plaintext cube, the same cubes in two node homes. The workload is a seeded stream of its questions: with
probability --repeat a question from a small hot pool (--hot questions, asked again and again,
as people do), else any question (mostly new). Every request is answered twice, one after the
other, with the same loaded model:
  with     memnet ask as configured: recall, plan, KV cube reuse, promotion of memory sets used
           promote_after (the default, 2) times into KV cubes (node A);
  without  the same recall and prompt, full prefill every time, nothing promoted (node B).
Reported: hit rate (requests whose memory prefix came from a KV cube), prefill tokens saved,
time to first token and whole-answer latency (medians and means) with / without, promotions and
their cost, and how many answers are word for word the same (promoted cubes are float32: exact up
to float rounding). Targets are not set by the issue; the figures go to the README.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from memnet import home as home_mod  # noqa: E402
from memnet import config as config_mod  # noqa: E402
from memnet import local  # noqa: E402
from memnet.config import AskSettings  # noqa: E402
from memnet.memory import index  # noqa: E402
from memnet.model import loader  # noqa: E402
from memnet.scheduler import ask as ask_mod  # noqa: E402

RECALL_SET = REPO / "tests" / "data" / "recall_set.json"


def workload(queries: list[str], n: int, hot: int, repeat: float, seed: int) -> list[str]:
    rng = random.Random(seed)
    pool = rng.sample(queries, hot)
    return [rng.choice(pool) if rng.random() < repeat else rng.choice(queries) for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--hot", type=int, default=5)
    parser.add_argument("--repeat", type=float, default=0.7)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=16, help="new tokens per answer")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--models", type=Path, help="A models folder to reuse (else SmolLM2 is converted).")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="memnet-bench-ask-"))
    os.environ["MEMNET_MODELS"] = str(args.models or root / "models")
    data = json.loads(RECALL_SET.read_text())
    with_home, without_home = home_mod.init(root / "with"), home_mod.init(root / "without")
    model, _ = with_home.models.pin("smollm2", print)
    without_home.models.pin("smollm2")
    loaded = loader.load(model)
    # the same cubes in both homes (same ids, so the same prompt layout): published on one,
    # imported into the other, whose trust policy then lets it put them into prompts
    cubes = [index.remember(with_home.publisher, note["text"]).cube_id for note in data["notes"]]
    local.export(with_home.store, cubes, root / "notes.car")
    local.import_archive(without_home.store, root / "notes.car")
    config_mod.update(without_home.home, "trust",
                      config_mod.load(without_home.home).trust.add(with_home.peer_id, ("inject",)).to_config())
    without_home = home_mod.open_node(without_home.home)
    questions = workload([q["query"] for q in data["queries"]], args.requests, args.hot, args.repeat, args.seed)
    settings = AskSettings(k=args.k)  # promote_after: the default
    rows = []
    for i, question in enumerate(questions):
        on = ask_mod.ask(with_home.publisher, with_home.gate(), with_home.perf, loaded, question, settings=settings,
                         max_new_tokens=args.tokens)
        off = ask_mod.ask(without_home.publisher, without_home.gate(), without_home.perf, loaded, question,
                          settings=settings, max_new_tokens=args.tokens,
                          use_kv=False, promote=False)
        assert on.plan.set_key == off.plan.set_key  # the same memories, so the same prompt
        rows.append({"question": question, "prompt_tokens": on.generation.prompt_tokens,
                     "prefix_tokens": on.plan.prefix_tokens, "reused": on.generation.reused,
                     "ttft_with": on.generation.ttft, "ttft_without": off.generation.ttft,
                     "answer_with": sum(on.steps.values()) + on.generation.seconds + on.promote_seconds,
                     "answer_without": sum(off.steps.values()) + off.generation.seconds,
                     "promoted": on.promoted is not None, "promote_seconds": on.promote_seconds,
                     "same_text": on.text == off.text})
        mark = "hit " if on.generation.reused else ("PROM" if on.promoted else "miss")
        print(f"{i + 1:>3} {mark} {on.generation.reused:>4}/{on.generation.prompt_tokens:<4} "
              f"ttft {on.generation.ttft * 1000:6.0f} / {off.generation.ttft * 1000:6.0f} ms  {question[:60]}")
    report(rows, args)


def report(rows: list[dict], args) -> None:
    n = len(rows)
    hits = sum(1 for r in rows if r["reused"])
    eligible = sum(1 for r in rows if r["prefix_tokens"])
    saved = sum(r["reused"] for r in rows)
    total = sum(r["prompt_tokens"] for r in rows)

    def stat(key: str, fn) -> float:
        return fn(r[key] for r in rows)

    def median(values):
        return statistics.median(list(values))

    def mean(values):
        return statistics.fmean(list(values))

    print(f"\n{n} requests ({args.hot} hot questions asked with p={args.repeat}, the rest drawn from all "
          f"{len(json.loads(RECALL_SET.read_text())['queries'])}), k={args.k}, {args.tokens} new tokens each, "
          f"promote_after {AskSettings().promote_after}")
    print(f"hit rate: {hits}/{n} = {hits / n:.2f} of requests reused a KV cube "
          f"({hits}/{eligible} of those with memories)")
    print(f"prefill tokens saved: {saved}/{total} = {saved / total:.2f}")
    promoted = [r for r in rows if r["promoted"]]
    print(f"promotions: {len(promoted)}, each {median(r['promote_seconds'] for r in promoted) * 1000:.0f} ms median"
          if promoted else "promotions: 0")
    print(f"same answer text with and without: {sum(r['same_text'] for r in rows)}/{n}")
    print(f"{'':24}{'with':>10}{'without':>10}{'ratio':>8}   (ratio = with / without)")
    for label, key in (("TTFT median", "ttft"), ("TTFT mean", "ttft"), ("answer median", "answer"),
                       ("answer mean", "answer")):
        fn = median if "median" in label else mean
        w, wo = stat(f"{key}_with", fn), stat(f"{key}_without", fn)
        print(f"{label:<24}{w * 1000:>8.0f}ms{wo * 1000:>8.0f}ms{w / wo:>8.2f}")
    hit_rows = [r for r in rows if r["reused"]]
    if hit_rows:
        w = median(r["ttft_with"] for r in hit_rows)
        wo = median(r["ttft_without"] for r in hit_rows)
        print(f"{'TTFT median, hits only':<24}{w * 1000:>8.0f}ms{wo * 1000:>8.0f}ms{w / wo:>8.2f}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
