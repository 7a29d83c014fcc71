"""The HTTP face's pure parts: OpenAI request parsing (truncated, oversized, forged, malformed
input), the error object, stop sequences over streamed text, the guard, and sampling."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memnet.errors import BusyError, MemnetError, NotFoundError, PolicyError, UsageError
from memnet.http import openai_schema as schema
from memnet.http.guard import Guard, host_name
from memnet.http.stops import StopText
from memnet.model.sampling import Sampling

SERVED = ["smollm2", "195cdb529bf9"]
USER = [{"role": "user", "content": "hi"}]
CID = "bafkreigxiixtmwf7nrp2zdpdfvgg5ehjdmn5t2d2c5vqymgk3ssgmjaox3y"


def chat(**fields):
    return schema.chat({"model": "smollm2", "messages": USER, **fields}, SERVED)


def test_chat_request_becomes_a_job():
    r = chat(max_tokens=7, temperature=0, stop="\n", stream=True, stream_options={"include_usage": True},
             memnet={"recall": 3, "swarm": False, "fetch": "never"})
    assert r.job.prompt == USER and r.job.max_tokens == 7 and r.job.sampling is None
    assert r.stops == ["\n"] and r.stream and r.include_usage
    assert (r.job.recall, r.job.swarm, r.job.fetch) == (3, False, "never")


def test_defaults_follow_openai():
    r = chat()
    assert r.job.max_tokens is None and r.job.sampling == Sampling(1.0, 1.0, None) and not r.stream
    assert chat(max_completion_tokens=5).job.max_tokens == 5
    assert chat(memnet={"recall": True}).job.recall == 4


def test_content_parts_and_roles():
    r = schema.chat({"model": "smollm2", "messages": [
        {"role": "developer", "content": "be brief", "name": "x"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]}, SERVED)
    assert r.job.prompt == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "ab"}]


def test_model_names_carry_lora():
    assert chat(model=f"smollm2+{CID}:0.5").job.lora == f"{CID}:0.5"
    assert chat(model="195cdb529bf9", memnet={"lora": CID}).job.lora == CID
    assert chat(model=f"smollm2+{CID}", memnet={"lora": CID}).job.lora == f"{CID},{CID}"
    with pytest.raises(schema.ModelNotFound):
        chat(model="gpt-4")
    with pytest.raises(UsageError, match="after '\\+'"):
        chat(model="smollm2+")


def test_completion_prompt():
    r = schema.completion({"model": "smollm2", "prompt": ["Once"], "max_tokens": 3}, SERVED)
    assert r.job.prompt == "Once"
    for bad in ({"prompt": [1, 2]}, {"prompt": ["a", "b"]}, {"prompt": ""}, {}, {"prompt": "x", "echo": True}):
        with pytest.raises(UsageError):
            schema.completion({"model": "smollm2", **bad}, SERVED)


@pytest.mark.parametrize("fields, phrase", [
    ({"messages": []}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "user"}]}, "content"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "role"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "text parts"),
    ({"messages": [None]}, "object"),
    ({"model": None}, "model"),
    ({"model": 3}, "model"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": "5"}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"temperature": 2.5}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"seed": -1}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"stop": ["a"] * 5}, "stop"),
    ({"stop": [""]}, "stop"),
    ({"stop": 3}, "stop"),
    ({"stop": ["x" * 201]}, "stop"),
    ({"n": 2}, "n:"),
    ({"tools": [{"type": "function"}]}, "tools"),
    ({"logprobs": True}, "logprobs"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"stream": "yes"}, "stream"),
    ({"stream_options": []}, "stream_options"),
    ({"memnet": []}, "memnet"),
    ({"memnet": {"evil": 1}}, "unknown"),
    ({"memnet": {"recall": 65}}, "recall"),
    ({"memnet": {"fetch": "maybe"}}, "fetch"),
    ({"memnet": {"lora": 5}}, "lora"),
])
def test_malformed_requests_are_one_line_usage_errors(fields, phrase):
    with pytest.raises(UsageError, match=phrase) as caught:
        chat(**fields)
    assert "\n" not in str(caught.value)


def test_too_many_messages():
    with pytest.raises(UsageError, match="at most"):
        schema.chat({"model": "smollm2", "messages": USER * (schema.MAX_MESSAGES + 1)}, SERVED)


@settings(max_examples=150, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
                    max_leaves=30))
def test_any_json_value_is_a_request_or_a_usage_error(doc):
    for parse in (schema.chat, schema.completion):
        try:
            parse(doc, SERVED)
        except MemnetError as exc:
            assert isinstance(exc, UsageError) and "\n" not in str(exc)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_truncated_and_garbled_bodies(raw):
    body = json.dumps({"model": "smollm2", "messages": USER, "max_tokens": 3}).encode()
    for data in (body[:len(raw) % len(body)], raw):
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            continue  # the endpoint answers 400 "not valid JSON" (tests/test_http_api.py)
        try:
            schema.chat(doc, SERVED)
        except UsageError:
            pass


def test_error_objects():
    cases = [(UsageError("bad"), 400, None), (schema.ModelNotFound("m"), 404, "model_not_found"),
             (NotFoundError("c"), 404, "not_found"), (BusyError("b"), 429, "queue_full"),
             (PolicyError("p"), 403, "refused"), (RuntimeError("secret detail"), 500, None),
             (UsageError("this model's context is 8192 tokens"), 400, "context_length_exceeded")]
    for exc, status, code in cases:
        got, body = schema.error_body(exc)
        assert got == status and body["error"]["code"] == code and set(body["error"]) == {"message", "type", "param", "code"}
    assert "secret" not in schema.error_body(RuntimeError("secret detail"))[1]["error"]["message"]


# -- stop sequences over a stream ---------------------------------------------------------------

def feed_all(stops, pieces):
    s = StopText(stops)
    out, text = "", ""
    for piece in pieces:
        text += piece
        delta, stopped = s.feed(text)
        out += delta
        if stopped:
            break
    return out + s.flush(), s.stopped


def test_stop_sequence_cuts_and_holds_back():
    s = StopText(["END"])
    assert s.feed("Hello E") == ("Hello ", False)       # "E" may start END
    assert s.feed("Hello EN") == ("", False)
    assert s.feed("Hello ENX") == ("ENX", False)         # it did not
    assert s.feed("Hello ENX and END more") == (" and ", True)
    assert s.flush() == "" and s.text == "Hello ENX and "


def test_half_characters_wait():
    s = StopText()
    assert s.feed("caf\ufffd") == ("caf", False)
    assert s.feed("café") == ("é", False)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="abE\nN", max_size=4), max_size=12), st.lists(st.text(alphabet="abEN\n", min_size=1, max_size=3), max_size=3))
def test_streamed_equals_whole(pieces, stops):
    """Whatever the pieces, the answer ends before the stop sequence that is completed first,
    character by character (hypothesis found pieces ["a\n", "\n"] with stops ["\n", "a\n\n"])."""
    whole = "".join(pieces)
    expected, stopped_at = whole, False
    for i in range(1, len(whole) + 1):
        starts = [whole[:i].find(s) for s in stops if s in whole[:i]]
        if starts:
            expected, stopped_at = whole[:min(starts)], True
            break
    out, stopped = feed_all(stops, pieces)
    assert out == expected and stopped == stopped_at
    assert feed_all(stops, [whole]) == (expected, stopped_at)   # one piece: the same answer


# -- the guard ----------------------------------------------------------------------------------

def test_guard_on_loopback():
    g = Guard(None, "t" * 43, "127.0.0.1")
    ok = {"host": "127.0.0.1:8377"}
    assert g.check("GET", "/v1/models", ok) is None                               # the API: no token on loopback
    assert g.check("GET", "/", {"host": "localhost:8377"}) is None
    assert g.check("GET", "/api/overview", ok)[0] == 401                          # data: always the token
    assert g.check("GET", "/api/overview", {**ok, "authorization": "Bearer " + "t" * 43}) is None
    assert g.check("GET", "/api/overview", {**ok, "authorization": "Bearer " + "t" * 42 + "u"})[0] == 401
    assert g.check("GET", "/v1/models", {"host": "attacker.example:8377"})[0] == 421   # DNS rebinding
    assert g.check("GET", "/v1/models", {})[0] == 421
    post = {**ok, "authorization": "Bearer " + "t" * 43}
    assert g.check("POST", "/api/cubes/x/pin", {**post, "origin": "http://127.0.0.1:8377"}) is None
    assert g.check("POST", "/api/cubes/x/pin", {**post, "origin": "http://evil.example"})[0] == 403
    assert g.check("POST", "/v1/completions", {**ok, "origin": "null"})[0] == 403


def test_guard_elsewhere_needs_the_token_for_the_api():
    g = Guard(None, "s" * 43, "0.0.0.0")
    assert g.check("GET", "/v1/models", {"host": "192.0.2.7:8377"})[0] == 401
    assert g.check("GET", "/v1/models", {"host": "192.0.2.7:8377", "authorization": "Bearer " + "s" * 43}) is None
    assert g.check("GET", "/static/dashboard.js", {"host": "192.0.2.7:8377"}) is None


def test_host_names():
    assert host_name("LocalHost:80") == "localhost" and host_name("[::1]:8377") == "::1" and host_name("::1") == "::1"


# -- sampling -----------------------------------------------------------------------------------

def test_sampling_is_seeded_and_greedy_at_zero():
    from memnet.model.runtime import torch
    from memnet.model.sampling import picker

    logits = torch.tensor([0.0, 1.0, 2.0, 0.5])
    assert picker(None)(logits) == 2 and picker(Sampling(0.0))(logits) == 2
    draws = [[picker(Sampling(1.5, 1.0, seed))(logits) for _ in range(3)] for seed in (1, 1, 2)]
    assert draws[0] == draws[1]
    a, b = picker(Sampling(2.0, seed=7)), picker(Sampling(2.0, seed=7))
    assert [a(logits) for _ in range(20)] == [b(logits) for _ in range(20)]
    nucleus = picker(Sampling(1.0, top_p=0.01, seed=3))
    assert {nucleus(logits) for _ in range(20)} == {2}     # only the likeliest token is in the nucleus
    with pytest.raises(UsageError):
        Sampling(-0.1)
