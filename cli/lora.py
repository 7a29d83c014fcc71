"""`memnet lora`: parameter (LoRA) cubes for the pinned model: import, train, list."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from cli.common import _node, _print_json, announce, app, out
from memnet import render
from memnet.cube import cid
from memnet.errors import UsageError

lora_app = typer.Typer(no_args_is_help=True, help="LoRA adapters (parameter cubes) for the pinned model.")
app.add_typer(lora_app, name="lora")

MODEL_HELP = "Pinned model name or fingerprint prefix (default: the last pinned)."


def _report(cube, as_json: bool, extra: dict | None = None) -> None:
    m = cube.manifest
    text = cid.to_text(cube.cube_id)
    if as_json:
        _print_json({"cid": text, "base_model": m.meta["base_model"].hex(), "peft": m.meta["peft"],
                     "size": m.size, "name": m.name, "version": m.version, **(extra or {})})
    else:
        label = f" {m.name} v{m.version}" if m.name else ""
        sys.stderr.write(f"published parameter{label}: rank {m.meta['peft']['r']}, "
                         f"{render.human_size(m.size)}, for model {m.meta['base_model'].hex()[:12]}\n")
        sys.stdout.write(text + "\n")
    announce([cube.cube_id])


@lora_app.command("import")
def import_(folder: Path = typer.Argument(..., help="PEFT adapter folder (safetensors weights)."),
            model: Optional[str] = typer.Option(None, "--model", help=MODEL_HELP),
            name: Optional[str] = typer.Option(None, "--name", help="Versioned name."),
            as_json: bool = typer.Option(False, "--json")) -> None:
    """Publish a PEFT LoRA as a parameter cube bound to the pinned model (checked to fit it)."""
    from memnet.model import lora

    if not folder.is_dir():  # before resolving a model: the likelier mistake first
        raise UsageError(f"{folder}: not a folder")
    node = _node()
    cube = lora.import_adapter(node.publisher, folder, node.models.resolve(model), name=name)
    _report(cube, as_json)


@lora_app.command("train")
def train(text: Path = typer.Argument(..., help="UTF-8 text file to train on."),
          steps: int = typer.Option(40, "--steps", help="Optimiser steps."),
          rank: int = typer.Option(8, "--rank", help="LoRA rank."),
          alpha: int = typer.Option(16, "--alpha", help="LoRA alpha (scaling alpha / rank)."),
          target: list[str] = typer.Option(["q_proj", "v_proj"], "--target", help="Module name to adapt (repeatable)."),
          lr: float = typer.Option(2e-3, "--lr", help="Learning rate."),
          seq_len: int = typer.Option(128, "--seq-len", help="Tokens per training window."),
          batch: int = typer.Option(2, "--batch", help="Windows per step."),
          seed: int = typer.Option(0, "--seed"),
          model: Optional[str] = typer.Option(None, "--model", help=MODEL_HELP),
          name: Optional[str] = typer.Option(None, "--name", help="Versioned name."),
          as_json: bool = typer.Option(False, "--json")) -> None:
    """Train a small LoRA on CPU from a text file and publish it as a parameter cube."""
    from memnet.model import loader, lora

    lora.read_text(text)  # a bad file is reported before the model loads
    node = _node()
    loaded = loader.load(node.models.resolve(model))
    stats: dict = {}
    columns = (TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not sys.stderr.isatty(), transient=True) as bar:
        task = bar.add_task("train", total=steps, loss="-")
        cube = lora.train(node.publisher, node.gate(), loaded, text, steps=steps, rank=rank, alpha=alpha, targets=tuple(target), lr=lr,
                          seq_len=seq_len, batch=batch, seed=seed, name=name, stats=stats,
                          progress=lambda step, total, loss: bar.update(task, completed=step, loss=f"{loss:.3f}"))
    sys.stderr.write(f"trained {steps} steps on {stats['tokens']} tokens in {stats['seconds']:.1f} s: "
                     f"loss {stats['loss_before']:.3f} -> {stats['loss_after']:.3f}\n")
    _report(cube, as_json, {k: stats[k] for k in ("loss_before", "loss_after", "seconds", "tokens")})


@lora_app.command("ls")
def list_(model: Optional[str] = typer.Option(None, "--model", help="Only adapters for this pinned model."),
          as_json: bool = typer.Option(False, "--json")) -> None:
    """Stored parameter cubes with their base model, rank and target modules."""
    node = _node()
    base = node.models.resolve(model).fingerprint if model else None
    rows = []
    for entry in node.store.entries(kind="parameter"):
        m = entry.manifest
        if base is not None and m.meta["base_model"] != base:
            continue
        known = node.models.by_fingerprint(m.meta["base_model"])
        rows.append({"cid": cid.to_text(entry.cube_id), "name": m.name, "version": m.version,
                     "base_model": m.meta["base_model"].hex(), "model": known.name if known else None,
                     "r": m.meta["peft"]["r"], "alpha": m.meta["peft"]["alpha"],
                     "targets": m.meta["peft"]["targets"], "size": m.size})
    if as_json:
        _print_json(rows)
        return
    for row in rows:
        label = f"{row['name']} v{row['version']}" if row["name"] else "-"
        model_label = f"{row['model'] or 'not pinned'} ({row['base_model'][:12]})"
        out.print(f"{row['cid']}  {label}  {model_label}  r={row['r']} alpha={row['alpha']}  "
                  f"{','.join(row['targets'])}  {render.human_size(row['size'])}")
    sys.stderr.write(f"{len(rows)} adapter(s)\n")
