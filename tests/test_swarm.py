"""Real daemons as separate processes on loopback: discovery, verified multi-peer fetch, lying
and vanishing peers, forged manifests and name records, plaintext peers, restarts."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memnet.cube import canonical, cid, name_record
from memnet.home import open_node
from tests.cli_helpers import assert_one_line_error, memnet
from tests.swarm_helpers import ROOT, Swarm, notes_file, stored, tamper

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]  # real daemons: the full suite only


@pytest.fixture
def swarm(tmp_path):
    s = Swarm(tmp_path)
    yield s
    s.close()


def publish(home: Path, path: Path) -> bytes:
    return cid.from_text(memnet(home, "publish", str(path)).out.strip())


def providers(node, cube_id: bytes) -> set[str]:
    return {p["peer_id"] for p in json.loads(node.cli("find", cid.to_text(cube_id), "--json").out)}


def wait_for(predicate, timeout: float = 20, step: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not reached in time")


def rogue(*args: str, timeout: float = 60) -> str:
    proc = subprocess.run([sys.executable, "-m", "tests.rogue_peer", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_publish_on_a_get_on_c_through_the_dht(swarm, tmp_path):
    a = swarm.start("a")
    b = swarm.start("b", bootstrap=[a])
    c = swarm.start("c", bootstrap=[b])  # c knows only b: a is found through the DHT
    cube_id = publish(a.home, notes_file(tmp_path / "notes.txt", 3_000_000))
    assert wait_for(lambda: a.peer_id in providers(c, cube_id))

    got = c.cli("get", cid.to_text(cube_id))
    assert got.out.strip() == cid.to_text(cube_id)
    assert "fetched" in got.err
    assert c.cli("verify", cid.to_text(cube_id)).code == 0
    assert memnet(a.home, "cat", cid.to_text(cube_id)).out == memnet(c.home, "cat", cid.to_text(cube_id)).out
    # the fetched cube is pinned and provided by c too; find lists each provider once
    assert wait_for(lambda: providers(b, cube_id) >= {a.peer_id, c.peer_id})
    listed = json.loads(b.cli("find", cid.to_text(cube_id), "--json").out)
    assert len(listed) == len({p["peer_id"] for p in listed})
    # --trace: whom the lookup asked (both other daemons, both answered) and how it went
    traced = json.loads(c.cli("find", cid.to_text(cube_id), "--trace", "--json").out)
    assert {p["peer_id"] for p in traced["providers"]} >= {a.peer_id}
    stats = traced["stats"]
    assert set(stats["closest"]) == {a.peer_id, b.peer_id} and stats["silent"] == []
    assert stats["asked"] == 2 and stats["rounds"] >= 1 and stats["walk_seconds"] >= 0
    text = c.cli("find", cid.to_text(cube_id), "--trace")
    assert "walk:" in text.err and a.peer_id in text.err
    # after its own-id lookup, c refreshed the buckets farther than its nearest neighbour
    refresh = wait_for(lambda: [line for line in c.log_text().splitlines() if "bucket refresh:" in line])
    assert "routing table: 2 peers" in refresh[0]
    status = json.loads(c.cli("status", "--json").out)
    assert status["peer_id"] == c.peer_id and status["connected"] >= 1
    assert again_already_stored(c, cube_id)


def again_already_stored(node, cube_id: bytes) -> bool:
    return "already stored" in node.cli("get", cid.to_text(cube_id)).err


def test_provider_killed_mid_fetch_completes_from_another(swarm, tmp_path):
    a_home, b_home = swarm.home("a"), swarm.home("b")
    cube_id = publish(a_home, notes_file(tmp_path / "notes.txt", 4_000_000))
    memnet(a_home, "export", cid.to_text(cube_id), "-o", str(tmp_path / "cube.car"))
    memnet(b_home, "import", str(tmp_path / "cube.car"))
    rate = str(1_000_000)  # 1 MB/s each: the fetch takes seconds, long enough to kill a provider
    a = swarm.start("a", "--upload-rate", rate)
    b = swarm.start("b", "--upload-rate", rate, bootstrap=[a])
    c = swarm.start("c", bootstrap=[b])
    assert wait_for(lambda: providers(c, cube_id) >= {a.peer_id, b.peer_id})

    fetch = subprocess.Popen([sys.executable, "-m", "cli.main", "--home", str(c.home), "get",
                              cid.to_text(cube_id)], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    a.stop(signal.SIGKILL)
    out, err = fetch.communicate(timeout=120)
    assert fetch.returncode == 0, err
    assert out.strip() == cid.to_text(cube_id)
    assert f"dropped peer {a.peer_id}" in err
    assert c.cli("verify", cid.to_text(cube_id)).code == 0
    # the trace names the dead provider among the peers that gave nothing, and only it
    stats = json.loads(c.cli("find", cid.to_text(cube_id), "--trace", "--json").out)["stats"]
    assert b.peer_id in stats["closest"] and set(stats["silent"]) == {a.peer_id} & set(stats["closest"])


def test_lying_peer_is_dropped_and_the_store_never_holds_bad_bytes(swarm, tmp_path):
    honest_home, liar_home = swarm.home("honest"), swarm.home("liar")
    cube_id = publish(honest_home, notes_file(tmp_path / "notes.txt", 2_000_000))
    memnet(honest_home, "export", cid.to_text(cube_id), "-o", str(tmp_path / "cube.car"))
    memnet(liar_home, "import", str(tmp_path / "cube.car"))
    for chunk_id, data in stored(liar_home).items():  # the liar's disk now lies
        tamper(liar_home, "chunks", chunk_id, bytes([data[0] ^ 0xFF]) + data[1:])
    # the honest provider at 1 MB/s: the get takes about 2 s, so the liar is surely asked for a
    # batch (at full speed the honest one could deliver all 8 chunks before the liar's turn)
    honest = swarm.start("honest", "--upload-rate", str(1_000_000))
    liar = swarm.start("liar", bootstrap=[honest])
    c = swarm.start("c", bootstrap=[honest])
    assert wait_for(lambda: providers(c, cube_id) >= {honest.peer_id, liar.peer_id})

    got = c.cli("get", cid.to_text(cube_id))
    assert f"dropped peer {liar.peer_id}" in got.err, got.err
    assert c.cli("verify", cid.to_text(cube_id)).code == 0
    good = stored(honest_home)
    assert stored(c.home) == {k: good[k] for k in stored(c.home)}


def test_only_liars_means_no_cube_and_a_clear_error(swarm, tmp_path):
    honest_home, liar_home = swarm.home("honest"), swarm.home("liar")
    cube_id = publish(honest_home, notes_file(tmp_path / "notes.txt", 600_000))
    memnet(honest_home, "export", cid.to_text(cube_id), "-o", str(tmp_path / "cube.car"))
    memnet(liar_home, "import", str(tmp_path / "cube.car"))
    for chunk_id, data in stored(liar_home).items():
        tamper(liar_home, "chunks", chunk_id, data[:-1] + bytes([data[-1] ^ 1]))
    liar = swarm.start("liar")
    c = swarm.start("c", bootstrap=[liar])
    assert wait_for(lambda: liar.peer_id in providers(c, cube_id))
    result = c.cli("get", cid.to_text(cube_id), check=False)
    assert_one_line_error(result, "no provider left")
    assert stored(c.home) == {}
    assert memnet(c.home, "ls").err.strip() == "0 cube(s)"


def test_forged_manifest_is_refused_before_any_chunk(swarm, tmp_path):
    liar_home = swarm.home("liar")
    cube_id = publish(liar_home, notes_file(tmp_path / "notes.txt", 300_000))
    genuine = stored(liar_home, "manifests")[cube_id]
    fields = canonical.decode(genuine, 1 << 24)
    fields["description"] = "trust me"  # changed after signing: the signature no longer covers it
    forged = canonical.encode(fields)
    forged_id = cid.cid_of(forged)
    tamper(liar_home, "manifests", forged_id, forged)
    tamper(liar_home, "pins", forged_id, canonical.encode({"at": 0, "reason": "forged"}))
    liar = swarm.start("liar")
    c = swarm.start("c", bootstrap=[liar])
    assert wait_for(lambda: liar.peer_id in providers(c, forged_id))
    result = c.cli("get", cid.to_text(forged_id), check=False)
    assert_one_line_error(result, "signature")
    assert stored(c.home) == {}  # refused before any chunk was asked for
    assert json.loads(liar.cli("status", "--json").out)["served_bytes"] == 0


def test_name_records_resolve_and_forged_or_replayed_ones_are_rejected(swarm, tmp_path):
    a = swarm.start("a")
    b = swarm.start("b", bootstrap=[a])
    c = swarm.start("c", bootstrap=[b])
    first = publish(a.home, notes_file(tmp_path / "one.txt", 20_000, seed=1))
    second = publish(a.home, notes_file(tmp_path / "two.txt", 20_000, seed=2))
    a.cli("name", "publish", "notes", cid.to_text(first))
    assert c.cli("name", "resolve", f"{a.peer_id}/notes").out.strip() == cid.to_text(first)
    key = name_record.dht_key(open_node(a.home).author, "notes")
    old_record = bytes.fromhex(json.loads((a.home / "names.json").read_text())["notes"])
    a.cli("name", "publish", "notes", cid.to_text(second))
    assert c.cli("name", "resolve", f"{a.peer_id}/notes").out.strip() == cid.to_text(second)

    # replay: the genuine, validly signed seq 0 record pushed again to every node
    pushed = rogue("put", key, old_record.hex(), a.addr, b.addr, c.addr)
    assert "stored" not in pushed
    # forgery: the current record pointing elsewhere, signature not redone
    fields = canonical.decode(old_record, 4096)
    fields.update(seq=99, cube=first)
    forged = canonical.encode(fields)
    pushed = rogue("put", key, forged.hex(), a.addr, b.addr, c.addr)
    assert "stored" not in pushed
    held = rogue("get", key, a.addr, b.addr, c.addr)
    assert forged.hex() not in held and old_record.hex() not in held
    assert c.cli("name", "resolve", f"{a.peer_id}/notes").out.strip() == cid.to_text(second)


def test_plaintext_peer_gets_no_connection(swarm, tmp_path):
    a = swarm.start("a")
    assert rogue("plaintext", a.addr).startswith("refused")
    listener = subprocess.Popen([sys.executable, "-m", "tests.rogue_peer", "plaintext-listen"],
                                cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        addr = listener.stdout.readline().strip()
        assert "/p2p/" in addr
        d = swarm.start("d", "--bootstrap", addr)  # the daemon dials a plaintext-only peer
        assert "cannot reach peer" in d.log_text()
        assert json.loads(d.cli("status", "--json").out)["connected"] == 0
        assert json.loads(d.cli("peers", "--json").out) == []
    finally:
        listener.kill()
        listener.wait()


def test_restart_keeps_pins_and_announces_them_again(swarm, tmp_path):
    a_home = swarm.home("a")
    cube_id = publish(a_home, notes_file(tmp_path / "notes.txt", 100_000))  # no daemon yet
    b = swarm.start("b")
    a = swarm.start("a", bootstrap=[b])
    c = swarm.start("c", bootstrap=[b])
    assert wait_for(lambda: a.peer_id in providers(c, cube_id))  # pins are announced at start
    assert a.stop() == 0  # SIGTERM: a clean exit
    assert "daemon stopped" in a.log_text() and not (a_home / "daemon.json").exists()

    a = swarm.start("a", bootstrap=[b])
    d = swarm.start("d", bootstrap=[b])  # a newcomer that never saw the first announcement
    assert wait_for(lambda: a.peer_id in providers(d, cube_id))
    listed = json.loads(a.cli("ls", "--pinned", "--json").out)
    assert [e["cid"] for e in listed] == [cid.to_text(cube_id)]
    assert d.cli("get", cid.to_text(cube_id)).code == 0


def test_network_commands_without_a_daemon_fail_in_one_line(tmp_path):
    home = tmp_path / "h"
    memnet(home, "init")
    some = "bafkreidlmomiozfweyq2atesvj2qonfeb76snxvfwk533lki3kqvvz66re"
    for args in (("get", some), ("find", some), ("status",), ("peers",), ("shutdown",),
                 ("name", "resolve", f"{open_node(home).peer_id}/x")):
        assert_one_line_error(memnet(home, *args, check=False), "no daemon is running")
    assert_one_line_error(memnet(home, "find", check=False), "give a CID or --prefix")


def test_second_daemon_for_one_home_and_bad_flags_are_refused(swarm):
    a = swarm.start("a")
    assert_one_line_error(a.cli("daemon", "--listen", "/ip4/127.0.0.1/tcp/0", check=False), "already runs")
    a.stop()
    assert_one_line_error(a.cli("daemon", "--listen", "not-an-addr", check=False), "not a multiaddr")
    assert_one_line_error(a.cli("daemon", "--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap",
                                "/ip4/127.0.0.1/tcp/1", check=False), "/p2p/")


def test_activation_cube_is_found_by_its_prefix_keys(swarm, tmp_path):
    from memnet.cube import car
    from tests import factories

    cube = factories.activation_cube(n_tokens=10, block_size=4)  # keys for 4, 8 and 10 tokens
    with (tmp_path / "kv.car").open("wb") as handle:
        car.write(handle, [cube])
    a = swarm.start("a")
    c = swarm.start("c", bootstrap=[a])
    a.cli("import", str(tmp_path / "kv.car"))  # a running daemon announces what is imported
    for key in cube.manifest.meta["prefix_keys"]:
        found = wait_for(lambda: json.loads(c.cli("find", "--prefix", key.hex(), "--json").out))
        assert [p["peer_id"] for p in found] == [a.peer_id]
    unknown = "ab" * 32
    assert json.loads(c.cli("find", "--prefix", unknown, "--json").out) == []
    assert_one_line_error(c.cli("find", "--prefix", "abcd", check=False), "32-byte")
