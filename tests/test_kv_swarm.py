"""Prefix reuse across machines: real daemons as separate processes on loopback. B generates
with a prefix that A built and published, and says the prefix came from a peer."""

from __future__ import annotations

import json
import time

import pytest

from tests.model_factory import tiny_model_folder
from tests.swarm_helpers import Swarm

pytestmark = pytest.mark.timeout(300)

TEXT = " ".join(f"memory {i} is content addressed and shared" for i in range(22))


@pytest.fixture
def swarm(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMNET_MODELS", str(tmp_path / "models"))  # one converted copy for all nodes
    s = Swarm(tmp_path)
    yield s
    s.close()


def generate(node, *args: str) -> dict:
    return json.loads(node.cli("generate", *args, "-n", "3", "--json").out)


def test_b_generates_with_a_prefix_built_on_a(swarm, tiny_model_dir, tmp_path):
    a = swarm.start("a")
    b = swarm.start("b", bootstrap=[a])
    for node in (a, b):
        node.cli("model", "pin", str(tiny_model_dir))
    b.cli("trust", "add", a.peer_id, "--for", "pin,inject")  # by default only B's own cubes are used
    built = json.loads(a.cli("kv", "build", TEXT, "--dtype", "float32", "--json").out)
    assert built["tokens"] > 256
    prompt = TEXT + " and so on"

    local = generate(b, prompt, "--local")
    assert local["reused"] == 0 and local["source"] == "none"

    deadline = time.monotonic() + 30
    while True:  # A's announcement reaches the DHT asynchronously
        result = generate(b, prompt, "--check")
        if result["decision"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    # B has measured its prefill but never a fetch: it fetches, and so learns its bandwidth
    assert result["decision"].startswith("fetch: no bandwidth measured"), result["decision"]
    assert result["source"] == "peer" and result["reused"] == built["tokens"]
    assert result["cube"] == built["cube"]
    assert result["max_logit_diff"] <= 1e-4 and result["same_top1"]
    assert result["text"] == local["text"]  # the same greedy answer as B's own full prefill
    # the cube is now B's own: the next run is local, and B provides it too
    again = generate(b, prompt)
    assert again["source"] == "local" and again["reused"] == built["tokens"]
    shown = json.loads(b.cli("show", built["cube"], "--json").out)
    assert shown["pin"]["reason"] == "fetched"
    # both costs measured now: the tiny model prefills 300 tokens in milliseconds, so B recomputes
    other = TEXT.replace("shared", "kept")
    a.cli("kv", "build", other, "--dtype", "float32")
    deadline = time.monotonic() + 30
    while True:
        auto = generate(b, other + " and so on")
        if auto["decision"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert auto["decision"].startswith("recompute: fetch+load"), auto["decision"]
    assert auto["reused"] == 0 and auto["source"] == "none"
    forced = generate(b, other + " and so on", "--fetch", "always")
    assert forced["source"] == "peer" and forced["decision"].startswith("fetch (--fetch always")
    human = b.cli("generate", prompt, "-n", "2")
    assert "from the local store" in human.err and "TTFT" in human.err


def test_a_prefix_for_another_model_is_never_used(swarm, tiny_model_dir, tmp_path):
    a = swarm.start("a")
    b = swarm.start("b", bootstrap=[a])
    a.cli("model", "pin", str(tiny_model_dir))
    b.cli("model", "pin", str(tiny_model_folder(tmp_path / "other-weights", seed=5)))
    b.cli("trust", "add", a.peer_id, "--for", "pin,inject")  # refused for the model, not the author
    built = json.loads(a.cli("kv", "build", TEXT, "--dtype", "float32", "--json").out)
    time.sleep(2)
    result = generate(b, TEXT + " and so on")
    assert result["reused"] == 0 and result["source"] == "none"
    assert not b.cli("show", built["cube"], check=False).code == 0  # never fetched
