"""Prefix reuse across machines: real daemons as separate processes on loopback. B generates
with a prefix that A built and published, and says the prefix came from a peer."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from tests.model_factory import tiny_model_folder
from tests.swarm_helpers import ROOT, Swarm

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]  # real daemons: the full suite only

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
    # A is B's neighbour: found by asking it directly, the DHT asked only for longer keys
    assert re.search(r"1 neighbour\(s\) asked, longest keys (\[[\d, ]+\]) \(neighbours \1\)", b.log_text())
    # the cube is now B's own: the next run is local, and B provides it too
    again = generate(b, prompt)
    assert again["source"] == "local" and again["reused"] == built["tokens"]
    shown = json.loads(b.cli("show", built["cube"], "--json").out)
    assert shown["pin"]["reason"] == "fetched"
    # everything measured now: the tiny model prefills 300 tokens in milliseconds, faster than a
    # swarm lookup (also measured): B does not even ask (model/perf.worth_asking)
    other = TEXT.replace("shared", "kept")
    a.cli("kv", "build", other, "--dtype", "float32")
    deadline = time.monotonic() + 30
    while True:
        auto = generate(b, other + " and so on")
        if auto["decision"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert auto["decision"].startswith("swarm not asked: the "), auto["decision"]
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


def wait_for_peer_prefix(node, prompt: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:  # an announcement reaches the DHT asynchronously
        result = generate(node, prompt)
        if result["source"] == "peer" or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def test_the_dht_alone_finds_a_prefix(swarm, tiny_model_dir):
    a = swarm.start("a")
    home = swarm.home("b")
    config = json.loads((home / "config.json").read_text())
    (home / "config.json").write_text(json.dumps({**config, "daemon": {"prefix_neighbours": 0}}))
    b = swarm.start("b", bootstrap=[a])
    for node in (a, b):
        node.cli("model", "pin", str(tiny_model_dir))
    b.cli("trust", "add", a.peer_id, "--for", "pin,inject")
    built = json.loads(a.cli("kv", "build", TEXT, "--dtype", "float32", "--json").out)
    result = wait_for_peer_prefix(b, TEXT + " and so on")
    assert result["source"] == "peer" and result["cube"] == built["cube"]
    assert "0 neighbour(s) asked" in b.log_text()
    assert not re.search(r"[1-9] neighbour\(s\) asked", b.log_text())


def test_a_lying_neighbour_does_not_hide_the_real_prefix(swarm, tiny_model_dir):
    a = swarm.start("a")
    b = swarm.start("b", bootstrap=[a])
    for node in (a, b):
        node.cli("model", "pin", str(tiny_model_dir))
    b.cli("trust", "add", a.peer_id, "--for", "pin,inject")
    built = json.loads(a.cli("kv", "build", TEXT, "--dtype", "float32", "--json").out)
    # a neighbour that claims a cube under every key of every prompt, the longest included
    liar = subprocess.Popen([sys.executable, "-m", "tests.rogue_peer", "prefix-liar", b.addr], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert liar.stdout.readline().strip() == "connected"
        result = wait_for_peer_prefix(b, TEXT + " and so on")
        assert result["source"] == "peer" and result["cube"] == built["cube"]
        assert result["reused"] == built["tokens"]
        assert "sent a manifest that does not authenticate" in b.log_text()
        assert "2 neighbour(s) asked" in b.log_text()
    finally:
        liar.kill()
        liar.wait()


def test_a_fetch_that_runs_late_gives_way_to_the_prefill(swarm, tiny_model_dir):
    """The provider hangs (SIGSTOP) between B's lookup and its fetch: B's answer does not wait
    for it — it computes the prefill after the deadline (or once the fetch has failed), and
    gives the same answer as its own full prefill."""
    import signal

    from memnet import api
    from memnet.model import generate as gen

    a = swarm.start("a")
    b = swarm.start("b", bootstrap=[a])
    for node in (a, b):
        node.cli("model", "pin", str(tiny_model_dir))
    b.cli("trust", "add", a.peer_id, "--for", "pin,inject")
    a.cli("kv", "build", TEXT, "--dtype", "float32")
    prompt = TEXT + " and so on"
    local = generate(b, prompt, "--local")   # B measures its prefill: the deadline is its floor
    node = api.open_node(b.home)
    loaded, _ = api.load(node)
    ids = api.token_ids(loaded, prompt, add_generation_prompt=True)
    options = gen.Options(max_new_tokens=3)
    deadline = time.monotonic() + 30
    while True:   # A's announcement reaches the DHT asynchronously
        choice = gen.choose_prefix(node.store, node.gate(), node.perf, loaded, ids, options, api.swarm_of(node))
        if choice.fetch or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert choice.fetch and choice.local is None, choice.decision
    assert choice.deadline == pytest.approx(1.0)   # the tiny model prefills in ms: the 1 s floor
    a.proc.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        result = gen.generate(node.store, node.gate(), node.perf, loaded, ids, options, api.swarm_of(node), choice)
        waited = time.monotonic() - started
    finally:
        a.proc.send_signal(signal.SIGCONT)
    assert result.source == "none" and result.reused == 0
    assert "computed instead" in result.decision, result.decision
    assert waited < 8, result.decision   # not the 600 s a control call allows
    assert result.text == local["text"]
    assert b.cli("status").code == 0     # B's daemon serves on
