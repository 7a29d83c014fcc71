"""The lifecycle policy (memnet/scheduler/policy.py, pure), its store side (lifecycle.py) on a real
LMDB store, the simulation that drives it, `memnet upkeep`, and a real daemon evicting on its own."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memnet import home as home_mod
from memnet.cube import canonical, cid, payloads
from memnet import config as config_mod
from memnet.config import Lifecycle
from memnet.errors import HomeError, StoreError
from memnet.governance import audit
from memnet.scheduler import lifecycle, policy
from memnet.scheduler.policy import ACTIVE, ARCHIVED, EXPIRED, SUPERSEDED, CubeView, UsageCount, evict, transitions
from simulations import lifecycle_sim
from tests.cli_helpers import assert_one_line_error, memnet
from tests.swarm_helpers import Swarm, notes_file

NOW = 1_800_000_000
DAY = 86400
MiB = 1024 * 1024


def view(n: int, **fields) -> CubeView:
    base = dict(cube_id=bytes([n]) * 32, kind="plaintext", size=MiB, created=NOW - 10 * DAY)
    return CubeView(**{**base, **fields})


def states(changes) -> dict[bytes, str]:
    return {t.cube_id: t.new_state for t in changes}


def evicted(plan) -> list[bytes]:
    return [e.cube_id for e in plan.evictions]


# -- transitions ----------------------------------------------------------------------------------

def test_expired_exactly_when_now_reaches_expires_pinned_or_not():
    cubes = [view(1, expires=NOW), view(2, expires=NOW + 1), view(3, expires=NOW - 3 * DAY, pinned=True)]
    changes = transitions(cubes, NOW, Lifecycle())
    assert states(changes) == {view(1).cube_id: EXPIRED, view(3).cube_id: EXPIRED}
    assert [t.reason for t in changes] == ["expired 0 s ago", "expired 3 d ago"]


def test_superseded_by_a_higher_version_of_the_same_author_and_name():
    cubes = [view(1, author=b"a", name="notes", version=1), view(2, author=b"a", name="notes", version=3),
             view(3, author=b"b", name="notes", version=2),     # another author's name
             view(4, author=b"a", name="other", version=1)]
    changes = transitions(cubes, NOW, Lifecycle())
    assert states(changes) == {view(1).cube_id: SUPERSEDED}
    assert changes[0].reason == "superseded by notes v3"


def test_archived_after_archive_after_unused_and_never_when_none():
    config = Lifecycle(archive_after=7 * DAY)
    cubes = [view(1, last_used=NOW - 7 * DAY),              # exactly the limit: not yet
             view(2, last_used=NOW - 7 * DAY - 1),
             view(3, created=NOW - 8 * DAY),                 # never used: arrival counts
             view(4, created=NOW - 30 * DAY, last_used=NOW - DAY)]
    changes = transitions(cubes, NOW, config)
    assert states(changes) == {view(2).cube_id: ARCHIVED, view(3).cube_id: ARCHIVED}
    assert changes[0].reason == "unused for 7 d"
    assert transitions(cubes, NOW, Lifecycle(archive_after=None)) == []


def test_an_archived_cube_used_again_becomes_active():
    config = Lifecycle(archive_after=DAY)
    archived = view(1, state=ARCHIVED, since=NOW - DAY, last_used=NOW - 5 * DAY)
    assert transitions([archived], NOW, config) == []
    changes = transitions([replace(archived, last_used=NOW - 60, hits=1)], NOW, config)
    assert states(changes) == {archived.cube_id: ACTIVE} and changes[0].reason == "used 1 min ago"


def test_final_states_stick_and_expiry_overrides_supersession():
    config = Lifecycle(archive_after=DAY)
    superseded = view(1, state=SUPERSEDED, author=b"a", name="n", version=1)  # its successor is gone
    expired = view(2, state=EXPIRED, expires=NOW - DAY, last_used=NOW)
    assert transitions([superseded, expired], NOW, config) == []
    later = replace(superseded, expires=NOW - 1)
    assert states(transitions([later], NOW, config)) == {later.cube_id: EXPIRED}


def test_transitions_are_deterministic_and_in_cube_id_order():
    cubes = [view(n, expires=NOW - n) for n in (9, 3, 7)]
    assert transitions(cubes, NOW, Lifecycle()) == transitions(list(reversed(cubes)), NOW, Lifecycle())
    assert [t.cube_id[0] for t in transitions(cubes, NOW, Lifecycle())] == [3, 7, 9]


# -- eviction -------------------------------------------------------------------------------------

def test_eviction_goes_expired_and_superseded_then_archived_then_lru():
    cubes = [view(1, last_used=NOW - 1),                          # active, recent
             view(2, last_used=NOW - 5 * DAY),                    # active, old
             view(3, state=ARCHIVED, last_used=NOW - 1),          # archived (used since: tier still counts)
             view(4, state=SUPERSEDED, last_used=NOW),
             view(5, expires=NOW - 1, last_used=NOW),             # expired, even if not marked yet
             view(6, pinned=True, last_used=0, expires=NOW - DAY)]
    plan = evict(cubes, 0, "lru", NOW)
    assert evicted(plan) == [view(n).cube_id for n in (4, 5, 3, 2, 1)]  # 4, 5: one tier, tie -> cube id
    assert not plan.budget_met and plan.kept_bytes == MiB


def test_lfu_takes_fewest_hits_ties_by_recency():
    cubes = [view(1, hits=5, last_used=NOW - 5 * DAY), view(2, hits=1, last_used=NOW - 1),
             view(3, hits=1, last_used=NOW - DAY), view(4, hits=9, last_used=NOW - 9 * DAY)]
    assert evicted(evict(cubes, 0, "lfu", NOW)) == [view(n).cube_id for n in (3, 2, 1, 4)]
    assert evicted(evict(cubes, 0, "lru", NOW)) == [view(n).cube_id for n in (4, 1, 3, 2)]


def test_evicts_only_as_much_as_the_budget_needs():
    cubes = [view(n, size=n * MiB, last_used=NOW - n * DAY) for n in (1, 2, 3, 4)]  # 10 MiB
    assert evict(cubes, None, "lru", NOW) == policy.EvictionPlan([], 10 * MiB, True)
    assert evict(cubes, 10 * MiB, "lru", NOW).evictions == []
    plan = evict(cubes, 6 * MiB, "lru", NOW)  # the oldest (4 MiB) is enough
    assert evicted(plan) == [view(4).cube_id] and plan.kept_bytes == 6 * MiB and plan.budget_met
    plan = evict(cubes, 5 * MiB, "lru", NOW)
    assert evicted(plan) == [view(4).cube_id, view(3).cube_id] and plan.kept_bytes == 3 * MiB


def test_pins_over_budget_evict_every_unpinned_cube_and_say_so():
    cubes = [view(1, size=8 * MiB, pinned=True), view(2, size=MiB), view(3, size=MiB, pinned=True)]
    plan = evict(cubes, 4 * MiB, "lfu", NOW)
    assert evicted(plan) == [view(2).cube_id]
    assert not plan.budget_met and plan.kept_bytes == 9 * MiB


def test_eviction_reasons_are_readable():
    cubes = [view(1, size=12 * MiB, last_used=NOW - 3 * DAY, hits=2), view(2, size=2048, created=NOW - 7200),
             view(3, size=5 * MiB, expires=NOW - 3600), view(4, state=SUPERSEDED, size=MiB),
             view(5, state=ARCHIVED, last_used=NOW - 40 * DAY, size=MiB)]
    reasons = {e.cube_id[0]: e.reason for e in evict(cubes, 0, "lru", NOW).evictions}
    assert reasons == {1: "lru: last used 3 d ago, 12.0 MiB", 2: "lru: never used, arrived 2 h ago, 2.0 KiB",
                       3: "expired 1 h ago, 5.0 MiB", 4: "superseded, 1.0 MiB",
                       5: "archived: last used 40 d ago, 1.0 MiB"}
    lfu = evict(cubes[:1], 0, "lfu", NOW).evictions[0].reason
    assert lfu == "lfu: 2 hits, last used 3 d ago, 12.0 MiB"


def tier(c: CubeView) -> int:
    """The tier order, written out independently of the policy module."""
    if c.state in (EXPIRED, SUPERSEDED) or (c.expires is not None and NOW >= c.expires):
        return 0
    return 1 if c.state == ARCHIVED else 2


cube_sets = st.lists(st.builds(
    dict, size=st.integers(0, 1000), pinned=st.booleans(), hits=st.integers(0, 4),
    last_used=st.one_of(st.just(0), st.integers(NOW - 100, NOW)), created=st.integers(NOW - 200, NOW),
    expires=st.one_of(st.none(), st.integers(NOW - 50, NOW + 50)), state=st.sampled_from(policy.STATES),
), max_size=25)


@settings(max_examples=300, deadline=None)
@given(cube_sets, st.one_of(st.none(), st.integers(0, 8000)), st.sampled_from(policy.STRATEGIES))
def test_eviction_properties(specs, budget, strategy):
    cubes = [view(i, **spec) for i, spec in enumerate(specs)]
    plan = evict(cubes, budget, strategy, NOW)
    gone = set(evicted(plan))
    assert len(gone) == len(plan.evictions)
    assert not any(c.pinned for c in cubes if c.cube_id in gone)
    kept = [c for c in cubes if c.cube_id not in gone]
    assert plan.kept_bytes == sum(c.size for c in kept)
    pinned_size = sum(c.size for c in cubes if c.pinned)
    if budget is None:
        assert not gone
    elif pinned_size <= budget:
        assert plan.budget_met and plan.kept_bytes <= budget
        if plan.evictions:  # minimal: without the last eviction the budget would not be met
            last = next(c for c in cubes if c.cube_id == plan.evictions[-1].cube_id)
            assert plan.kept_bytes + last.size > budget
    else:
        assert not plan.budget_met and all(c.pinned for c in kept)
    # order: everything evicted ranks before everything unpinned that stays
    def key(c):
        recency = c.last_used or c.created
        return (tier(c), recency, c.hits) if strategy == "lru" else (tier(c), c.hits, recency)
    for e in (c for c in cubes if c.cube_id in gone):
        for k in (c for c in kept if not c.pinned):
            assert key(e) <= key(k)


@settings(max_examples=200, deadline=None)
@given(cube_sets, st.one_of(st.none(), st.integers(1, 150)))
def test_transitions_settle_in_one_pass(specs, archive_after):
    config = Lifecycle(archive_after=archive_after)
    cubes = [view(i, author=b"a", name=f"n{i % 3}", version=i + 1, **spec) for i, spec in enumerate(specs)]
    changes = transitions(cubes, NOW, config)
    assert all(t.reason for t in changes)
    assert transitions(policy.with_transitions(cubes, changes, NOW), NOW, config) == []


# -- config ---------------------------------------------------------------------------------------

def lifecycle_of(raw: dict) -> Lifecycle:
    return config_mod.parse(raw).lifecycle


def test_config_from_node_config():
    assert lifecycle_of({"chunk_size": 1024}) == Lifecycle()
    got = lifecycle_of({"store_budget_bytes": "1.5 GiB", "eviction": "lfu", "archive_after": "12h",
                        "promote_after": 5, "upkeep_interval": 0.5})
    assert got == Lifecycle(int(1.5 * 1024**3), "lfu", 12 * 3600, 5, 0.5)
    assert lifecycle_of({"store_budget_bytes": 0, "archive_after": None}) == Lifecycle(0, archive_after=None)
    assert lifecycle_of({"store_budget_bytes": "2GB", "upkeep_interval": "2 min"}) == \
        Lifecycle(2_000_000_000, upkeep_interval=120.0)
    assert Lifecycle().audit_keep == 100_000
    assert lifecycle_of({"audit_keep": 5}).audit_keep == 5
    assert lifecycle_of({"audit_keep": None}).audit_keep is None


@pytest.mark.parametrize("config, phrase", [
    ({"store_budget_bytes": -1}, "store_budget_bytes"),
    ({"store_budget_bytes": "12 parsecs"}, "store_budget_bytes"),
    ({"store_budget_bytes": "1" * 5000}, "store_budget_bytes"),     # oversized
    ({"store_budget_bytes": "1 Gi"}, "store_budget_bytes"),          # truncated unit
    ({"store_budget_bytes": True}, "store_budget_bytes"),
    ({"store_budget_bytes": [1]}, "store_budget_bytes"),
    ({"eviction": "fifo"}, "eviction"),
    ({"eviction": None}, "eviction"),
    ({"eviction": "x" * 10_000}, "eviction"),                      # oversized, shown cut short
    ({"archive_after": 0}, "archive_after"),
    ({"archive_after": "soon"}, "archive_after"),
    ({"promote_after": 0}, "promote_after"),
    ({"promote_after": 2.5}, "promote_after"),
    ({"upkeep_interval": 0}, "upkeep_interval"),
    ({"upkeep_interval": float("inf")}, "upkeep_interval"),
    ({"upkeep_interval": False}, "upkeep_interval"),
    ({"audit_keep": 0}, "audit_keep"),
    ({"audit_keep": "many"}, "audit_keep"),
    ({"audit_keep": 2.5}, "audit_keep"),
    ({"audit_keep": True}, "audit_keep"),
])
def test_bad_config_is_one_line(config, phrase):
    with pytest.raises(HomeError) as info:
        config_mod.parse(config)
    message = str(info.value)
    assert message.startswith(f"config.json: {phrase}") and "\n" not in message and len(message) < 200


# -- simulation -----------------------------------------------------------------------------------

def test_simulation_holds_its_invariants_and_compares_strategies(capsys):
    w = lifecycle_sim.Workload(cubes=60, days=4, accesses_per_hour=10, drift_swaps_per_day=30)
    results = lifecycle_sim.compare(w, fractions=(0.005, 0.1, 0.3))  # asserts every pass
    assert [(r.strategy, r.budget) for r in results][:2] == [("lru", results[0].budget), ("lfu", results[0].budget)]
    assert results[0].passes_over_budget == 4 * 24  # the smallest budget is below the pins' size
    assert all(r.passes_over_budget == 0 for r in results[2:])
    assert all(0 < r.hit_rate < 1 for r in results)
    by_budget = [r.hit_rate for r in results if r.strategy == "lru"]
    assert by_budget == sorted(by_budget)  # more room, more hits
    lifecycle_sim.main(["--cubes", "40", "--days", "2"])
    printed = capsys.readouterr().out
    assert "invariants held at every pass" in printed and printed.count("lfu") == 8


# -- lifecycle on a real store --------------------------------------------------------------------

@pytest.fixture
def node(tmp_path):
    n = home_mod.init(tmp_path / "home")
    yield n
    n.store.close()


def publish(node, text: str, size: int = 0, **kw):
    payload, meta = payloads.encode_items([{"text": text + "x" * size}]), {"items": 1}
    return node.publisher.publish("plaintext", payload, meta, **kw).cube_id


def recorded(node, cube_id: bytes) -> dict:
    return lifecycle.decode_record(node.store.get_record(lifecycle.TABLE, cube_id))


def test_apply_expires_supersedes_archives_and_records_states(node):
    now = int(time.time())
    expiring = publish(node, "short-lived", ttl=60)
    v1 = publish(node, "notes one", name="notes")
    v2 = publish(node, "notes two", name="notes")
    idle = publish(node, "idle", pin=False)
    config = Lifecycle(archive_after=3600)

    first = lifecycle.apply(node.store, config, now=now + 10)
    assert states(first.transitions) == {v1: SUPERSEDED}
    assert recorded(node, v1) == {"state": SUPERSEDED, "since": now + 10, "reason": "superseded by notes v2"}

    later = lifecycle.apply(node.store, config, now=now + 7200)
    assert states(later.transitions) == {expiring: EXPIRED, v2: ARCHIVED, idle: ARCHIVED}
    assert later.withdrawn() == [expiring]
    assert lifecycle.state_names(node.store) == {v1: SUPERSEDED, expiring: EXPIRED, v2: ARCHIVED, idle: ARCHIVED}
    assert lifecycle.apply(node.store, config, now=now + 7200).transitions == []

    node.store.clock = lambda: now + 7000
    node.store.record_access(v2)  # used again (at now + 7000): active on the next pass
    node.store.clock = time.time
    again = lifecycle.apply(node.store, config, now=now + 7200)
    assert states(again.transitions) == {v2: ACTIVE}
    assert lifecycle.state_names(node.store).get(v2, ACTIVE) == ACTIVE
    assert all(node.store.has(c) for c in (expiring, v1, v2, idle))  # no budget: nothing evicted


def test_apply_evicts_under_a_small_budget_and_pins_survive(node):
    pinned = publish(node, "cube-a", 20_000)  # three of one size
    old = publish(node, "cube-b", 20_000, pin=False)
    used = publish(node, "cube-c", 20_000, pin=False)
    node.store.record_access(used)
    size = node.store.entry(pinned).manifest.size
    now = int(time.time()) + 60
    config = Lifecycle(store_budget_bytes=2 * size + 100, archive_after=None)

    dry = lifecycle.apply(node.store, config, now=now, dry_run=True)
    assert evicted(dry.plan) == [old] and dry.plan.evictions[0].reason.startswith("lru: never used")
    assert node.store.has(old) and not dry.executed

    done = lifecycle.apply(node.store, config, now=now)
    assert done.evicted == [old] and done.plan.budget_met and done.withdrawn() == [old]
    assert not node.store.has(old) and node.store.has(used) and node.store.has(pinned)
    assert node.store.verify(used).manifest.size == size

    tiny = lifecycle.apply(node.store, replace(config, store_budget_bytes=10), now=now)
    assert tiny.evicted == [used] and not tiny.plan.budget_met and tiny.plan.kept_bytes == size
    assert [e.cube_id for e in node.store.entries()] == [pinned]
    assert node.store.usage()["chunks"] == len(node.store.manifest(pinned).chunks)


def test_a_cube_pinned_between_plan_and_execute_is_kept(node):
    cube = publish(node, "racy", pin=False)
    p = lifecycle.plan(node.store, Lifecycle(store_budget_bytes=0))
    assert evicted(p.plan) == [cube]
    node.store.pin(cube, "manual")  # another process pins it meanwhile
    lifecycle.execute(node.store, p)
    assert p.evicted == [] and p.skipped[0][0] == cube and "pinned" in p.skipped[0][1]
    assert node.store.has(cube)


@pytest.mark.parametrize("raw", [
    b"",                                                                          # truncated
    canonical.encode({"state": "expired", "since": 1, "reason": "x"})[:-1],      # truncated
    canonical.encode({"state": "expired", "since": 1, "reason": "x" * 5000}),    # oversized
    canonical.encode({"state": "vanished", "since": 1, "reason": ""}),           # forged state
    canonical.encode({"state": "expired", "since": -1, "reason": ""}),
    canonical.encode({"state": "expired", "since": 1, "reason": "", "extra": 1}),
    canonical.encode(["expired", 1, ""]),
    b"\x83\xa5state\xa7expired\xa5since\x01\xa6reason\xa0",                      # keys out of order
])
def test_malformed_lifecycle_records_are_refused_and_cleaned_up(node, raw):
    with pytest.raises(StoreError):
        lifecycle.decode_record(raw)
    cube = publish(node, "victim")
    node.store.put_records(lifecycle.TABLE, [(cube, raw), (b"\x01" * 36, raw)])  # and a gone cube's
    assert lifecycle.state_names(node.store).get(cube, ACTIVE) == ACTIVE  # unreadable: active
    p = lifecycle.apply(node.store, Lifecycle())
    assert sorted(p.stale_records) == sorted([cube, b"\x01" * 36])
    assert node.store.records(lifecycle.TABLE) == []


def test_memory_set_usage_is_counted_and_promotion_recorded(node):
    for n in range(3):
        assert lifecycle.record_set_use(node.store, b"set-a", now=100 + n) == UsageCount(n + 1, 100 + n)
    lifecycle.record_set_use(node.store, b"set-b")
    assert lifecycle.set_uses(node.store, b"set-a") == 3 and lifecycle.set_uses(node.store, b"set-b") == 1
    assert lifecycle.set_uses(node.store, b"never") == 0
    lifecycle.mark_promoted(node.store, b"set-a", b"\x01" * 36, now=200)
    assert canonical.decode(node.store.get_record(lifecycle.PROMOTED_TABLE, b"set-a"), 1024) == \
        {"cube": b"\x01" * 36, "at": 200}
    node.store.put_records(lifecycle.USAGE_TABLE, [(b"set-c", b"\xc1")])  # unreadable: counts from zero
    assert lifecycle.record_set_use(node.store, b"set-c") .count == 1


# -- the command line -----------------------------------------------------------------------------

def set_config(home, **values) -> None:
    path = home / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **values}))


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """cli.main.main in this process (each subprocess costs a second of imports): (code, out, err)."""
    from cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


@pytest.mark.slow
def test_cli_upkeep_dry_run_then_real_pass_and_ls_state(tmp_path, capsys):
    home = tmp_path / "home"

    def cli(*args) -> str:
        code, out, err = run_cli(capsys, "--home", home, *args)
        assert code == 0, err
        return out

    cli("init")
    pinned = cli("publish", notes_file(tmp_path / "a.txt", 30_000), "--ttl", "1").strip()
    loose = cli("publish", notes_file(tmp_path / "b.txt", 30_000, seed=2), "--no-pin").strip()
    time.sleep(1.1)
    set_config(home, store_budget_bytes=1000)

    dry = json.loads(cli("upkeep", "--dry-run", "--json"))
    assert dry["dry_run"] and [e["cube"] for e in dry["evictions"]] == [loose]
    assert [(t["cube"], t["state"]) for t in dry["transitions"]] == [(pinned, "expired")]
    assert {c["cid"] for c in json.loads(cli("ls", "--json"))} == {pinned, loose}

    text = cli("upkeep")
    assert f"expired     {pinned}  expired" in text and f"evicted     {loose}  lru: never used" in text
    assert "pinned cubes alone exceed the budget" in text
    listed = json.loads(cli("ls", "--json"))
    assert [(c["cid"], c["state"]) for c in listed] == [(pinned, "expired")]
    assert "expired" in cli("ls")
    assert json.loads(cli("upkeep", "--json"))["transitions"] == []

    set_config(home, eviction="random")
    assert_one_line_error(memnet(home, "upkeep", check=False), "eviction")  # a real process: exit code, stderr


# -- a real daemon --------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.timeout(120)
def test_daemon_evicts_a_fetched_cube_and_withdraws_an_expired_one_on_its_own(tmp_path):
    swarm = Swarm(tmp_path)
    try:
        a = swarm.start("a")
        fetched = cid.from_text(memnet(a.home, "publish", str(notes_file(tmp_path / "a.txt", 50_000))).out.strip())
        set_config(swarm.home("b"), store_budget_bytes=1, upkeep_interval=1, audit_keep=1)
        node_b = home_mod.open_node(swarm.home("b"))
        for i in range(3):
            audit.record_answer(node_b.store, kind="ask", prompt_ids_or_text_digest=f"q{i}", answer_digest="a", cubes=[])
        node_b.store.close()
        b = swarm.start("b", bootstrap=[a])

        def status():
            return json.loads(b.cli("status", "--json").out)

        mine = b.cli("publish", str(notes_file(tmp_path / "b.txt", 20_000, seed=3)), "--ttl", "6").out.strip()
        assert status()["providing"] == 1
        wait_for(lambda: a.peer_id in {p["peer_id"] for p in json.loads(
            b.cli("find", cid.to_text(fetched), "--json").out)})
        b.cli("get", "--no-pin", cid.to_text(fetched))
        wait_for(lambda: f"upkeep: evicted {cid.to_text(fetched)} (lru:" in b.log_text())
        assert cid.to_text(fetched) not in b.cli("ls").out

        wait_for(lambda: status()["providing"] == 0)  # expired: withdrawn, but pinned, so kept
        listed = json.loads(b.cli("ls", "--json").out)
        assert [(c["cid"], c["state"]) for c in listed] == [(mine, "expired")]
        log = b.log_text()
        assert f"upkeep: stopped providing {mine}" in log and f"upkeep: {mine} is now expired" in log
        assert log.count("pinned cubes alone hold") == 1  # said once, not every second
        assert "upkeep: pruned 2 audit entries (keeping the newest 1)" in log
        assert b.alive()
    finally:
        swarm.close()


def wait_for(predicate, timeout: float = 30, step: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step)
    raise AssertionError("condition not reached in time")
