"""The scheduler's request path (`memnet ask`): pure plan decisions, scripted workloads on a real
store with the real MiniLM embedder (tiny Llama for speed), promotion of a hot memory set into a
KV cube that the next identical request reuses, trust on plaintext memories, the audit log, the
CLI, and the same on the real SmolLM2."""

from __future__ import annotations

import json

import pytest

from memnet import home, local
from memnet.cube import cid, keys
from memnet.errors import UsageError
from memnet import config
from memnet.governance import audit
from memnet.memory import index
from memnet.model import loader
from memnet.scheduler import ask as ask_mod
from memnet.scheduler import plan as plan_mod
from memnet.config import AskSettings as Settings
from memnet.scheduler.plan import KvFacts, Plan, Recalled
from tests.cli_helpers import assert_one_line_error, memnet

A, B = sorted((cid.cid_of(b"cube a"), cid.cid_of(b"cube b")))
AUTHOR = b"\x01" * 32
NOTES = {
    "wifi": "The office wifi network is Heron; its password is tangerine-42.",
    "demo": "The memnet demo runs every Friday at three in room B2.",
    "cat": "The cat is fed at seven and at nineteen with the blue tin.",
    "server": "The build server kestrel lives in rack four of the basement.",
}


def hit(cube: bytes, item: int, score: float, text: str = "note") -> Recalled:
    return Recalled(cube, item, text, score, AUTHOR)


# -- pure decisions ------------------------------------------------------------------------------

def test_choose_memories_keeps_the_best_within_score_and_budget():
    hits = [hit(A, 0, 0.9, "x" * 40), hit(A, 1, 0.2, "y"), hit(B, 0, 0.8, "z" * 40), hit(B, 1, 0.7, "w" * 30)]
    chosen, skipped = plan_mod.choose_memories(hits, Settings(min_score=0.3, max_memory_chars=90))
    assert [(m.cube_id, m.item) for m in chosen] == [(A, 0), (B, 0)]
    reasons = {(m.cube_id, m.item): why for m, why in skipped}
    assert "below 0.3" in reasons[(A, 1)] and "budget of 90" in reasons[(B, 1)]


def test_layout_and_set_key_do_not_depend_on_recall_order_or_scores():
    one = [hit(B, 2, 0.9, "second note"), hit(A, 5, 0.4, "first note")]
    two = [hit(A, 5, 0.8, "first note"), hit(B, 2, 0.3, "second note")]
    assert plan_mod.system_text(one) == plan_mod.system_text(two)
    assert plan_mod.system_text(one).endswith("- first note\n- second note")
    model = b"\x02" * 32
    assert plan_mod.set_key(model, None, one) == plan_mod.set_key(model, None, two)
    assert plan_mod.set_key(model, None, one) != plan_mod.set_key(b"\x03" * 32, None, one)
    assert plan_mod.set_key(model, None, one) != plan_mod.set_key(model, b"\x04" * 32, one)
    assert plan_mod.set_key(model, None, one) != plan_mod.set_key(model, None, one[:1])


@pytest.mark.parametrize("uses,prefix,kv,promote,phrase", [
    (2, 200, KvFacts(), False, "used 2/3 times"),
    (3, 200, KvFacts(), True, "used 3 times"),
    (9, 200, KvFacts(cube_id=A, source="local", usable=200), False, "already covers"),
    (9, 200, KvFacts(cube_id=A, source="local", usable=120), True, "used 9 times"),
    (9, 20, KvFacts(), False, "cheaper to recompute"),
    (9, 0, KvFacts(), False, "no memory prefix"),
])
def test_promotion_rules(uses, prefix, kv, promote, phrase):
    decided, why = plan_mod.promotion(uses, Settings(promote_after=3, min_promote_tokens=64), prefix, kv)
    assert decided is promote and phrase in why


def test_explain_names_every_choice_with_its_reason_and_cost():
    kv = KvFacts(cube_id=A, source="peer", usable=256, dtype="float16", size=6 * 2**20, fetch=True,
                 saved_estimate=0.41, cost_estimate=0.12, decision="fetch: fetch+load ≈ 0.12 s vs prefill ≈ 0.41 s")
    plan = Plan("What is the wifi password?", [hit(A, 0, 0.72, "The wifi is Heron")],
                [(hit(B, 1, 0.1), "score below 0.3")], b"\x05" * 32, 256, 270, kv, [(B, 0.5)], 4, False,
                "a KV cube already covers the 256-token memory prefix", 0.45)
    text = "\n".join(plan.explain())
    for phrase in ('plan for "What is the wifi password?"', "0.72", "skip 0.10", "score below 0.3",
                   "270 tokens: 256 memory prefix", "use 4", "fetch from a peer", "float16", "6.0 MiB",
                   "fetch+load ≈ 120 ms", "prefill of them ≈ 410 ms", "×0.5", "promote   no: a KV cube"):
        assert phrase in text, (phrase, text)


# -- scripted workloads on a real store ------------------------------------------------------------

def remember_all(node) -> dict[str, bytes]:
    return {name: index.remember(node.publisher, text).cube_id for name, text in NOTES.items()}


SCRIPT = Settings(k=2, min_score=0.3, promote_after=2, min_promote_tokens=16)


@pytest.mark.slow
def test_hot_memory_set_is_promoted_and_the_next_request_reuses_it(node, tiny):
    cubes = remember_all(node)
    question = "What is the password of the office wifi?"
    run = [ask_mod.ask(node.publisher, node.gate(), node.perf, tiny, question, settings=SCRIPT, max_new_tokens=6, promote_dtype="float32")
           for _ in range(3)]
    first, second, third = run
    assert first.plan.memories[0].cube_id == cubes["wifi"]           # recall found the right note
    assert first.plan.set_key == second.plan.set_key == third.plan.set_key
    assert [a.plan.uses for a in run] == [1, 2, 3]
    assert not first.plan.promote and "used 1/2 times" in first.plan.promote_reason
    assert second.plan.promote and second.promoted is not None and second.generation.reused == 0
    meta = second.promoted.manifest.meta
    assert meta["n_tokens"] == second.plan.prefix_tokens and "memory-set" in second.promoted.manifest.tags
    assert node.store.entry(second.promoted.cube_id).pin is None      # derived: evictable
    # the third identical request reuses the promoted prefix, exactly (float32 cube)
    assert third.plan.kv.cube_id == second.promoted.cube_id and third.plan.kv.source == "local"
    assert third.generation.reused == third.plan.prefix_tokens and not third.plan.promote
    assert third.generation.new_ids == first.generation.new_ids
    explained = "\n".join(third.plan.explain())
    assert "local store" in explained and "already covers" in explained
    # another question recalls another memory set: no reuse, its own count
    other = ask_mod.ask(node.publisher, node.gate(), node.perf, tiny, "When is the cat fed?", settings=SCRIPT, max_new_tokens=4)
    assert other.plan.set_key != first.plan.set_key and other.plan.uses == 1
    assert other.generation.reused < other.plan.prefix_tokens or other.plan.prefix_tokens == 0
    # the audit log says which cubes went into which answer
    logged = audit.entries(node.store)
    assert [e["kind"] for e in logged][-4:] == ["ask"] * 4
    roles = {c["role"] for c in logged[-2]["cubes"]}
    assert roles == {"plaintext", "kv"} and "promoted" not in logged[-2]["extra"]
    assert logged[-3]["extra"]["promoted"] == second.promoted.cube_id


def test_dry_run_plans_without_answering_or_counting(node, tiny):
    remember_all(node)
    dry = ask_mod.ask(node.publisher, node.gate(), node.perf, tiny, "Where is the build server?", settings=SCRIPT, dry_run=True)
    assert dry.generation is None and dry.plan.uses == 1 and dry.plan.memories
    again = ask_mod.ask(node.publisher, node.gate(), node.perf, tiny, "Where is the build server?", settings=SCRIPT, max_new_tokens=2)
    assert again.plan.uses == 1 and again.plan.set_key == dry.plan.set_key
    assert audit.entries(node.store)[-1]["kind"] == "ask" and len(audit.entries(node.store)) == 1


def test_untrusted_authors_memories_never_reach_the_prompt(tmp_path, node, tiny):
    other = home.init(tmp_path / "other")
    cube = index.remember(other.publisher, NOTES["wifi"])
    path = tmp_path / "wifi.car"
    local.export(other.store, [cube.cube_id], path)
    local.import_archive(node.store, path)
    question = "What is the password of the office wifi?"
    refused = ask_mod.ask(node.publisher, node.gate(), node.perf, tiny, question, settings=SCRIPT, max_new_tokens=2)
    assert all(m.cube_id != cube.cube_id for m in refused.plan.memories)
    policy = config.load(node.home).trust
    config.update(node.home, "trust", policy.add(other.peer_id, ("inject",)).to_config())
    reopened = home.open_node(node.home)
    trusted = ask_mod.ask(reopened.publisher, reopened.gate(), reopened.perf, tiny, question, settings=SCRIPT, max_new_tokens=2)
    assert trusted.plan.memories and trusted.plan.memories[0].cube_id == cube.cube_id
    assert keys.peer_id(trusted.plan.memories[0].author) == other.peer_id


def test_settings_from_config_and_errors(node, tiny):
    assert node.config.ask == Settings()
    raw = config.read_raw(node.home)
    config.write_raw(node.home, {**raw, "ask": {"k": 2, "min_score": 0.5}, "promote_after": 5})
    assert node.reload_config().ask == Settings(k=2, min_score=0.5, promote_after=5)
    for bad, phrase in (({"k": 0}, "ask.k"), ({"min_score": "high"}, "min_score"), ({"colour": 1}, "unknown")):
        with pytest.raises(UsageError, match=phrase):
            config.write_raw(node.home, {**raw, "ask": bad})
    with pytest.raises(UsageError, match="empty"):
        ask_mod.ask(node.publisher, node.gate(), node.perf, tiny, "   ", settings=node.config.ask)


@pytest.mark.slow
def test_cli_ask_explains_and_refuses_bad_input(tmp_path, models, tiny_model_dir):
    where = tmp_path / "cli"
    memnet(where, "init")
    memnet(where, "model", "pin", str(tiny_model_dir))
    notes = tmp_path / "notes.md"   # one process for the four notes (each CLI run loads the embedder)
    notes.write_text("\n\n".join(NOTES.values()) + "\n")
    memnet(where, "notes", "import", str(notes))
    shown = memnet(where, "ask", "Who has the key to the wifi?", "--explain", "-n", "3", "-k", "2")
    for phrase in ("plan for", "memories", "prompt", "kv ", "lora      none", "promote   no: memory set used 1/2"):
        assert phrase in shown.out, (phrase, shown.out)
    assert "TTFT" in shown.err
    as_json = json.loads(memnet(where, "ask", "Who has the key to the wifi?", "--json", "-n", "2").out)
    assert as_json["uses"] == 2 and as_json["memories"] and as_json["explain"][0].startswith("plan for")
    assert memnet(where, "audit", "--json").out.count('"ask"') >= 2
    assert_one_line_error(memnet(where, "ask", " ", check=False), "empty")
    assert_one_line_error(memnet(where, "ask", "q", "-k", "0", check=False), "-k")
    assert_one_line_error(memnet(where, "ask", "q", "--promote-dtype", "float8", check=False), "promote-dtype")


@pytest.mark.slow
def test_smollm2_promoted_prefix_gives_the_same_answer(tmp_path, monkeypatch, smollm2_models_dir):
    monkeypatch.setenv("MEMNET_MODELS", str(smollm2_models_dir))
    node = home.init(tmp_path / "smol")
    loaded = loader.load(node.models.pin("smollm2")[0])
    remember_all(node)
    script = Settings(k=2, promote_after=1, min_promote_tokens=32)
    question = "What is the password of the office wifi?"
    first = ask_mod.ask(node.publisher, node.gate(), node.perf, loaded, question, settings=script, max_new_tokens=12, promote_dtype="float32")
    second = ask_mod.ask(node.publisher, node.gate(), node.perf, loaded, question, settings=script, max_new_tokens=12)
    assert first.promoted is not None and first.plan.prefix_tokens >= 32
    assert second.generation.reused == first.plan.prefix_tokens and second.generation.source == "local"
    assert second.generation.new_ids == first.generation.new_ids
    assert "tangerine" in first.text.lower()
