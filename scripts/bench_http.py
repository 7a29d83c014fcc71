#!/usr/bin/env python
"""Benchmark (not a test): the daemon's HTTP API against `memnet generate`, side by side in one
run, on SmolLM2-135M-Instruct.

    .venv/bin/python scripts/bench_http.py [--tokens 1024] [--reps 3] [--requests 24] [--models DIR] [--json PATH]

One daemon (a separate process, `--http`, loopback) with the model resident. Prompts are chat
messages of --tokens tokens of this repo's docs (every run a different slice: nothing is reused
unless the row says so). Timed with the official openai client (streaming: TTFT is the first
content chunk as the client sees it) and with `memnet generate --json --local` as a user runs it
(a new process: wall time to its exit, its own TTFT, its model load). Per repetition, one new
prompt, in this order:

  cold   no cube covers it: the CLI first (process start, imports, model load, prefill; the CLI
         keeps no cube), then the API (the resident model prefills it, then keeps it as a cube);
  warm   the same prompt again: the API reuses the cube it kept; the CLI reuses the same cube
         from the store (the daemon's LMDB, opened by the CLI process).

Then throughput on short prompts (~20 tokens, 16 new tokens, greedy): requests/s with 1 client
in sequence and with 4 concurrent clients (requests interleave by step on the one model).
Ratios are printed beside the baseline's absolute time; medians over --reps, with ranges.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_swarm import BenchError, Children  # noqa: E402
from memnet import config as config_mod  # noqa: E402
from memnet import home as home_mod  # noqa: E402
from memnet.daemon.control import ControlClient  # noqa: E402
from memnet.model import loader  # noqa: E402

TEXT_FILES = ("docs/MIP.md", "README.md", "docs/reliability.md", "memnet/net/fetch.py", "memnet/store/lmdb_store.py")


def slices(loaded, tokens: int, count: int) -> list[str]:
    """count disjoint texts of about `tokens` tokens each."""
    text = "\n\n".join((REPO / f).read_text() for f in TEXT_FILES if (REPO / f).exists())
    ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
    size = tokens - 40  # room for the chat template and the question
    if len(ids) < size * count:
        raise BenchError(f"the docs hold {len(ids)} tokens, fewer than {count} x {size}")
    return [loaded.tokenizer.decode(ids[i * size:(i + 1) * size]) for i in range(count)]


def messages(doc: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Answer from this document.\n\n" + doc},
            {"role": "user", "content": "Summarise the document in one sentence."}]


def http_ttft(api, msgs: list[dict[str, str]], max_tokens: int = 8) -> tuple[float, float, dict]:
    """(client TTFT, total seconds, the memnet extension) of one streamed chat completion."""
    start = time.perf_counter()
    first, ext = None, {}
    for chunk in api.chat.completions.create(model="smollm2", messages=msgs, max_tokens=max_tokens, temperature=0,
                                             stream=True, extra_body={"memnet": {"swarm": False}}):
        if chunk.choices and chunk.choices[0].delta.content and first is None:
            first = time.perf_counter() - start
        ext = (chunk.model_extra or {}).get("memnet") or ext
    return first if first is not None else time.perf_counter() - start, time.perf_counter() - start, ext


def cli_ttft(home: Path, msgs: list[dict[str, str]], folder: Path, max_tokens: int = 8) -> tuple[float, float, dict]:
    """(wall seconds to exit, the CLI's own TTFT, its JSON) of `memnet generate --chat`."""
    chat = folder / f"chat-{time.monotonic_ns()}.json"
    chat.write_text(json.dumps(msgs))
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "cli.main", "--home", str(home), "generate", "--chat", str(chat),
                          "--max-tokens", str(max_tokens), "--local", "--json"], cwd=REPO, capture_output=True,
                         text=True, timeout=600)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise BenchError(f"memnet generate failed: {out.stderr.strip()[-300:]}")
    result = json.loads(out.stdout)
    return wall, result["ttft"], result


def span(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} s [{min(values):.3f}–{max(values):.3f}]"


def wait_ready(client: ControlClient, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = client.call("http_status")
        state = (info.get("model") or {}).get("state")
        if state == "ready":
            return info
        if state and state.startswith("failed"):
            raise BenchError(f"the daemon's model did not load: {state}")
        time.sleep(0.2)
    raise BenchError("the daemon's model was not ready in time")


def throughput(api, prompts: list[str], clients: int) -> tuple[float, float]:
    """(requests/s, median seconds per request) for the prompts sent by `clients` threads."""
    def one(prompt: str) -> float:
        start = time.perf_counter()
        r = api.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": prompt}], max_tokens=16,
                                        temperature=0, extra_body={"memnet": {"swarm": False}})
        assert r.usage.completion_tokens >= 1
        return time.perf_counter() - start
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = list(pool.map(one, prompts))
    return len(prompts) / (time.perf_counter() - start), statistics.median(latencies)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=1024, help="prompt tokens for the cold/warm rows")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--requests", type=int, default=24, help="short requests per throughput row")
    parser.add_argument("--prefill-chunk", type=int, help="http.prefill_chunk for the daemon (default: the config's)")
    parser.add_argument("--models", type=Path, help="A models folder to reuse (else SmolLM2 is converted).")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import openai

    root = Path(tempfile.mkdtemp(prefix="memnet-bench-http-"))
    os.environ["MEMNET_MODELS"] = str(args.models or root / "models")
    node = home_mod.init(root / "node")
    if args.prefill_chunk:
        config_mod.update(node.home, "http.prefill_chunk", args.prefill_chunk)
    start = time.perf_counter()
    model, _ = node.models.pin("smollm2", print)
    print(f"model {model.name} {model.short}: pinned in {time.perf_counter() - start:.1f} s")
    loaded = loader.load(model)
    texts = slices(loaded, args.tokens, args.reps)
    children = Children(root)
    try:
        children.daemon("daemon", node.home, "--http-listen", "127.0.0.1:0")
        children.wait_state("daemon", node.home)
        client = ControlClient.for_home(node.home)
        info = wait_ready(client)
        api = openai.OpenAI(base_url=info["url"] + "/v1", api_key="loopback", max_retries=0, timeout=600)
        print(f"daemon: {info['url']}, model resident (loaded in the daemon at start)")
        rows: dict[str, list] = {"http_cold": [], "http_warm": [], "cli_cold": [], "cli_warm": [],
                                 "cli_cold_ttft": [], "cli_warm_ttft": [], "cli_load": []}
        http_api_warmup = http_ttft(api, [{"role": "user", "content": "hello"}])  # the first request's set-up
        del http_api_warmup
        for rep in range(args.reps):
            a = messages(texts[rep])
            # the CLI keeps no cube: it runs first, then the API is cold on the same prompt
            wall, own, result = cli_ttft(node.home, a, root)
            assert result["reused"] == 0, result
            rows["cli_cold"].append(wall)
            rows["cli_cold_ttft"].append(own)
            rows["cli_load"].append(result["model_load_seconds"])
            ttft, _, ext = http_ttft(api, a)
            assert ext.get("reused_tokens") == 0, ext
            rows["http_cold"].append(ttft)
            time.sleep(1.0)  # a repeat sent at once would wait for the cube being kept (engine.KEEP_WAIT)
            ttft, _, ext = http_ttft(api, a)
            assert ext.get("reused_tokens", 0) > 0, ext
            rows["http_warm"].append(ttft)
            wall, own, result = cli_ttft(node.home, a, root)
            assert result["reused"] > 0, result
            rows["cli_warm"].append(wall)
            rows["cli_warm_ttft"].append(own)
            prompt_tokens = ext["prompt_tokens"]
        print(f"\nTTFT, {prompt_tokens}-token chat prompt, medians over {args.reps} [range]:")
        print(f"  cold  HTTP API {span(rows['http_cold'])}   memnet generate: {span(rows['cli_cold'])} to its exit "
              f"(its own TTFT {span(rows['cli_cold_ttft'])}, model load {span(rows['cli_load'])})")
        print(f"  warm  HTTP API {span(rows['http_warm'])}   memnet generate: {span(rows['cli_warm'])} to its exit "
              f"(its own TTFT {span(rows['cli_warm_ttft'])})")
        m = {k: statistics.median(v) for k, v in rows.items()}
        print(f"  ratios: CLI/HTTP cold {m['cli_cold'] / m['http_cold']:.1f}x (baseline CLI {m['cli_cold']:.2f} s), "
              f"warm {m['cli_warm'] / m['http_warm']:.1f}x (baseline CLI {m['cli_warm']:.2f} s); "
              f"HTTP cold/warm {m['http_cold'] / m['http_warm']:.1f}x (baseline cold {m['http_cold']:.2f} s)")

        shorts = [f"Question {i}: what is {i} plus {i * 3}? Answer briefly." for i in range(args.requests)]
        throughput(api, shorts[:2], 1)  # warm the short path
        one_rate, one_latency = throughput(api, shorts, 1)
        four_rate, four_latency = throughput(api, [s + " Please." for s in shorts], 4)
        print(f"\nshort prompts (~20 tokens, 16 new, {args.requests} requests):")
        print(f"  1 client:  {one_rate:.2f} requests/s (median {one_latency:.3f} s per request)")
        print(f"  4 clients: {four_rate:.2f} requests/s (median {four_latency:.3f} s per request): "
              f"{four_rate / one_rate:.2f}x the 1-client rate ({one_rate:.2f}/s)")
        if args.json:
            args.json.write_text(json.dumps({"rows": rows, "prompt_tokens": prompt_tokens,
                                             "one_client_rps": one_rate, "four_clients_rps": four_rate}, indent=1))
        return 0
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        for name in children.procs:
            print(children.tail(name), file=sys.stderr)
        return 1
    finally:
        children.stop()


if __name__ == "__main__":
    sys.exit(main())
