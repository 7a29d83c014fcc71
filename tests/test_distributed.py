"""Distributed inference on hivemind (issue: Petals-style spans seeded from activation cubes),
with real processes on loopback: memnet daemons whose hivemind bridges serve layer spans of a
4-layer model (s1: [0, 2); s2, s3: [2, 4)), and a client node `a` whose bridge routes the chain.
The test process drives generations through a's bridge (it never imports hivemind: py-libp2p is
loaded here, and the two cannot share a process)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memnet import api, home
from memnet.daemon.control import ControlClient
from memnet.span.local_client import BridgeClient, BridgeError
from tests.swarm_helpers import ROOT, Swarm
from tests.model_factory import tiny_model_folder

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

LISTEN = "/ip4/127.0.0.1/tcp/0"
PROMPT = "the span servers hold a few layers each and pass the hidden state along the chain. " * 3


def bridge_info(daemon, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = ControlClient(daemon.state).call("bridge_status", timeout=10)
        if info.get("state") == "ready":
            return info
        time.sleep(0.3)
    raise AssertionError(f"bridge of {daemon.name} not ready: {info}\n{daemon.log_text()[-3000:]}")


def wait_servers(client_home: Path, count: int, timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client = BridgeClient.for_home(client_home)
        try:
            found = client.servers()
        finally:
            client.close()
        if len(found) >= count:
            return found
        time.sleep(0.5)
    raise AssertionError(f"only {len(found)} span server(s) found")


def start_cluster(root: Path, model: str, spans: dict[str, str], extra_config: dict | None = None):
    """A client node `a` and one serving node per spans entry; returns (swarm, a, {name: daemon})."""
    swarm = Swarm(root)
    for name in ["a", *spans]:
        node = home.open_node(swarm.home(name))
        node.models.pin(model)
        if extra_config:
            from memnet import config
            raw = config.read_raw(node.home)
            raw["hivemind"] = extra_config
            config.write_raw(node.home, raw)
    a = swarm.start("a", "--hivemind", "--hivemind-listen", LISTEN)
    first = bridge_info(a)["maddrs"][0]
    servers = {}
    for name, span in spans.items():
        servers[name] = swarm.start(name, "--serve-blocks", span, "--hivemind-listen", LISTEN,
                                    "--hivemind-peer", first, bootstrap=[a])
    for daemon in servers.values():
        bridge_info(daemon)
    wait_servers(a.home, len(spans))
    return swarm, a, servers


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    models = root / "models"
    previous = os.environ.get("MEMNET_MODELS")
    os.environ["MEMNET_MODELS"] = str(models)  # one converted copy, shared by every node
    folder = tiny_model_folder(root / "tiny4", layers=4)
    swarm, a, servers = start_cluster(root, str(folder), {"s1": "0:2", "s2": "2:4", "s3": "2:4"})
    try:
        yield swarm, a, servers
    finally:
        swarm.close()
        if previous is None:
            os.environ.pop("MEMNET_MODELS", None)
        else:
            os.environ["MEMNET_MODELS"] = previous


def local_answer(node, prompt: str, n: int):
    return api.generate(prompt, home=node, max_new_tokens=n, local=False, swarm=False)


def test_distributed_greedy_equals_local_unseeded_and_seeded(cluster):
    swarm, a, servers = cluster
    node = home.open_node(a.home)
    expected = local_answer(node, PROMPT, 12)
    plain = api.generate(PROMPT, home=node, max_new_tokens=12, local=False, swarm=False, distributed=True)
    assert plain.new_ids == expected.new_ids and plain.text == expected.text
    assert [(h["start"], h["end"]) for h in plain.route] == [(0, 2), (2, 4)]
    assert plain.reused == 0 and "route" in plain.timing_line()
    # a float32 cube of the prompt's prefix on the client: the servers seed from their shares of it
    cube, n_tokens, _, _ = api.build_kv(PROMPT, home=node, dtype="float32")
    ControlClient(a.state).call("announce", cubes=[cube.cube_id])
    seeded = api.generate(PROMPT + " and on", home=node, max_new_tokens=12, swarm=False, distributed=True)
    expected2 = local_answer(node, PROMPT + " and on", 12)
    assert seeded.new_ids == expected2.new_ids
    assert seeded.reused > 0 and seeded.cube_id == cube.cube_id
    assert all(h["source"] in ("fetched", "store") for h in seeded.route), seeded.route
    assert sum(h["fetched"] for h in seeded.route) <= cube.manifest.size + 2 * 256 * 1024
    del n_tokens


def test_a_server_killed_mid_generation_is_replaced_and_the_text_is_unchanged(cluster):
    from memnet.span.executor import embed, from_bytes, head, to_bytes

    swarm, a, servers = cluster
    node = home.open_node(a.home)
    loaded, _ = api.load(node)
    ids = api.token_ids(loaded, PROMPT, True)
    expected = local_answer(node, PROMPT, 10).new_ids
    hidden_size = int(loaded.model.config.hidden_size)
    client = BridgeClient.for_home(a.home)
    try:
        opened = client.open(len(ids) + 12, len(ids))
        second = next(h for h in opened["route"] if h["start"] == 2)
        victim = next(d for d in servers.values() if d.peer_id == second["peer"])
        reply = client.step(0, len(ids), to_bytes(embed(loaded, ids)))
        got = [int(head(loaded, from_bytes(reply["hidden"], len(ids), hidden_size)).argmax())]
        for position in range(len(ids), len(ids) + 9):
            if len(got) == 4:  # mid-generation: kill the server of layers [2, 4) (its bridge)
                pid = ControlClient(victim.state).call("bridge_status", timeout=10)["pid"]
                os.kill(pid, signal.SIGKILL)
                victim.stop(signal.SIGKILL)
            reply = client.step(position, 1, to_bytes(embed(loaded, [got[-1]])))
            got.append(int(head(loaded, from_bytes(reply["hidden"], 1, hidden_size)).argmax()))
        assert reply["failovers"] >= 1
        assert all(h["peer"] != victim.peer_id for h in reply["route"])
    finally:
        client.close()
    assert got == expected[:len(got)], (got, expected)


def test_a_seed_the_servers_cannot_use_is_refused_and_the_chain_starts_unseeded(cluster):
    swarm, a, servers = cluster
    notes = a.home.parent / "notes.md"
    notes.write_text("not a KV cache at all\n\njust notes")
    text_cube = a.cli("publish", str(notes)).out.strip()
    from memnet.cube import cid
    client = BridgeClient.for_home(a.home)
    try:
        for cube in (cid.from_text(text_cube), cid.cid_of(b"a cube nobody holds")):
            opened = client.open(64, 8, {"cube": cube, "tokens": 8, "key": bytes(32), "bytes": 1024})
            assert opened["position"] == 0  # refused as bad_seed: every hop starts from position 0
            client.close()
    finally:
        client.close()
    assert "bad_seed" in servers["s1"].log_text()


def test_admission_and_limits_are_typed_errors(cluster):
    """Sessions longer than any server takes are too_large; sessions beyond a server's cache
    budget (16384 tokens: two of 6000 fit, a third does not) are refused with admission while the
    others are in use, and the budget comes back when a session ends; a session that sits silent
    after its open gives way to a newcomer after the open grace (2 s)."""
    swarm, a, servers = cluster
    client = BridgeClient.for_home(a.home)
    try:
        with pytest.raises(BridgeError) as info:
            client.open(10**6, 1)
        assert info.value.code == "too_large"
    finally:
        client.close()
    hidden = bytes(64 * 4)   # one token of the tiny model's 64-wide hidden state
    holders = [BridgeClient.for_home(a.home) for _ in range(4)]
    try:
        for holder in holders[:2]:
            holder.open(6000, 1)
            holder.step(0, 1, hidden)   # in use: an idle session keeps its room for 10 s
        with pytest.raises(BridgeError) as info:
            holders[2].open(6000, 1)
        assert info.value.code == "admission", info.value
        holders[0].close()
        time.sleep(0.5)
        holders[2] = BridgeClient.for_home(a.home)
        assert holders[2].open(6000, 1)["position"] == 0  # room again
        started = time.monotonic()
        assert holders[3].open(6000, 1)["position"] == 0  # holders[2] never stepped: it gave way
        assert time.monotonic() - started < 5
    finally:
        for holder in holders:
            holder.close()
    assert "span sessions ended to make room: 1" in servers["s1"].log_text()


def test_a_garbage_client_does_not_stop_the_server_from_serving(cluster):
    swarm, a, servers = cluster
    s1 = servers["s1"]
    info = bridge_info(s1)
    out = subprocess.run([sys.executable, "-m", "tests.rogue_span", "garbage", info["maddrs"][0], info["peer_id"]],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = dict(line.split(": ", 1) for line in out.stdout.splitlines() if ": " in line)
    assert lines.get("not msgpack") == "error bad_request", out
    assert lines.get("huge length") == "error too_large", out
    assert lines.get("step before open") == "error bad_request", out
    assert lines.get("other model") == "error wrong_model", out
    assert lines.get("server message") == "error bad_request", out
    assert lines.get("60 MiB before open") == "error too_large", out
    assert lines.get("idle streams", "").startswith("20, refused busy: ") and \
        int(lines["idle streams"].rsplit(" ", 1)[1]) >= 4, out
    node = home.open_node(a.home)
    answer = api.generate(PROMPT, home=node, max_new_tokens=4, local=False, swarm=False, distributed=True)
    assert answer.new_ids == local_answer(node, PROMPT, 4).new_ids
    status = json.loads(s1.cli("status", "--json").out)
    assert status["services"]["bridge"] == "ok" and status["bridge"]["state"] == "ready"


@pytest.mark.timeout(900)
def test_smollm2_two_spans_seeded_and_unseeded_equal_local(tmp_path, monkeypatch, smollm2_models_dir):
    """The real SmolLM2-135M in two spans (layers 0-14 and 15-29) on two servers: greedy text and
    first-token logits of a distributed generation equal the local full prefill's, without a
    seed and seeded from a float32 cube (each server fetching only its half of it)."""
    monkeypatch.setenv("MEMNET_MODELS", str(smollm2_models_dir))
    swarm, a, servers = start_cluster(tmp_path, "smollm2", {"s1": "0:15", "s2": "15:30"})
    try:
        node = home.open_node(a.home)
        document = "memnet shares the KV cache of a prompt prefix as a signed cube.\n" * 12  # ends at a line break:
        # the tokenizer does not merge the cube's last token with what follows
        cube, tokens, _, _ = api.build_kv(document, home=node, dtype="float32")
        ControlClient(a.state).call("announce", cubes=[cube.cube_id])
        prompt = document + "Question: in one sentence, what does memnet share?"
        expected = api.generate(prompt, home=node, max_new_tokens=8, local=False, swarm=False)
        plain = api.generate(prompt, home=node, max_new_tokens=8, local=False, swarm=False, distributed=True,
                             check=True)
        seeded = api.generate(prompt, home=node, max_new_tokens=8, swarm=False, distributed=True, check=True)
        assert plain.new_ids == expected.new_ids == seeded.new_ids
        assert plain.max_logit_diff < 1e-3 and seeded.max_logit_diff < 1e-3
        assert seeded.reused == tokens and plain.reused == 0, seeded.timing_line()
        moved = [h["fetched"] for h in seeded.route]
        assert all(0 < m < 0.75 * cube.manifest.size for m in moved), (moved, cube.manifest.size)
    finally:
        swarm.close()
