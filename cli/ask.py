"""`memnet ask`: answer from memory, with the scheduler's plan on request."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from cli.common import _node, _print_json, announce, app, out
from memnet.cube import cid
from memnet.errors import UsageError


@app.command()
def ask(
    question: str = typer.Argument(..., help="The question."),
    k: Optional[int] = typer.Option(None, "-k", "--top", help="Memories to recall (default: config ask.k, 4)."),
    explain: bool = typer.Option(False, "--explain", help="Print the plan: memories, KV cube, LoRA, costs, reasons."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Plan only: no answer, nothing recorded."),
    max_tokens: int = typer.Option(96, "--max-tokens", "-n", help="New tokens to generate at most."),
    model: Optional[str] = typer.Option(None, "--model", help="Pinned model name or fingerprint."),
    lora: Optional[str] = typer.Option(None, "--lora", help="Adapters: CID[:weight],..."),
    local_only: bool = typer.Option(False, "--local", help="Do not look in the swarm for KV cubes."),
    no_kv: bool = typer.Option(False, "--no-kv", help="Reuse no KV cube (full prefill)."),
    no_promote: bool = typer.Option(False, "--no-promote", help="Do not turn a hot memory set into a KV cube."),
    promote_dtype: str = typer.Option("float32", "--promote-dtype",
                                      help="dtype of promoted KV cubes (float32: answers stay exactly the same)."),
    way: str = typer.Option("auto", "--way", help="How the memory set reaches the answer: auto (the plan decides), "
                            "notes (in the prompt, or a KV cube of them), adapter (its consolidated LoRA, if any)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Answer a question with the pinned model, using the memories recalled for it."""
    from dataclasses import replace

    from memnet import api
    from memnet.model import kv
    from memnet.scheduler import ask as ask_mod

    if not question.strip():
        raise UsageError("the question is empty")
    if k is not None and k < 1:
        raise UsageError("-k must be at least 1")
    if max_tokens < 1:
        raise UsageError("--max-tokens must be at least 1")
    if way not in ("auto", "notes", "adapter"):
        raise UsageError("--way must be auto, notes or adapter")
    if promote_dtype not in kv.DTYPE_NAMES:
        raise UsageError(f"--promote-dtype must be one of {', '.join(kv.DTYPE_NAMES)}")
    node = _node()
    settings = node.config.ask
    if k is not None:
        settings = replace(settings, k=k)
    loaded, adapter = api.load(node, model, lora)
    loras = [(c, m / 1000) for c, m in loaded.adapters.get("specs", [])]
    swarm = None if (local_only or no_kv) else api.swarm_of(node)
    answer = ask_mod.ask(node.publisher, node.gate(), node.perf, loaded, question, adapter=adapter, loras=loras, swarm=swarm, settings=settings,
                         max_new_tokens=max_tokens, use_kv=not no_kv, promote=not no_promote,
                         promote_dtype=promote_dtype, dry_run=dry_run, consolidation=node.config.consolidation,
                         way=way)
    if as_json:
        _print_json(_as_json(answer))
    else:
        _show(answer, explain or dry_run)
    if answer.promoted is not None and node.config.publish_promoted:
        announce([answer.promoted.cube_id])


def _show(answer, explain: bool) -> None:
    if explain:
        for line in answer.plan.explain():
            out.print(line, markup=False)
    if answer.generation is None:  # a dry run
        return
    sys.stdout.write(answer.text.strip() + "\n")
    line = answer.generation.timing_line()
    if answer.promoted is not None:
        line += (f" · promoted the memory set to KV cube {cid.to_text(answer.promoted.cube_id)} "
                 f"in {answer.promote_seconds:.2f} s")
    sys.stderr.write(line + "\n")


def _as_json(answer) -> dict:
    plan, result = answer.plan, answer.generation
    value = {
        "question": plan.question,
        "memories": [{"cube": cid.to_text(m.cube_id), "item": m.item, "score": round(m.score, 4), "text": m.text}
                     for m in plan.memories],
        "skipped": [{"cube": cid.to_text(m.cube_id), "item": m.item, "score": round(m.score, 4), "why": why}
                    for m, why in plan.skipped],
        "memory_set": plan.set_key.hex() if plan.set_key else None,
        "uses": plan.uses, "prefix_tokens": plan.prefix_tokens, "prompt_tokens": plan.prompt_tokens,
        "kv": {"cube": cid.to_text(plan.kv.cube_id) if plan.kv.cube_id else None, "source": plan.kv.source,
               "usable": plan.kv.usable, "dtype": plan.kv.dtype, "fetch": plan.kv.fetch,
               "saved_estimate": plan.kv.saved_estimate, "cost_estimate": plan.kv.cost_estimate,
               "decision": plan.kv.decision},
        "loras": [{"cube": cid.to_text(c), "weight": w} for c, w in plan.loras],
        "promote": plan.promote, "promote_reason": plan.promote_reason,
        "prefill_estimate": plan.prefill_estimate, "explain": plan.explain(), "steps": answer.steps,
    }
    if result is not None:
        value.update(text=result.text, reused=result.reused, source=result.source, ttft=result.ttft,
                     seconds=result.seconds, tokens=len(result.new_ids), decision=result.decision,
                     promoted=cid.to_text(answer.promoted.cube_id) if answer.promoted else None,
                     promote_seconds=answer.promote_seconds)
    return value
