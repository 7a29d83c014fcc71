"""Consolidation (issue 19): the pure policy (candidates, budgets, the cap, demotion, the fact
judge, the gate, the choice of way), then distillation on a real store with the real MiniLM
embedder and the tiny Llama (lineage, the gate refusing, supersession when the notes change,
budgets, the records' parsers, the CLI, the daemon's background run), and on the real SmolLM2."""

from __future__ import annotations

import json
import struct
import time
from dataclasses import replace

import pytest
import trio

from memnet import home
from memnet.config import AskSettings, ConsolidationSettings, load as load_config
from memnet.cube import canonical, cid
from memnet.errors import FormatError, NotFoundError, UsageError
from memnet.governance import audit
from memnet.memory import index
from memnet.model import loader
from memnet.scheduler import ask as ask_mod
from memnet.scheduler import consolidate as cons
from memnet.scheduler import consolidation as policy
from memnet.scheduler import lifecycle
from memnet.scheduler.consolidation import PathOption, Record, SetFacts
from tests.cli_helpers import assert_one_line_error, memnet

NOW = 1_800_000_000
CONFIG = ConsolidationSettings()
KEY_A, KEY_B, KEY_C = b"\x0a" * 32, b"\x0b" * 32, b"\x0c" * 32
NOTE = cid.cid_of(b"note")


def facts(key=KEY_A, uses=10, repeated=2, agreeing=2, **kw) -> SetFacts:
    return SetFacts(key, uses, NOW - 60, repeated, agreeing, notes=(NOTE,), **kw)


# -- the policy, pure ---------------------------------------------------------------------------

@pytest.mark.parametrize("kw,record,spent,candidate,phrase", [
    ({}, None, 0.0, True, "used 10 times (threshold 8), answers stable"),
    ({"uses": 7}, None, 0.0, False, "used 7/8 times"),
    ({"repeated": 3, "agreeing": 2}, None, 0.0, False, "answers not stable: 2 of 3"),
    ({"repeated": 0, "agreeing": 0}, None, 0.0, True, "answers stable"),
    ({"with_adapters": True}, None, 0.0, False, "asked with LoRA cubes"),
    ({"notes_live": False}, None, 0.0, False, "newer version"),
    ({}, None, 900.0, False, "today's CPU budget is spent (900/900 s)"),
    ({}, Record(KEY_A, policy.ACTIVE, NOW - 10), 0.0, False, "already consolidated"),
    ({}, Record(KEY_A, policy.DISCARDED, NOW - 3600, reason="answered 1 of 4"), 0.0, False, "failed its gate 1 h ago"),
    ({}, Record(KEY_A, policy.DISCARDED, NOW - 8 * 86400), 0.0, True, "answers stable"),
    ({}, Record(KEY_A, policy.SUPERSEDED, NOW - 10), 0.0, True, "answers stable"),
])
def test_candidates_follow_uses_stability_budget_and_records(kw, record, spent, candidate, phrase):
    records = {KEY_A: record} if record else {}
    (verdict,) = policy.verdicts([facts(**kw)], records, spent, CONFIG, NOW)
    assert verdict.candidate is candidate and phrase in verdict.reason, verdict.reason
    assert (policy.next_candidate([facts(**kw)], records, spent, CONFIG, NOW) == KEY_A) is candidate


def test_the_cap_on_adapters_and_the_most_used_set_first():
    sets = [facts(KEY_B, uses=9), facts(KEY_C, uses=30)]
    assert policy.next_candidate(sets, {}, 0.0, CONFIG, NOW) == KEY_C
    full = {bytes([i]) * 32: Record(bytes([i]) * 32, policy.ACTIVE, NOW) for i in range(1, 5)}
    verdicts = policy.verdicts(sets, full, 0.0, CONFIG, NOW)
    assert [v.candidate for v in verdicts] == [False, False]
    assert "cap of 4 consolidated adapters" in verdicts[0].reason
    assert policy.next_candidate(sets, {}, 0.0, replace(CONFIG, enabled=False), NOW) is None
    assert policy.remaining_cpu(850.0, CONFIG) == 50.0 and policy.remaining_cpu(1e9, CONFIG) == 0.0


def test_demotion_archives_unused_and_supersedes_changed_notes():
    records = [Record(KEY_A, policy.ACTIVE, NOW - 30 * 86400, cid.cid_of(b"a"), last_used=NOW - 20 * 86400),
               Record(KEY_B, policy.ACTIVE, NOW - 30 * 86400, cid.cid_of(b"b"), last_used=NOW - 86400),
               Record(KEY_C, policy.ARCHIVED, NOW - 30 * 86400, cid.cid_of(b"c"))]
    changes = policy.demotions(records, {KEY_A: True, KEY_B: False, KEY_C: False}, NOW, CONFIG)
    assert [(t.set_key, t.new_state) for t in changes] == [
        (KEY_A, policy.ARCHIVED), (KEY_B, policy.SUPERSEDED), (KEY_C, policy.SUPERSEDED)]
    assert "unused for 20 d" in changes[0].reason and "newer version" in changes[1].reason
    assert policy.demotions(records[:1], {KEY_A: True}, NOW, replace(CONFIG, archive_after=None)) == []


def test_the_fact_judge_reads_facts_not_wording():
    note = "The office wifi network is Heron; its password is tangerine-42."
    reference = "The password of the office wifi is tangerine-42, on the Heron network."
    wanted = policy.facts(reference, note, "What is the wifi password?")
    assert wanted == {"tangerine-42", "heron"}          # distinctive facts; not "network", not the question's words
    assert policy.states_facts("It is tangerine-42.", wanted, CONFIG)            # half the facts: enough at 0.5
    assert not policy.states_facts("It is tangerine-42.", wanted, replace(CONFIG, fact_recall=0.75))
    assert not policy.states_facts("The password of the office wifi is 123456.", wanted, CONFIG)
    assert policy.facts("I do not know.", note, "What is the wifi password?") == set()
    cat = "The cat is fed at seven and at nineteen with the blue tin."
    assert policy.facts("It eats at seven and nineteen.", cat, "When is the cat fed?") == {"seven", "nineteen"}
    assert not policy.states_facts("anything", set(), CONFIG)


@pytest.mark.parametrize("judged,passed,phrase", [
    ([(True, True)] * 4 + [(True, False)], True, "answered 4 of 5 held-back questions (80%)"),
    ([(True, True)] * 3 + [(True, False)] * 2, False, "answered 3 of 5 held-back questions (60%)"),
    ([(True, True), (True, True), (False, False), (False, True)], False, "answered only 2 of 4"),
    ([], False, "answered only 0 of 0"),
])
def test_the_gate(judged, passed, phrase):
    result = policy.gate(judged, CONFIG)
    assert result.passed is passed and phrase in result.reason, result.reason
    assert policy.gate([], replace(CONFIG, gate_accuracy=0.0, min_judged=0)).passed   # no gate: configured off


def test_the_way_is_the_fastest_one_accurate_enough():
    notes, kv = PathOption("notes", 0.40), PathOption("kv", 0.05)
    good, poor = PathOption("adapter", 0.03, 0.9), PathOption("adapter", 0.03, 0.7)
    assert policy.choose_path([notes, kv, good], CONFIG).way == "adapter"
    refused = policy.choose_path([notes, kv, poor], CONFIG)
    assert refused.way == "kv" and "gate accuracy 70% is below 80%" in refused.reason
    assert policy.choose_path([notes, PathOption("adapter", 0.5, 1.0)], CONFIG).way == "notes"
    unmeasured = policy.choose_path([PathOption("notes", None), PathOption("adapter", None, 1.0)], CONFIG)
    assert unmeasured.way == "notes"
    assert "adapter ≈ 30 ms (90% by its gate)" in policy.choose_path([notes, good], CONFIG).reason


# -- records: parsers refuse what is not theirs --------------------------------------------------

def test_records_round_trip_and_bad_ones_are_refused(node):
    record = Record(KEY_A, policy.ACTIVE, NOW, cid.cid_of(b"x"), 0.8, 5, (NOTE,), NOW + 1, 9, "passed")
    raw = cons.encode_record(record, cpu_seconds=12.5, apply_seconds=0.2)
    back, extra = cons.decode_record(KEY_A, raw)
    assert back == record and extra["cpu_ms"] == 12500 and extra["apply_ms"] == 200
    for bad in (raw[:-3], b"\xc1", canonical.encode({"state": "dreaming"}),
                canonical.encode({**canonical.decode(raw, 4096), "state": "zombie"}),
                canonical.encode({k: v for k, v in canonical.decode(raw, 4096).items() if k != "at"}),
                canonical.encode({**canonical.decode(raw, 4096), "adapter": 5}),           # forged fields
                canonical.encode({**canonical.decode(raw, 4096), "parents": [b"not a cid"]}),
                canonical.encode({**canonical.decode(raw, 4096), "accuracy": 1001}),
                canonical.encode({**canonical.decode(raw, 4096), "at": -1}),
                canonical.encode([1, 2, 3]), b"\x00" * (cons.MAX_RECORD + 10)):
        with pytest.raises(FormatError):
            cons.decode_record(KEY_A, bad)
    node.store.put_records(cons.TABLE, [(KEY_A, raw), (KEY_B, b"\xc1garbage")])
    forged_members = canonical.encode({"members": [[b"x", 0]], "adapters": False})
    negative_item = canonical.encode({"members": [[NOTE, -1]], "adapters": False})
    node.store.put_records(cons.MEMBERS_TABLE, [(KEY_C, b"\x93\x01"), (KEY_A, forged_members), (KEY_B, negative_item)])
    assert list(cons.records(node.store)) == [KEY_A]          # the unreadable one counts as none
    assert cons.record_of(node.store, KEY_B) is None
    assert [cons.members_of(node.store, k) for k in (KEY_A, KEY_B, KEY_C)] == [None, None, None]
    cons.note_members(node.store, b"\x0d" * 32, [(NOTE, 2)], False)
    assert cons.members_of(node.store, b"\x0d" * 32) == ([(NOTE, 2)], False)
    node.store.put_records(cons.CPU_TABLE, [(struct.pack(">I", policy.day_of(NOW)), b"junk")])
    assert cons.spent_today(node.store, NOW) == 0.0
    assert cons.add_cpu(node.store, 30.0, NOW) == 30.0 and cons.add_cpu(node.store, 2.5, NOW) == 32.5
    assert cons.spent_today(node.store, NOW + 86400) == 0.0  # a new UTC day, a new budget
    with pytest.raises(UsageError, match="not a memory set key"):
        cons.find_set(node.store, "xyz")
    with pytest.raises(NotFoundError, match="no memory set"):
        cons.find_set(node.store, "abcdef")


# -- distillation on the tiny model -------------------------------------------------------------

WIFI = "The office wifi network is Heron; its password is tangerine-42."
CAT = "The cat is fed at seven and at nineteen with the blue tin."
SETTINGS = AskSettings(k=1, min_score=0.3)
OPEN = ConsolidationSettings(after_uses=2, steps=2, gate_accuracy=0.0, min_judged=0)  # no gate: tiny answers nothing


def asked(node, loaded, question: str, times: int, **kw):
    return [ask_mod.ask(node.publisher, node.gate(), node.perf, loaded, question, settings=SETTINGS, max_new_tokens=3,
                        promote=False, **kw) for _ in range(times)]


@pytest.mark.slow
def test_a_hot_set_is_distilled_with_lineage_then_superseded_when_its_note_changes(node, tiny):
    note = index.remember(node.publisher, WIFI, name="wifi")
    index.remember(node.publisher, CAT)
    run = asked(node, tiny, "What is the wifi password?", 2)
    key = run[0].plan.set_key
    assert cons.members_of(node.store, key) == ([(note.cube_id, 0)], False)
    (verdict,) = cons.candidates(node.store, OPEN)
    assert verdict.set_key == key and verdict.candidate
    assert audit.entries(node.store)[-1]["extra"]["question"] == "What is the wifi password?"
    seen = []
    outcome = cons.distil(node.publisher, node.gate(), node.perf, tiny, key, OPEN,
                          progress=lambda stage, done, total: seen.append(stage))
    assert outcome.cube is not None and outcome.gate.passed
    assert {"answers", "training", "gate"} <= set(seen)
    m = outcome.cube.manifest
    assert m.kind == "parameter" and m.parents == (note.cube_id,) and m.meta["base_model"] == tiny.pinned.fingerprint
    assert cons.TAG in m.tags and node.store.entry(outcome.cube.cube_id).pin is None
    assert outcome.pairs == 4 + 1 and outcome.held_back == 3 + 1   # 4 wordings + 1 note; 3 wordings + 1 note held back
    assert outcome.cpu_seconds > 0 and cons.spent_today(node.store) >= outcome.cpu_seconds * 0.99
    assert cons.usable(node.store, key).adapter == outcome.cube.cube_id
    # ask answers from the adapter, with the question alone, and says so
    via = asked(node, tiny, "What is the wifi password?", 1, consolidation=OPEN, way="adapter")[0]
    assert via.plan.way == "adapter" and via.generation.prompt_tokens < run[0].generation.prompt_tokens
    assert tiny.adapters.get("specs") is None                       # the caller's (no) adapters given back
    explained = "\n".join(via.plan.explain())
    assert "adapter   …" in explained and "answering from it" in explained and "way       adapter" in explained
    logged = audit.entries(node.store)[-1]
    assert [c["role"] for c in logged["cubes"]] == ["lora"] and logged["cubes"][0]["cid"] == outcome.cube.cube_id
    assert logged["extra"]["adapter_way"] is True
    assert cons.record_of(node.store, key)[0].last_used > 0
    # a new version of the note: the adapter is never used again, and upkeep supersedes it
    index.remember(node.publisher, WIFI.replace("tangerine-42", "mango-7"), name="wifi")
    assert cons.usable(node.store, key) is None
    again = asked(node, tiny, "What is the wifi password?", 1, consolidation=OPEN, way="adapter")[0]
    assert again.plan.way == "notes" and "no consolidated adapter" in again.plan.way_reason
    lifecycle.apply(node.store, node.config.lifecycle)     # the old note is superseded in the store too
    (change,) = cons.upkeep(node.store, OPEN)
    assert change.new_state == policy.SUPERSEDED and cons.record_of(node.store, key)[0].state == policy.SUPERSEDED
    fresh = asked(node, tiny, "What is the wifi password?", 1, consolidation=OPEN)[0]
    assert "mango-7" in fresh.plan.memories[0].text and fresh.plan.set_key != key


@pytest.mark.slow
def test_the_gate_discards_an_adapter_that_does_not_answer(node, tiny):
    index.remember(node.publisher, WIFI)
    key = asked(node, tiny, "What is the wifi password?", 2)[0].plan.set_key
    gated = replace(OPEN, gate_accuracy=0.8, min_judged=1)
    outcome = cons.distil(node.publisher, node.gate(), node.perf, tiny, key, gated)
    assert outcome.cube is None and not outcome.gate.passed
    assert not [e for e in node.store.entries() if e.manifest.kind == "parameter"]     # nothing published
    record = cons.record_of(node.store, key)[0]
    assert record.state == policy.DISCARDED and "held-back questions" in record.reason
    (verdict,) = cons.candidates(node.store, gated)
    assert not verdict.candidate and "failed its gate" in verdict.reason
    # the budget: spent, nothing more is distilled today
    cons.add_cpu(node.store, gated.cpu_budget_per_day)
    with pytest.raises(UsageError, match="CPU budget is spent"):
        cons.distil(node.publisher, node.gate(), node.perf, tiny, key, gated)


@pytest.mark.slow
def test_cli_consolidate_lists_distils_and_refuses_bad_input(tmp_path, models, tiny_model_dir):
    where = tmp_path / "cli"
    memnet(where, "init")
    memnet(where, "model", "pin", str(tiny_model_dir))
    from memnet import config as config_mod

    raw = {"consolidation": {"after_uses": 2, "steps": 2, "gate_accuracy": 0, "min_judged": 0}}
    config_mod.write_raw(where, {**config_mod.read_raw(where), **raw})
    memnet(where, "remember", WIFI)
    for _ in range(2):
        memnet(where, "ask", "What is the wifi password?", "-n", "2", "-k", "1", "--no-promote")
    listed = json.loads(memnet(where, "consolidate", "--json").out)
    (row,) = listed["sets"]
    assert row["candidate"] and row["uses"] == 2 and listed["cpu_budget"] == 900
    shown = memnet(where, "consolidate", row["memory_set"][:8])
    assert "published" in shown.out and "trained on 5 pairs" in shown.out
    assert_one_line_error(memnet(where, "consolidate", "zz", check=False), "not a memory set key")
    assert_one_line_error(memnet(where, "ask", "q", "--way", "telepathy", check=False), "--way")


@pytest.mark.slow
def test_the_daemon_upkeep_distils_in_the_background_within_the_budget(node, tiny, tiny_model_dir):
    from memnet.daemon.upkeep import Upkeep

    index.remember(node.publisher, WIFI)
    index.remember(node.publisher, CAT)
    first = asked(node, tiny, "What is the wifi password?", 2)[0].plan.set_key
    second = asked(node, tiny, "When is the cat fed?", 2)[0].plan.set_key
    raw = {"consolidation": {"after_uses": 2, "steps": 2, "gate_accuracy": 0, "min_judged": 0}}
    from memnet import config as config_mod

    config_mod.write_raw(node.home, {**config_mod.read_raw(node.home), **raw})
    config = load_config(node.home)
    upkeep = Upkeep(node.store, None, config, node.home, lambda: True)

    async def main():
        async with trio.open_nursery() as nursery:
            upkeep._nursery = nursery
            started = await upkeep.consolidation_pass()
            assert started in (first, second) and upkeep.distilling["memory_set"] == started.hex()
            assert await upkeep.consolidation_pass() is None      # one at a time
            stages = set()
            with trio.fail_after(120):
                while upkeep.distilling is not None:
                    stages.add(upkeep.distilling["stage"])
                    await trio.sleep(0.05)
            assert upkeep.last_distilled["published"] and stages - {"starting"}, stages   # progress seen
            # turned off while the next one runs: the child is killed, and the set waits
            assert await upkeep.consolidation_pass() not in (None, started)
            upkeep.configure(replace(config, consolidation=replace(config.consolidation, enabled=False)))
            with trio.fail_after(30):
                while upkeep.distilling is not None:
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
        return started

    started = trio.run(main)
    other = second if started == first else first
    assert cons.record_of(node.store, started)[0].state == policy.ACTIVE
    stopped = cons.record_of(node.store, other)[0]
    assert stopped.state == policy.DISCARDED and stopped.reason == "stopped: cancelled"
    status = upkeep.status()
    assert status["running"] is None and status["cpu_today"] > 0 and not status["enabled"]


@pytest.mark.slow
def test_a_distillation_over_the_cpu_budget_is_stopped_by_the_kernel(node, tiny):
    from memnet import config as config_mod
    from memnet.daemon.upkeep import Upkeep

    index.remember(node.publisher, WIFI)
    key = asked(node, tiny, "What is the wifi password?", 2)[0].plan.set_key
    raw = {"consolidation": {"after_uses": 2, "steps": 100000, "gate_accuracy": 0, "min_judged": 0,
                             "cpu_budget_per_day": 2}}
    config_mod.write_raw(node.home, {**config_mod.read_raw(node.home), **raw})
    upkeep = Upkeep(node.store, None, load_config(node.home), node.home, lambda: True)

    async def main():
        async with trio.open_nursery() as nursery:
            upkeep._nursery = nursery
            assert await upkeep.consolidation_pass() == key
            with trio.fail_after(120):
                while upkeep.distilling is not None:
                    await trio.sleep(0.05)

    mark = time.monotonic()
    trio.run(main)
    record = cons.record_of(node.store, key)[0]
    assert record.state == policy.DISCARDED and "over the day's CPU budget" in record.reason, record.reason
    assert 1.5 <= cons.spent_today(node.store) < 30 and time.monotonic() - mark < 120
    assert not upkeep.last_distilled["published"]


# -- the real SmolLM2 ---------------------------------------------------------------------------

@pytest.mark.slow
def test_smollm2_adapter_answers_without_the_notes(tmp_path, monkeypatch, smollm2_models_dir):
    monkeypatch.setenv("MEMNET_MODELS", str(smollm2_models_dir))
    node = home.init(tmp_path / "smol")
    loaded = loader.load(node.models.pin("smollm2")[0])
    note = index.remember(node.publisher, WIFI)
    index.remember(node.publisher, CAT)
    settings = AskSettings(k=2)
    for _ in range(2):   # one question asked twice: 4 training wordings, 3 held-back ones, and the note's
        ask_mod.ask(node.publisher, node.gate(), node.perf, loaded, "What is the password of the office wifi?",
                    settings=settings, max_new_tokens=16)
    (verdict,) = cons.candidates(node.store, replace(CONFIG, after_uses=2))
    lesson = cons.collect(node.publisher, node.gate(), node.perf, loaded, verdict.set_key, CONFIG)
    # two steps of training: the adapter does not know the facts, and the gate refuses it
    bad = cons.train_and_judge(node.publisher, node.gate(), node.perf, loaded, lesson, replace(CONFIG, steps=2))
    assert not bad.gate.passed and bad.cube is None and bad.gate.judged >= 3, bad.examples
    assert cons.record_of(node.store, verdict.set_key)[0].state == policy.DISCARDED
    outcome = cons.train_and_judge(node.publisher, node.gate(), node.perf, loaded, lesson, replace(CONFIG, steps=30))
    assert outcome.gate.passed, outcome.examples            # the real gate: 80 % of the held-back questions
    assert outcome.cube.manifest.parents == (note.cube_id,)
    plain = ask_mod.ask(node.publisher, node.gate(), node.perf, loaded, "What is the password of the office wifi?",
                        settings=settings, max_new_tokens=16, consolidation=CONFIG, way="adapter")
    assert plain.plan.way == "adapter" and "tangerine-42" in plain.text
    assert plain.generation.prompt_tokens < plain.plan.prompt_tokens - 20   # the question alone, no notes


def test_a_simulated_month_keeps_the_budget_the_cap_and_no_stale_adapter():
    from simulations import consolidation_sim as sim

    config = ConsolidationSettings(cpu_budget_per_day=300.0, max_adapters=2, archive_after=2 * 86400)
    workload = sim.Workload(sets=40, days=8, asks_per_hour=10, change_per_day=0.1, pass_rate=0.5)
    result = sim.run(workload, config)   # asserts the invariants at every pass
    assert result.made >= 2 and result.discarded >= 1 and result.stopped >= 1
    assert result.max_active == 2 and max(result.cpu_by_day.values()) <= 300.0
    assert 0 < result.by_adapter < result.uses
