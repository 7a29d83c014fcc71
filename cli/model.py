"""Commands for model memory: pin a model, build KV cubes, generate with cached prefixes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from cli.common import _node, _print_json, announce, app, out
from memnet import ingest, render
from memnet.cube import cid
from memnet.errors import UsageError

model_app = typer.Typer(no_args_is_help=True, help="Pinned models (the weights memory is bound to).")
kv_app = typer.Typer(no_args_is_help=True, help="Activation cubes: precomputed KV caches of prefixes.")
app.add_typer(model_app, name="model")
app.add_typer(kv_app, name="kv")

MAX_INPUT = 16 * 1024 * 1024


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")


@model_app.command("pin")
def model_pin(what: str = typer.Argument(..., help="`smollm2`, or a local Hugging Face causal-LM folder."),
              as_json: bool = typer.Option(False, "--json")) -> None:
    """Pin a model: convert it once to a safetensors folder and record its fingerprints."""
    model, new = _node().models.pin(what, _say)
    if as_json:
        _print_json(_model_json(model))
        return
    _say(f"{'pinned' if new else 'already pinned'} {model.name} ({model.params / 1e6:.0f}M parameters) "
         f"at {model.folder}")
    sys.stdout.write(model.fingerprint.hex() + "\n")


def _model_json(m: Any) -> dict[str, Any]:
    return {"name": m.name, "fingerprint": m.fingerprint.hex(), "tokenizer": m.tokenizer.hex(),
            "layout": m.layout, "params": m.params, "folder": str(m.folder), "source": m.source,
            "kv_bytes_per_token": {d: m.kv_bytes_per_token(b) for d, b in
                                   {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1}.items()}}


@model_app.command("ls")
def model_ls(as_json: bool = typer.Option(False, "--json")) -> None:
    """List pinned models; the last is the default."""
    models = _node().models.pinned_models()
    if as_json:
        _print_json([_model_json(m) for m in models])
        return
    table = Table(box=None, pad_edge=False)
    for column in ("NAME", "FINGERPRINT", "TOKENIZER", "PARAMS", "LAYOUT", "KV/TOKEN (fp16)"):
        table.add_column(column, no_wrap=column in ("FINGERPRINT", "TOKENIZER"))
    for m in models:
        layout = f"{m.layout['layers']}L x {m.layout['kv_heads']}kv x {m.layout['head_dim']}"
        table.add_row(m.name, m.fingerprint.hex(), m.tokenizer.hex()[:16], f"{m.params / 1e6:.1f}M", layout,
                      render.human_size(m.kv_bytes_per_token(2)))
    out.print(table)
    _say(f"{len(models)} model(s)")


# -- shared by kv build and generate -------------------------------------------------------------

def _messages(path: Path) -> list[dict[str, str]]:
    try:
        doc = json.loads(ingest.read_text(path, MAX_INPUT))
    except ValueError:
        raise UsageError(f"{path}: invalid JSON") from None
    return ingest.chat_messages(doc, str(path))


def _input(text: Optional[str], file: Optional[Path], chat: Optional[Path]) -> str | list[dict[str, str]]:
    """The prompt as text or chat messages, checked before any model is loaded."""
    given = [x for x in (text, file, chat) if x is not None]
    if len(given) != 1:
        raise UsageError("give exactly one of TEXT, --file or --chat")
    if chat is not None:
        return _messages(chat)
    return text if text is not None else ingest.read_text(file, MAX_INPUT)


@kv_app.command("build")
def kv_build(
    text: Optional[str] = typer.Argument(None, help="The prefix text (or use --file / --chat)."),
    file: Optional[Path] = typer.Option(None, "--file", help="Read the prefix from a UTF-8 file."),
    chat: Optional[Path] = typer.Option(None, "--chat", help="JSON list of chat messages (the model's chat template)."),
    dtype: str = typer.Option("float16", "--dtype", help="float32 (exact), float16, bfloat16 or int8."),
    model: Optional[str] = typer.Option(None, "--model", help="Pinned model name or fingerprint (default: last pinned)."),
    lora: Optional[str] = typer.Option(None, "--lora", help="Adapters the cache is built under: CID[:weight],..."),
    name: Optional[str] = typer.Option(None, "--name", help="Versioned name for the cube."),
    description: Optional[str] = typer.Option(None, "--description"),
    ttl: Optional[int] = typer.Option(None, "--ttl", help="Expire after this many seconds."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Prefill a prefix once and publish its K/V as an activation cube."""
    from memnet import api
    from memnet.model import generate as generate_mod, kv

    if dtype not in kv.DTYPE_NAMES:
        raise UsageError(f"--dtype must be one of {', '.join(kv.DTYPE_NAMES)}")
    given = _input(text, file, chat)
    optional = {k: v for k, v in (("name", name), ("description", description)) if v is not None}
    cube, n_tokens, seconds, held_back = api.build_kv(given, home=_node(), model=model, lora=lora, dtype=dtype,
                                                      ttl=ttl, **optional)
    announce([cube.cube_id])
    if as_json:
        _print_json({"cube": cid.to_text(cube.cube_id), "tokens": n_tokens, "dtype": dtype,
                     "bytes": cube.manifest.size, "prefill_seconds": seconds,
                     "prefix_keys": len(cube.manifest.meta["prefix_keys"]), "held_back": held_back})
        return
    if held_back:
        _say(f"the text's last {held_back} token(s) (trailing whitespace) merge with whatever a prompt adds "
             f"after them, so the cube stops before them: every prompt that continues the text reuses all "
             f"{n_tokens}")
    if n_tokens < generate_mod.MIN_REUSE:
        _say(f"note: generation reuses cached prefixes of at least {generate_mod.MIN_REUSE} tokens (a shorter one saves "
             f"less than its lookup costs), so this {n_tokens}-token cube will not be used")
    _say(f"{n_tokens} tokens prefilled in {seconds:.2f} s; {render.human_size(cube.manifest.size)} of "
         f"{dtype} K/V ({cube.manifest.size // n_tokens} B/token), {len(cube.manifest.meta['prefix_keys'])} prefix keys")
    sys.stdout.write(cid.to_text(cube.cube_id) + "\n")


@app.command("generate")
def generate_cmd(
    prompt: Optional[str] = typer.Argument(None, help="The prompt (or use --file / --chat)."),
    file: Optional[Path] = typer.Option(None, "--file", help="Read the prompt from a UTF-8 file."),
    chat: Optional[Path] = typer.Option(None, "--chat", help="JSON list of chat messages; the answer continues them."),
    max_tokens: int = typer.Option(64, "--max-tokens", "-n", help="New tokens to generate at most."),
    model: Optional[str] = typer.Option(None, "--model", help="Pinned model name or fingerprint."),
    lora: Optional[str] = typer.Option(None, "--lora", help="Adapters: CID[:weight],... (weighted composition)."),
    dtypes: str = typer.Option("float32,float16,bfloat16,int8", "--kv-dtypes",
                               help="KV cube dtypes to look for, preferred first on equal length."),
    local_only: bool = typer.Option(False, "--local", help="Do not look in the swarm."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Full prefill; reuse nothing."),
    check: bool = typer.Option(False, "--check", help="Also run the full prefill and report the logit difference."),
    fetch: str = typer.Option("auto", "--fetch", help="Fetch a peer's prefix: auto (measured costs decide), always, never."),
    distributed: bool = typer.Option(False, "--distributed", help="Run the layers on span servers (hivemind "
                                     "bridge: `memnet daemon --hivemind`); a cached prefix seeds their caches."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Generate, reusing the longest cached prefix (local store, then the swarm)."""
    from memnet import api
    from memnet.model import kv

    wanted = tuple(d.strip() for d in dtypes.split(",") if d.strip())
    if not wanted or any(d not in kv.DTYPE_NAMES for d in wanted):
        raise UsageError(f"--kv-dtypes takes a comma list of {', '.join(kv.DTYPE_NAMES)}")
    if fetch not in api.FETCH_POLICIES:
        raise UsageError("--fetch must be auto, always or never")
    if max_tokens < 1:
        raise UsageError("--max-tokens must be at least 1")
    given = _input(prompt, file, chat)
    node = _node()
    result = api.generate(given, home=node, model=model, lora=lora, max_new_tokens=max_tokens, kv_dtypes=wanted,
                          local=not no_cache, swarm=not local_only, fetch=fetch, check=check, distributed=distributed)
    if as_json:
        _print_json({"text": result.text, "tokens": len(result.new_ids), "prompt_tokens": result.prompt_tokens,
                     "reused": result.reused, "source": result.source, "dtype": result.dtype,
                     "cube": cid.to_text(result.cube_id) if result.cube_id else None,
                     "ttft": result.ttft, "seconds": result.seconds, "steps": result.steps,
                     "decision": result.decision, "max_logit_diff": result.max_logit_diff,
                     "same_top1": result.same_top1, "model_load_seconds": result.model_load_seconds,
                     "route": result.route, "failovers": result.failovers})
        return
    sys.stdout.write(result.text.strip() + "\n")
    _say(result.timing_line())


@app.command("spans")
def spans_cmd(as_json: bool = typer.Option(False, "--json")) -> None:
    """Span servers of the pinned model seen in hivemind's DHT (needs `memnet daemon --hivemind`)."""
    from memnet.span.local_client import BridgeClient

    client = BridgeClient.for_home(_node().home)
    try:
        found = client.servers()
    finally:
        client.close()
    if as_json:
        _print_json(found)
        return
    table = Table(box=None, pad_edge=False)
    for column in ("PEER", "LAYERS", "MS/TOKEN/LAYER", "CACHE LEFT", "MAX LENGTH", "CUBES"):
        table.add_column(column)
    for record in sorted(found, key=lambda r: (r["start"], r["peer"])):
        table.add_row(record["peer"], f"[{record['start']}, {record['end']})", f"{record['layer_seconds'] * 1e3:.3f}",
                      str(record["cache_tokens_left"]), str(record["max_length"]), str(len(record["prefixes"])))
    out.print(table)
    _say(f"{len(found)} span server(s)")
