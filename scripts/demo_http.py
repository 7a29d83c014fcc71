#!/usr/bin/env python
"""The demo's HTTP part: the official openai client against a memnet daemon's API, twice with the
same long prompt (the second answer starts sooner and says why), once with recalled memories.

    .venv/bin/python scripts/demo_http.py API_URL DOCUMENT
"""

from __future__ import annotations

import sys
import time

import openai


def ask(api: openai.OpenAI, messages: list[dict[str, str]], **extra) -> None:
    start, first, text, ext = time.perf_counter(), None, "", {}
    for chunk in api.chat.completions.create(model="smollm2", messages=messages, max_tokens=40, temperature=0,
                                             stream=True, **extra):
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.perf_counter() - start
            text += chunk.choices[0].delta.content
        ext = (chunk.model_extra or {}).get("memnet") or ext
    print(f"  answer: {text.strip()}")
    why = (f"{ext['reused_tokens']}/{ext['prompt_tokens']} prompt tokens reused from cube {ext['cube'][:16]}… "
           f"({ext['source']}, {ext['dtype']})" if ext.get("reused_tokens") else
           f"0/{ext.get('prompt_tokens')} prompt tokens reused: full prefill (the prompt is now kept as a KV cube)")
    print(f"  first token after {first * 1000:.0f} ms (client side; server TTFT {ext.get('ttft_ms')} ms) · {why}")
    if ext.get("memories"):
        print(f"  memories recalled into the prompt: {', '.join(c[:16] + '…' for c in ext['memories'])}")


def main() -> None:
    url, document = sys.argv[1], open(sys.argv[2]).read()[:6000]  # ~1500 tokens
    api = openai.OpenAI(base_url=url, api_key="not-needed-on-loopback")
    print(f"models served: {[m.id for m in api.models.list()]}")
    messages = [{"role": "system", "content": "Answer from this document.\n\n" + document},
                {"role": "user", "content": "What does a memnet node keep its cubes in? One sentence."}]
    for attempt in ("first", "second (same prompt)"):
        print(f"\nthe {attempt} request:")
        ask(api, messages)
    print("\nwith memnet's extension: recall the node's notes into the prompt (as `memnet ask` does):")
    ask(api, [{"role": "user", "content": "What is the office wifi password?"}],
        extra_body={"memnet": {"recall": 2}})


if __name__ == "__main__":
    main()
