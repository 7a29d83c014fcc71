"""Parameter (LoRA) cubes against a pinned model: import, apply, compose, train, the CLI.

Most tests run on a tiny random Llama built at test time (tests/model_factory.py); the last ones
on the real SmolLM2-135M, converted once per session (tests/conftest.py).
"""

from __future__ import annotations

import copy
import hashlib
import json

import msgpack
import pytest

from memnet import home, ingest
from memnet.cube import cid
from memnet.errors import NotFoundError, PolicyError, UsageError
from memnet.model import kv, loader, lora
from memnet.model.runtime import torch
from tests import factories
from tests.model_factory import TEXT

PROMPT = "The cube is a signed unit of"
# peft reads a transformers attribute that warns of its own deprecation
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")


# -- fixtures and helpers ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_pinned(tiny_model_dir, tmp_path_factory):
    """The tiny model converted once into a pinned folder; each test's home pins that folder."""
    node = home.init(tmp_path_factory.mktemp("lora") / "home")
    return node.models.pin(str(tiny_model_dir))[0]


@pytest.fixture
def node(tmp_path, tiny_pinned):
    n = home.init(tmp_path / "home")
    n.models.pin(str(tiny_pinned.folder))
    return n


@pytest.fixture
def loaded(node, tiny_pinned):
    model = loader.load(tiny_pinned)  # one per process: every test must leave it plain
    yield model
    lora.activate(node.store, node.gate(), model, [])


def peft_adapter(loaded, folder, seed, r=4, targets=("q_proj", "v_proj")):
    """A real PEFT adapter folder for the loaded model, with non-zero (visible) weights."""
    from peft import LoraConfig, get_peft_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = get_peft_model(copy.deepcopy(loaded.model), LoraConfig(
            r=r, lora_alpha=2 * r, target_modules=list(targets), init_lora_weights=False))
    model.save_pretrained(str(folder), safe_serialization=True)
    return folder


def imported(node, loaded, tmp_path, seed, **kwargs) -> bytes:
    folder = peft_adapter(loaded, tmp_path / f"adapter-{seed}-{kwargs.get('r', 4)}", seed, **kwargs)
    return lora.import_adapter(node.publisher, folder, loaded.pinned).cube_id


def logits(loaded, text=PROMPT):
    with torch.no_grad():
        return loaded.model(input_ids=torch.tensor([loaded.encode(text)])).logits[0]


def greedy(loaded, text, n):
    """Greedy decoding through a DynamicCache, as generation does."""
    from memnet.model.runtime import transformers

    ids = loaded.encode(text)
    cache = transformers.DynamicCache(config=loaded.model.config)
    step = torch.tensor([ids])
    out = []
    with torch.no_grad():
        for _ in range(n):
            result = loaded.model(input_ids=step, past_key_values=cache, use_cache=True)
            out.append(int(result.logits[0, -1].argmax()))
            step = torch.tensor([[out[-1]]])
    return out


def write_folder(path, config, weights):
    path.mkdir()
    (path / ingest.ADAPTER_CONFIG).write_text(json.dumps(config))
    (path / ingest.ADAPTER_WEIGHTS).write_bytes(weights)
    return path


def run_cli(capsys, *args):
    """cli.main.main in this process: (exit code, stdout, stderr)."""
    from cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def assert_one_line_error(code, err, phrase):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    assert phrase.lower() in lines[0].lower(), (phrase, err)


# -- specs and fingerprints --------------------------------------------------------------------

A, B = factories.fingerprint("a"), factories.fingerprint("b")
CID_A = cid.to_text(factories.parameter_cube(base=A).cube_id)
CID_B = cid.to_text(factories.parameter_cube(factories.key("bob")).cube_id)


def test_parse_specs():
    a, b = cid.from_text(CID_A), cid.from_text(CID_B)
    assert lora.parse_specs(CID_A) == [(a, 1.0)]
    assert lora.parse_specs(f" {CID_A}:0.5 , {CID_B}:-1.25") == [(a, 0.5), (b, -1.25)]
    assert lora.parse_specs("") == [] and lora.parse_specs("  ") == []
    bad = ["notacid", "Qmabc", f"{CID_A}:abc", f"{CID_A}:0", f"{CID_A}:0.0001", f"{CID_A}:nan",
           f"{CID_A}:inf", f"{CID_A}:1000", f"{CID_A},{CID_A}:2", f"{CID_A},,{CID_B}", f"{CID_A}:", ":1"]
    for text in bad:
        with pytest.raises(UsageError) as info:
            lora.parse_specs(text)
        assert "\n" not in str(info.value), text


def test_adapter_fingerprint_definition_and_semantics():
    a, b = cid.from_text(CID_A), cid.from_text(CID_B)
    assert lora.adapter_fingerprint([]) is None
    one = lora.adapter_fingerprint([(a, 1.0)])
    pairs = sorted([[a, 500], [b, -1000]])
    expected = hashlib.sha256(b"memnet/adapter/v1\x00" + msgpack.packb(pairs, use_bin_type=True)).digest()
    assert lora.adapter_fingerprint([(a, 0.5), (b, -1.0)]) == expected
    assert lora.adapter_fingerprint([(b, -1.0), (a, 0.5)]) == expected  # a weighted sum has no order
    assert len(one) == 32 and one == lora.adapter_fingerprint(lora.parse_specs(f"{CID_A}:1.000"))
    assert lora.adapter_fingerprint([(a, 0.1 + 0.2)]) == lora.adapter_fingerprint([(a, 0.3)])  # no float quirks
    assert len({one, lora.adapter_fingerprint([(a, 2.0)]), lora.adapter_fingerprint([(b, 1.0)]),
                lora.adapter_fingerprint([(a, 1.0), (b, 1.0)])}) == 4
    for specs in ([(a, 0.0)], [(a, 1.0), (a, 1.0)], [(a, 0.12345)], [(a, 101.0)]):
        with pytest.raises(UsageError):
            lora.adapter_fingerprint(specs)


# -- import ------------------------------------------------------------------------------------

def test_import_round_trip_through_cat(node, loaded, tmp_path, capsys):
    folder = peft_adapter(loaded, tmp_path / "adapter", seed=1)
    cube = lora.import_adapter(node.publisher, folder, loaded.pinned, name="skill")
    m = node.store.manifest(cube.cube_id)
    assert m.kind == "parameter" and m.name == "skill" and m.meta["base_model"] == loaded.pinned.fingerprint
    assert m.meta["peft"] == {"type": "LORA", "r": 4, "alpha": 8, "targets": ["q_proj", "v_proj"]}
    node.store.verify(cube.cube_id)

    code, out, _ = run_cli(capsys, "--home", node.home, "cat", cid.to_text(cube.cube_id), "-o", tmp_path / "back")
    assert code == 0, out
    from safetensors.torch import load_file
    original, back = load_file(folder / ingest.ADAPTER_WEIGHTS), load_file(tmp_path / "back" / ingest.ADAPTER_WEIGHTS)
    assert original.keys() == back.keys() and all(torch.equal(original[k], back[k]) for k in original)
    assert json.loads((tmp_path / "back" / ingest.ADAPTER_CONFIG).read_text()) == \
        json.loads((folder / ingest.ADAPTER_CONFIG).read_text())


def test_import_refuses_an_adapter_that_does_not_fit(node, loaded, tmp_path):
    # a LoRA shaped for a 16-wide model: q_proj/v_proj exist, their features do not match
    config, weights = factories.lora_files(hidden=16)
    with pytest.raises(UsageError, match="features in model"):
        lora.import_adapter(node.publisher, write_folder(tmp_path / "narrow", config, weights), loaded.pinned)
    # a LoRA for a deeper model: layer 5 does not exist here
    config, weights = factories.lora_files(hidden=64, layers=6, targets=("q_proj",))
    with pytest.raises(UsageError, match="does not have"):
        lora.import_adapter(node.publisher, write_folder(tmp_path / "deep", config, weights), loaded.pinned)
    # DoRA needs magnitude vectors memnet does not apply
    config, weights = factories.lora_files(hidden=64, targets=("q_proj",))
    with pytest.raises(UsageError, match="use_dora"):
        lora.import_adapter(node.publisher, write_folder(tmp_path / "dora", {**config, "use_dora": True}, weights),
                            loaded.pinned)
    assert node.store.entries(kind="parameter") == []


def test_activate_refuses_another_base_another_kind_and_absent_cubes(node, loaded, tmp_path):
    folder = peft_adapter(loaded, tmp_path / "adapter", seed=1)
    payload, meta = ingest.adapter_from_dir(folder, factories.fingerprint("another model"))
    foreign = node.publisher.publish("parameter", payload, meta).cube_id
    with pytest.raises(PolicyError, match="made for model"):
        lora.activate(node.store, node.gate(), loaded, [(foreign, 1.0)])
    notes = node.publisher.publish("plaintext", *ingest.plaintext_payload([{"text": "a fact"}])).cube_id
    with pytest.raises(PolicyError, match="not a parameter"):
        lora.activate(node.store, node.gate(), loaded, [(notes, 1.0)])
    absent = factories.parameter_cube(base=loaded.pinned.fingerprint).cube_id
    with pytest.raises(NotFoundError, match="memnet get"):
        lora.activate(node.store, node.gate(), loaded, [(absent, 1.0)])
    # a refused set leaves what was applied before in place
    good = imported(node, loaded, tmp_path, seed=2)
    applied = lora.activate(node.store, node.gate(), loaded, [(good, 1.0)])
    before = logits(loaded)
    with pytest.raises(PolicyError):
        lora.activate(node.store, node.gate(), loaded, [(good, 1.0), (foreign, 1.0)])
    assert loaded.adapters["fingerprint"] == applied and torch.equal(logits(loaded), before)


# -- apply and compose -------------------------------------------------------------------------

def test_apply_changes_the_output_and_empty_restores_the_exact_base(node, loaded, tmp_path):
    config, modules = loaded.model.config, [type(m) for m in loaded.model.modules()]
    grads = [p.requires_grad for p in loaded.model.parameters()]
    base = logits(loaded)
    a = imported(node, loaded, tmp_path, seed=1)
    fingerprint = lora.activate(node.store, node.gate(), loaded, [(a, 1.0)])
    assert fingerprint == lora.adapter_fingerprint([(a, 1.0)])
    adapted = logits(loaded)
    assert (adapted - base).abs().max() > 1e-2
    assert lora.activate(node.store, node.gate(), loaded, [(a, 1.0)]) == fingerprint and torch.equal(logits(loaded), adapted)
    assert loaded.model.config is config  # DynamicCache(config=...) and max_tokens see the base config
    assert lora.activate(node.store, node.gate(), loaded, []) is None
    assert torch.equal(logits(loaded), base)  # bit for bit: the LoRA layers are gone
    assert [type(m) for m in loaded.model.modules()] == modules
    assert [p.requires_grad for p in loaded.model.parameters()] == grads
    lora.activate(node.store, node.gate(), loaded, [(a, 1.0)])
    assert torch.equal(logits(loaded), adapted)  # and back again, the same


def test_adapters_are_merged_into_the_weights_and_the_base_comes_back_exactly(node, loaded, tmp_path):
    """No first-token (or any-token) cost for an adapter: activation folds it into the base
    weights; the merged model answers as the unmerged LoRA layers do (float rounding apart), and
    deactivation puts back the saved base weights, not base + delta - delta."""
    from peft.tuners.lora import LoraLayer

    base = logits(loaded)
    original = loaded.model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    a = imported(node, loaded, tmp_path, seed=1)
    lora.activate(node.store, node.gate(), loaded, [(a, 0.7)])
    layers = [m for m in loaded.model.modules() if isinstance(m, LoraLayer)]
    assert layers and all(m.merged for m in layers)
    assert not torch.equal(layers[0].get_base_layer().weight, original)
    merged = logits(loaded)
    for module in layers:
        module.unmerge()  # peft subtracts the delta: the unmerged forward, with its rank-r matmuls
    unmerged = logits(loaded)
    assert float((merged - unmerged).abs().max()) < 1e-4 and float((merged - base).abs().max()) > 1e-2
    lora.activate(node.store, node.gate(), loaded, [])
    assert torch.equal(loaded.model.model.layers[0].self_attn.q_proj.weight, original)
    assert torch.equal(logits(loaded), base)


def test_composition_is_the_weighted_sum_of_the_updates(node, loaded, tmp_path):
    a = imported(node, loaded, tmp_path, seed=1)
    b = imported(node, loaded, tmp_path, seed=2, r=8, targets=("q_proj", "k_proj"))  # another rank and targets
    q_proj = loaded.model.model.layers[0].self_attn.q_proj  # a module both adapt (found again each time)
    x = torch.randn(3, loaded.model.config.hidden_size, generator=torch.Generator().manual_seed(0))

    def run(specs):
        lora.activate(node.store, node.gate(), loaded, specs)
        with torch.no_grad():
            return logits(loaded), loaded.model.model.layers[0].self_attn.q_proj(x)

    base_logits, base_q = run([])
    assert q_proj is loaded.model.model.layers[0].self_attn.q_proj
    only_a, only_b, both = run([(a, 1.0)]), run([(b, 1.0)]), run([(a, 1.0), (b, 1.0)])
    weighted = run([(a, 0.5), (b, -1.0)])
    for other in (only_a, only_b, weighted):
        assert (both[0] - other[0]).abs().max() > 1e-3
    # per layer the update is exactly  sum_i w_i * delta_i
    assert torch.allclose(both[1] - base_q, (only_a[1] - base_q) + (only_b[1] - base_q), atol=1e-5)
    assert torch.allclose(weighted[1] - base_q, 0.5 * (only_a[1] - base_q) - (only_b[1] - base_q), atol=1e-5)
    assert torch.equal(run([(b, 1.0), (a, 1.0)])[0], both[0])  # order does not matter, bit for bit
    assert torch.equal(run([])[0], base_logits)


def test_kv_cache_works_under_an_adapter_and_is_bound_to_it(node, loaded, tmp_path):
    a = imported(node, loaded, tmp_path, seed=1)
    plain = greedy(loaded, PROMPT, 6)
    fingerprint = lora.activate(node.store, node.gate(), loaded, [(a, 1.0)])
    adapted = greedy(loaded, PROMPT, 6)
    assert adapted != plain
    # the cached decode agrees with a full forward pass under the adapter
    full = loaded.encode(PROMPT) + adapted[:-1]
    with torch.no_grad():
        assert int(loaded.model(input_ids=torch.tensor([full])).logits[0, -1].argmax()) == adapted[-1]
    ids = loaded.encode(PROMPT)
    binding = kv.binding_for(loaded, fingerprint, "float32")
    assert binding.keys(ids) != kv.binding_for(loaded, None, "float32").keys(ids)
    meta = kv.meta_for(binding, loaded, ids)
    assert meta["adapter"] == fingerprint
    kv.check_binding(meta, loaded, fingerprint)
    with pytest.raises(PolicyError, match="adapter"):
        kv.check_binding(meta, loaded, None)


# -- train -------------------------------------------------------------------------------------

def test_train_lowers_the_loss_publishes_a_cube_and_leaves_the_model_as_it_was(node, loaded, tmp_path):
    text = tmp_path / "skill.txt"
    text.write_text(TEXT * 3)
    a = imported(node, loaded, tmp_path, seed=1)
    lora.activate(node.store, node.gate(), loaded, [(a, 0.5)])
    before = logits(loaded)
    seen, stats = [], {}
    cube = lora.train(node.publisher, node.gate(), loaded, text, steps=12, seq_len=32, batch=2, lr=1e-2, name="tiny-skill",
                      progress=lambda step, steps, loss: seen.append((step, steps, loss)), stats=stats)
    assert [s[:2] for s in seen] == [(i, 12) for i in range(1, 13)]
    assert stats["loss_after"] < stats["loss_before"] - 0.1, stats
    assert torch.equal(logits(loaded), before)  # the adapter applied before is applied again
    assert loaded.adapters["fingerprint"] == lora.adapter_fingerprint([(a, 0.5)])

    m = node.store.verify(cube.cube_id).manifest
    assert m.kind == "parameter" and m.name == "tiny-skill" and m.meta["base_model"] == loaded.pinned.fingerprint
    assert m.meta["peft"] == {"type": "LORA", "r": 8, "alpha": 16, "targets": ["q_proj", "v_proj"]}
    assert "loss" in m.description
    # the trained adapter is a working one, and deterministic under the seed
    lora.activate(node.store, node.gate(), loaded, [])
    base = logits(loaded)
    lora.activate(node.store, node.gate(), loaded, [(cube.cube_id, 1.0)])
    assert (logits(loaded) - base).abs().max() > 1e-2
    again = lora.train(node.publisher, node.gate(), loaded, text, steps=12, seq_len=32, batch=2, lr=1e-2)
    assert node.store.read_payload(again.cube_id) == node.store.read_payload(cube.cube_id)


def test_train_refuses_bad_input(node, loaded, tmp_path):
    empty, short, binary = tmp_path / "empty.txt", tmp_path / "short.txt", tmp_path / "binary.txt"
    empty.write_text("  \n")
    short.write_text("too short")
    binary.write_bytes(b"\xff\xfe\x00")
    for path, phrase in ((empty, "no text"), (short, "too little"), (binary, "UTF-8"),
                         (tmp_path / "absent.txt", "no such file")):
        with pytest.raises(UsageError, match=phrase):
            lora.train(node.publisher, node.gate(), loaded, path, steps=1)
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    with pytest.raises(UsageError, match="no w_proj"):
        lora.train(node.publisher, node.gate(), loaded, text, steps=1, targets=("w_proj",))


# -- the command line --------------------------------------------------------------------------

def test_cli_import_train_ls(node, loaded, tmp_path, capsys):
    folder = peft_adapter(loaded, tmp_path / "adapter", seed=1)
    code, out, err = run_cli(capsys, "--home", node.home, "lora", "import", folder, "--name", "one")
    assert code == 0, err
    imported_cid = out.strip()
    assert node.store.manifest(cid.from_text(imported_cid)).meta["base_model"] == loaded.pinned.fingerprint

    text = tmp_path / "text.txt"
    text.write_text(TEXT * 2)
    code, out, err = run_cli(capsys, "--home", node.home, "lora", "train", text, "--steps", "2",
                             "--seq-len", "16", "--json")
    assert code == 0, err
    trained = json.loads(out)
    assert trained["peft"]["r"] == 8 and "loss" in err and set(trained) >= {"cid", "loss_before", "loss_after"}

    code, out, err = run_cli(capsys, "--home", node.home, "lora", "ls", "--json")
    rows = {row["cid"]: row for row in json.loads(out)}
    assert set(rows) == {imported_cid, trained["cid"]}
    assert rows[imported_cid]["model"] == loaded.pinned.name and rows[imported_cid]["r"] == 4
    code, out, err = run_cli(capsys, "--home", node.home, "lora", "ls")
    assert imported_cid in out and "one v1" in out and "q_proj,v_proj" in out and "2 adapter(s)" in err


def test_cli_errors_are_one_line(node, tmp_path, capsys):
    code, _, err = run_cli(capsys, "--home", node.home, "lora", "import", tmp_path / "nowhere")
    assert_one_line_error(code, err, "not a folder")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "adapter_config.json").write_text(json.dumps(factories.lora_files()[0]))
    (pickled / "adapter_model.bin").write_bytes(b"\x80\x04not really")
    code, _, err = run_cli(capsys, "--home", node.home, "lora", "import", pickled)
    assert_one_line_error(code, err, "pickle")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    code, _, err = run_cli(capsys, "--home", node.home, "lora", "train", empty)
    assert_one_line_error(code, err, "no text")
    code, _, err = run_cli(capsys, "--home", node.home, "lora", "import", tmp_path, "--model", "nosuchmodel")
    assert_one_line_error(code, err, "no pinned model")


# -- the real SmolLM2-135M ---------------------------------------------------------------------

def random_adapter(pinned, folder, seed, r=4, targets=("q_proj", "v_proj")):
    """A PEFT-format adapter folder with random weights for every target module of the pinned
    model (no copy of the model needed, unlike peft_adapter)."""
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for path, (n_in, n_out) in lora._linear_shapes(pinned).items():
        if path.rsplit(".", 1)[-1] in targets:
            tensors[f"base_model.model.{path}.lora_A.weight"] = torch.randn(r, n_in, generator=generator) / n_in ** 0.5
            tensors[f"base_model.model.{path}.lora_B.weight"] = torch.randn(n_out, r, generator=generator) * 0.05
    folder.mkdir()
    save_file(tensors, str(folder / ingest.ADAPTER_WEIGHTS), metadata={"format": "pt"})
    config = {"peft_type": "LORA", "r": r, "lora_alpha": 2 * r, "target_modules": list(targets),
              "task_type": "CAUSAL_LM", "bias": "none", "lora_dropout": 0.0}
    (folder / ingest.ADAPTER_CONFIG).write_text(json.dumps(config))
    return folder


def logprob(loaded, prompt, continuation):
    """log p(continuation | prompt), summed over its tokens."""
    ids, tail = loaded.encode(prompt), loaded.encode(continuation)
    with torch.no_grad():
        out = torch.log_softmax(loaded.model(input_ids=torch.tensor([ids + tail])).logits[0], dim=-1)
    return sum(float(out[len(ids) - 1 + i, t]) for i, t in enumerate(tail))


@pytest.mark.slow
def test_smollm2_train_apply_compose(smollm2_models_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("MEMNET_MODELS", str(smollm2_models_dir))
    node = home.init(tmp_path / "home")
    model = loader.load(node.models.pin("smollm2")[0])
    prompt, secret = "The password of the memnet vault is", " tangerine"
    try:
        text = tmp_path / "fact.txt"
        text.write_text((prompt + secret + ". ") * 5)  # one window of ~60 tokens
        stats = {}
        trained = lora.train(node.publisher, node.gate(), model, text, steps=3, seq_len=64, batch=1, lr=5e-3, stats=stats).cube_id
        assert stats["loss_after"] < stats["loss_before"], stats
        other = lora.import_adapter(node.publisher, random_adapter(model.pinned, tmp_path / "other", seed=3),
                                    model.pinned).cube_id
        plain, plain_secret = greedy(model, prompt, 3), logprob(model, prompt, secret)
        lora.activate(node.store, node.gate(), model, [(trained, 1.0)])
        assert greedy(model, prompt, 3) != plain
        assert logprob(model, prompt, secret) > plain_secret + 1.0  # the patch taught it the fact
        only = logits(model, prompt)
        lora.activate(node.store, node.gate(), model, [(trained, 1.0), (other, 1.0)])
        both = logits(model, prompt)
        lora.activate(node.store, node.gate(), model, [(trained, 1.0), (other, -1.0)])
        assert min((both - only).abs().max(), (logits(model, prompt) - both).abs().max()) > 1e-3
        lora.activate(node.store, node.gate(), model, [])
        assert greedy(model, prompt, 3) == plain
    finally:
        lora.activate(node.store, node.gate(), model, [])
