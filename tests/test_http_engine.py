"""The HTTP face in one process on the tiny model: the engine (resident model, step-interleaved
requests, prompts kept as KV cubes) behind the real ASGI app, driven over ASGI with httpx.
The real daemon with SmolLM2, the official openai client and a browser: test_http_api.py."""

from __future__ import annotations

import dataclasses
import json
from contextlib import asynccontextmanager

import httpx
import pytest
import trio

from memnet.config import HttpSettings
from memnet.cube import cid
from memnet.daemon.commands import Command, NoArgs, Table
from memnet.http import app as app_mod
from memnet.http.dashboard import Dashboard
from memnet.http.openai_api import OpenAIApi
from memnet.scheduler.engine import Done, Engine, Job, Token

TOKEN = "k" * 43
LONG = " ".join(f"fact {i} is number {i * 7}." for i in range(20))   # ~360 tiny-model tokens


@asynccontextmanager
async def served(node, **settings):
    engine = Engine(node, dataclasses.replace(HttpSettings(enabled=True), **{"cache_prompts": 64, **settings}))
    await engine.start()

    async def status(args, progress):
        return {"peer_id": node.peer_id, "pid": 1, "addrs": [], "uptime": 1, "connected": 0, "routing_table": 0,
                "providing": 0, "served_bytes": 0, "services": {}, "cubes": 0}

    async def peers(args, progress):
        return []

    table = Table([Command("status", status, NoArgs), Command("peers", peers, NoArgs)])
    dashboard = Dashboard(node, table, engine.info, lambda: [], {"url": "http://127.0.0.1:8377", "token_required_for_api": False})
    app = app_mod.build(OpenAIApi(engine), dashboard, TOKEN, "127.0.0.1")
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8377", timeout=60) as client:
            yield engine, client
    finally:
        engine.stop()


async def settle(engine):
    """Wait for the engine's after-work (counters, prompts kept as cubes) to end."""
    with trio.fail_after(30):
        while not engine.idle():
            await trio.sleep(0.01)


def run(node, test, **settings):
    async def main():
        async with served(node, **settings) as (engine, client):
            await test(engine, client)
    trio.run(main)


def chat_body(content=LONG, **more):
    return {"model": "tiny-llama", "messages": [{"role": "user", "content": content}], "max_tokens": 12,
            "temperature": 0, **more}


def events(text: str) -> list:
    lines = [line[len("data: "):] for line in text.split("\n\n") if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


@pytest.fixture()
def model_name(tiny):
    return tiny.pinned.name


def test_chat_then_the_same_prompt_reuses_its_kept_cube(node, model_name):
    async def test(engine, client):
        first = (await client.post("/v1/chat/completions", json=chat_body(model=model_name))).json()
        assert first["object"] == "chat.completion" and first["choices"][0]["message"]["role"] == "assistant"
        usage = first["usage"]
        assert usage["prompt_tokens"] > 300 and usage["completion_tokens"] >= 1
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert usage["prompt_tokens_details"]["cached_tokens"] == 0 and first["memnet"]["source"] == "none"
        second = (await client.post("/v1/chat/completions", json=chat_body(model=model_name))).json()
        assert second["usage"]["prompt_tokens_details"]["cached_tokens"] == usage["prompt_tokens"] - 1
        ext = second["memnet"]
        assert ext["source"] == "local" and ext["reused_tokens"] == usage["prompt_tokens"] - 1 and ext["dtype"] == "float32"
        assert second["choices"][0]["message"]["content"] == first["choices"][0]["message"]["content"]  # exact
        kept = node.store.manifest(cid.from_text(ext["cube"]))
        assert kept.kind == "activation" and "prompt-cache" in kept.tags
        assert node.store.entry(cid.from_text(ext["cube"])).pin is None     # eviction may take it
        await settle(engine)
        assert engine.counters["cached"] == 1 and engine.counters["reused_tokens"] == usage["prompt_tokens"] - 1
    run(node, test)


def test_streaming_chunks_add_up_to_the_answer(node, model_name):
    async def test(engine, client):
        whole = (await client.post("/v1/completions", json={"model": model_name, "prompt": "Once upon",
                                                            "max_tokens": 16, "temperature": 0})).json()
        assert whole["object"] == "text_completion"
        r = await client.post("/v1/completions", json={"model": model_name, "prompt": "Once upon", "max_tokens": 16,
                                                       "temperature": 0, "stream": True,
                                                       "stream_options": {"include_usage": True}})
        assert r.headers["content-type"].startswith("text/event-stream")
        chunks = events(r.text)
        assert all(c["object"] == "text_completion" and c["id"] == chunks[0]["id"] for c in chunks)
        assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == whole["choices"][0]["text"]
        assert chunks[-2]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]
        r = await client.post("/v1/chat/completions", json=chat_body("hello", model=model_name, stream=True))
        chunks = events(r.text)
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length") and "memnet" in chunks[-1]
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    run(node, test)


def test_stop_sequences_end_the_answer(node, model_name):
    async def test(engine, client):
        body = {"model": model_name, "prompt": "abc", "max_tokens": 24, "temperature": 0}
        text = (await client.post("/v1/completions", json=body)).json()["choices"][0]["text"]
        assert len(text) > 6
        stop = text[3:6]
        for stream in (False, True):
            r = await client.post("/v1/completions", json={**body, "stop": [stop], "stream": stream})
            if stream:
                chunks = events(r.text)
                got = "".join(c["choices"][0]["text"] for c in chunks)
                finish = chunks[-1]["choices"][0]["finish_reason"]
            else:
                got, finish = r.json()["choices"][0]["text"], r.json()["choices"][0]["finish_reason"]
            assert got == text[:text.find(stop)] and finish == "stop"
    run(node, test)


def test_sampling_with_a_seed_repeats(node, model_name):
    async def test(engine, client):
        body = {"model": model_name, "prompt": "x", "max_tokens": 12, "temperature": 1.5, "seed": 11}
        a, b = [(await client.post("/v1/completions", json=body)).json()["choices"][0]["text"] for _ in range(2)]
        assert a == b
    run(node, test)


def test_a_long_prompt_lets_a_short_request_through(node, model_name):
    """With another request active, prefill_chunk=4 cuts the 360-token prompt into 90 steps
    (enough that the 50 ms head start does not see it through on a fast machine); the short
    request, sent after it, finishes first."""
    async def test(engine, client):
        order = []
        blocker = await engine.submit(Job(prompt="keep busy", max_tokens=200))
        async for event in blocker:      # the blocker is generating: the model is not alone
            break

        async def ask(content, tag, tokens):
            r = await client.post("/v1/chat/completions", json=chat_body(content, model=model_name, max_tokens=tokens))
            assert r.status_code == 200, r.text
            order.append(tag)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, LONG, "long", 2)
            await trio.sleep(0.05)
            nursery.start_soon(ask, "hi", "short", 2)
        assert order == ["short", "long"]
        blocker.close()
    run(node, test, prefill_chunk=4, cache_prompts=0)


def test_concurrent_requests_and_a_full_queue(node, model_name):
    async def test(engine, client):
        statuses = []

        async def ask(i):
            r = await client.post("/v1/chat/completions", json=chat_body(f"question {i}", model=model_name, max_tokens=60))
            statuses.append(r.status_code)
            if r.status_code == 429:
                assert r.json()["error"]["type"] == "rate_limit_error"
            else:
                assert r.json()["choices"][0]["message"]["content"] is not None

        async with trio.open_nursery() as nursery:
            for i in range(8):
                nursery.start_soon(ask, i)
        assert statuses.count(200) >= 3 and statuses.count(429) >= 1 and set(statuses) <= {200, 429}
        await settle(engine)
        ok = await client.post("/v1/chat/completions", json=chat_body("after", model=model_name, max_tokens=2))
        assert ok.status_code == 200
    run(node, test, max_active=2, max_queue=1)


def test_an_abandoned_request_is_dropped(node, model_name):
    async def test(engine, client):
        ticket = await engine.submit(Job(prompt="tell me", max_tokens=400))
        async for event in ticket:
            assert isinstance(event, Token)
            break
        ticket.close()                     # the client went away
        await settle(engine)
        after = await engine.submit(Job(prompt="next", max_tokens=3))
        got = [e async for e in after]
        assert isinstance(got[-1], Done)
    run(node, test)


def test_errors_are_openai_error_objects(node, model_name):
    async def test(engine, client):
        missing = cid.to_text(cid.cid_of(b"a cube nobody has"))
        cases = [
            (dict(content=b"{bad", headers={"content-type": "application/json"}), 400, None),
            (dict(content=b'{"model": 1}', headers={"content-type": "text/plain"}), 400, None),
            (dict(json=chat_body(model="gpt-4")), 404, "model_not_found"),
            (dict(json=chat_body(model=f"{model_name}+{missing}")), 404, "not_found"),
            (dict(json=chat_body(model=model_name, max_tokens=100_000)), 400, "context_length_exceeded"),
            (dict(json=chat_body(model=model_name, messages=[])), 400, None),
            (dict(content=b"[" * 100_000 + b"]" * 100_000, headers={"content-type": "application/json"}), 400, None),
            (dict(content=b'{"a": "' + b"x" * (1 << 21) + b'"}', headers={"content-type": "application/json"}), 400, None),
        ]
        for kwargs, status, code in cases:
            r = await client.post("/v1/chat/completions", **kwargs)
            assert r.status_code == status, (kwargs.get("json"), r.text)
            error = r.json()["error"]
            assert error["code"] == code and error["message"] and "Traceback" not in r.text
        assert (await client.get("/v1/nothing")).status_code == 404
        assert (await client.delete("/v1/models")).status_code == 405
        models = (await client.get("/v1/models")).json()
        assert models["object"] == "list" and models["data"][0]["id"] == model_name
        assert (await client.get(f"/v1/models/{model_name}")).json()["id"] == model_name
        ok = await client.post("/v1/chat/completions", json=chat_body("still here", model=model_name, max_tokens=2))
        assert ok.status_code == 200
    run(node, test)


def test_dashboard_api_needs_the_token_and_acts_on_the_store(node, model_name):
    async def test(engine, client):
        await client.post("/v1/chat/completions", json=chat_body(model=model_name))
        await settle(engine)
        assert (await client.get("/api/cubes")).status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        cubes = (await client.get("/api/cubes?kind=activation", headers=auth)).json()
        assert cubes["total"] == 1 and cubes["cubes"][0]["pinned"] is False
        text = cubes["cubes"][0]["cid"]
        assert (await client.post(f"/api/cubes/{text}/pin", headers=auth)).json()["pinned"] is True
        assert node.store.entry(cid.from_text(text)).pin is not None
        assert (await client.post(f"/api/cubes/{text}/pin", headers={**auth, "origin": "http://evil.example"})).status_code == 403
        assert (await client.post(f"/api/cubes/{text}/verify", headers=auth)).json()["verified"] is True
        assert (await client.post(f"/api/cubes/{text}/unpin", headers=auth)).json()["pinned"] is False
        details = (await client.get(f"/api/cubes/{text}", headers=auth)).json()
        assert details["manifest"]["kind"] == "activation" and details["lineage"]["parents"] == []
        assert (await client.get("/api/cubes?kind=bogus", headers=auth)).status_code == 400
        assert (await client.get("/api/cubes/notacid", headers=auth)).status_code == 400
        assert (await client.post("/api/cubes/" + text + "/explode", headers=auth)).status_code == 404
        reuse = (await client.get("/api/reuse", headers=auth)).json()
        assert reuse["points"][-1]["prompt_tokens"] > 300
        assert (await client.get("/api/audit?last=5", headers=auth)).json()[-1]["kind"] == "http"
        assert (await client.get("/api/trust", headers=auth)).json()["policy"]
        overview = (await client.get("/api/overview", headers=auth)).json()
        assert overview["model"]["state"] == "ready" and overview["model"]["requests"] == 1
        page = await client.get("/")
        assert "dashboard.js" in page.text and "script-src 'self'" in page.headers["content-security-policy"]
        assert (await client.get("/static/dashboard.js")).status_code == 200
    run(node, test)


def test_lora_cubes_by_model_name_beside_plain_requests(node, model_name, tmp_path):
    from memnet.model import lora
    from tests import factories

    config, weights = factories.lora_files(hidden=64, layers=2, targets=("q_proj", "o_proj"), seed=5)
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps(config))
    (folder / "adapter_model.safetensors").write_bytes(weights)
    cube = lora.import_adapter(node.publisher, folder, node.models.resolve(None)).cube_id
    adapted = f"{model_name}+{cid.to_text(cube)}:0.5"

    async def test(engine, client):
        answers = {}

        async def ask(name, tag):
            r = await client.post("/v1/completions", json={"model": name, "prompt": "hello", "max_tokens": 8,
                                                           "temperature": 0})
            assert r.status_code == 200, r.text
            answers.setdefault(tag, []).append(r.json()["choices"][0]["text"])

        async with trio.open_nursery() as nursery:   # adapted and plain requests at once: each waits its turn
            for tag, name in (("plain", model_name), ("lora", adapted), ("plain", model_name), ("lora", adapted)):
                nursery.start_soon(ask, name, tag)
        assert len(set(answers["plain"])) == 1 and len(set(answers["lora"])) == 1
        assert answers["plain"][0] != answers["lora"][0]
        await settle(engine)
        from memnet.governance import audit
        roles = [c["role"] for e in audit.entries(node.store, last=4) for c in e["cubes"]]
        assert roles.count("lora") == 2
    run(node, test)
