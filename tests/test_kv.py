"""Activation memory against a pinned model: fingerprints, pinning, exact KV round trips, refusal
of every mismatch, partial-prefix reuse, and the same on the real SmolLM2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from memnet import home
from memnet.cube import build as build_mod
from memnet.cube import prefix
from memnet.errors import FormatError, PolicyError, TensorError, UsageError
from memnet.model import fingerprint, generate, kv, loader, perf, pinned
from tests.cli_helpers import assert_one_line_error, memnet
from tests.model_factory import tiny_model_folder


def _ids(loaded, n: int, seed: int = 0) -> list[int]:
    """n token ids of real text (the tiny tokenizer's vocabulary is small, so repeat text)."""
    text = " ".join(f"memory {i} is content addressed, fox {i * 7 + seed}" for i in range(n))
    ids = loaded.encode(text)
    assert len(ids) >= n
    return ids[:n]


# -- fingerprints and pinning -----------------------------------------------------------------------

def test_fingerprint_covers_weights_config_and_tokenizer(tmp_path, node, tiny):
    folder = tiny.pinned.folder
    assert fingerprint.model_fingerprint(folder) == tiny.pinned.fingerprint
    assert fingerprint.tokenizer_fingerprint(folder) == tiny.pinned.tokenizer
    copy = Path(shutil.copytree(folder, tmp_path / "copy"))
    config = json.loads((copy / "config.json").read_text())
    config["rms_norm_eps"] = 1e-3
    (copy / "config.json").write_text(json.dumps(config))
    assert fingerprint.model_fingerprint(copy) != tiny.pinned.fingerprint
    copy2 = Path(shutil.copytree(folder, tmp_path / "copy2"))
    config = json.loads((copy2 / "config.json").read_text())
    config["transformers_version"] = "0.0.1"  # where it was written, not what it computes
    (copy2 / "config.json").write_text(json.dumps(config))
    assert fingerprint.model_fingerprint(copy2) == tiny.pinned.fingerprint
    tok = json.loads((copy2 / "tokenizer.json").read_text())
    tok["added_tokens"][0]["content"] = "<|other|>"
    (copy2 / "tokenizer.json").write_text(json.dumps(tok))
    assert fingerprint.tokenizer_fingerprint(copy2) != tiny.pinned.tokenizer
    assert fingerprint.model_fingerprint(copy2) != tiny.pinned.fingerprint


def test_other_weights_other_fingerprint(tmp_path, node, tiny):
    other, _ = node.models.pin(str(tiny_model_folder(tmp_path / "seed1", seed=1)))
    assert other.fingerprint != tiny.pinned.fingerprint
    assert other.tokenizer == tiny.pinned.tokenizer  # same tokenizer, other weights
    assert [m.fingerprint for m in node.models.pinned_models()] == [tiny.pinned.fingerprint, other.fingerprint]
    assert node.models.resolve().fingerprint == other.fingerprint  # the last pinned is the default
    assert node.models.resolve(tiny.pinned.fingerprint.hex()[:10]).fingerprint == tiny.pinned.fingerprint


def test_pin_again_and_edited_folder_refused(node, tiny, tiny_model_dir):
    again, new = node.models.pin(str(tiny_model_dir))
    assert not new and again.fingerprint == tiny.pinned.fingerprint
    weights = tiny.pinned.folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(UsageError, match="changed since it was pinned"):
        pinned.read_folder(tiny.pinned.folder)


def test_pin_errors(tmp_path, node):
    with pytest.raises(UsageError, match="neither"):
        node.models.pin(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no config.json"):
        node.models.pin(str(tmp_path / "empty"))
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text("{}")
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(UsageError, match="pickle"):
        node.models.pin(str(pickled))
    with pytest.raises(UsageError, match="no model is pinned"):
        node.models.resolve()


# -- exact round trip and dtypes ----------------------------------------------------------------------

def test_fp32_round_trip_is_exact(node, tiny):
    ids = _ids(tiny, 300)
    cube, _ = generate.build(node.publisher, node.perf, tiny, ids, "float32")
    assert cube.manifest.meta["n_tokens"] == 300 and len(cube.manifest.meta["prefix_keys"]) == 2
    prompt = ids + _ids(tiny, 12, seed=5)
    full = generate.generate(node.store, node.gate(), node.perf, tiny, prompt, generate.Options(max_new_tokens=12, use_local=False))
    cached = generate.generate(node.store, node.gate(), node.perf, tiny, prompt, generate.Options(max_new_tokens=12, check=True))
    assert cached.reused == 300 and cached.source == "local" and cached.cube_id == cube.cube_id
    assert cached.max_logit_diff is not None and cached.max_logit_diff <= 1e-4
    assert cached.same_top1 and cached.new_ids == full.new_ids and full.reused == 0


def test_grouped_attention_matches_transformers_sdpa(node, tiny):
    """memnet's cache-copy-free GQA attention gives transformers' SDPA results on every path: a
    causal prefill, a multi-token suffix on a cache, and one-token decoding."""
    from memnet.model import attention
    from memnet.model.runtime import torch

    model = tiny.model
    assert model.config._attn_implementation == attention.NAME
    assert model.config.num_attention_heads > model.config.num_key_value_heads  # GQA for real
    ids = _ids(tiny, 70)

    def run():
        with torch.inference_mode():
            first = model(input_ids=torch.tensor([ids[:50]]), use_cache=True)
            suffix = model(input_ids=torch.tensor([ids[50:66]]), past_key_values=first.past_key_values,
                           position_ids=torch.arange(50, 66).unsqueeze(0), use_cache=True)
            step = model(input_ids=torch.tensor([ids[66:67]]), past_key_values=suffix.past_key_values,
                         position_ids=torch.tensor([[66]]), use_cache=True)
        return first.logits, suffix.logits, step.logits

    ours = run()
    model.set_attn_implementation("sdpa")
    try:
        reference = run()
    finally:
        model.set_attn_implementation(attention.NAME)
    for a, b in zip(ours, reference):
        assert a.shape == b.shape and float((a - b).abs().max()) <= 1e-5


@pytest.mark.parametrize("dtype,tolerance", [("float16", 0.05), ("bfloat16", 0.3), ("int8", 0.3)])
def test_lossy_dtypes_keep_top1(node, tiny, dtype, tolerance):
    ids = _ids(tiny, 200)
    cube, _ = generate.build(node.publisher, node.perf, tiny, ids, dtype)
    assert cube.manifest.size < 4 * 200 * tiny.pinned.kv_bytes_per_token(1) + 4096
    result = generate.generate(node.store, node.gate(), node.perf, tiny, ids + _ids(tiny, 5, seed=3),
                               generate.Options(max_new_tokens=4, dtypes=(dtype,), check=True))
    assert result.reused == 200 and result.dtype == dtype
    assert 0 < result.max_logit_diff <= tolerance and result.same_top1


def test_int8_payload_has_per_token_scales(node, tiny):
    ids = _ids(tiny, 40)
    cache, _, _ = kv.prefill(tiny, ids)
    payload = kv.payload_from_cache(cache, len(ids), "int8")
    meta = kv.meta_for(kv.binding_for(tiny, None, "int8"), tiny, ids)
    rebuilt = kv.cache_from_payload(payload, meta, tiny, len(ids))
    for original, restored in zip(cache.layers, rebuilt.layers):
        scale = original.keys.abs().amax(dim=-1, keepdim=True) / 127
        assert float(((original.keys - restored.keys).abs() - scale / 2).max()) <= 1e-6


# -- prefix matching ---------------------------------------------------------------------------------

def test_partial_prefix_reuse_and_short_cubes(node, tiny):
    ids = _ids(tiny, 300)
    generate.build(node.publisher, node.perf, tiny, ids, "float32")
    diverging = ids[:270] + _ids(tiny, 40, seed=9)
    result = generate.generate(node.store, node.gate(), node.perf, tiny, diverging, generate.Options(max_new_tokens=2, check=True))
    assert result.reused == 270 and result.max_logit_diff <= 1e-4  # token granularity: the cube carries its ids
    exact = generate.generate(node.store, node.gate(), node.perf, tiny, ids, generate.Options(max_new_tokens=2, check=True))
    assert exact.reused == 299 and exact.max_logit_diff <= 1e-4  # one token left to run
    system = _ids(tiny, 60, seed=2)
    generate.build(node.publisher, node.perf, tiny, system, "float32")
    short = generate.generate(node.store, node.gate(), node.perf, tiny, system + _ids(tiny, 30, seed=4), generate.Options(max_new_tokens=2))
    assert short.reused == 60
    unrelated = generate.generate(node.store, node.gate(), node.perf, tiny, _ids(tiny, 100, seed=7)[::-1], generate.Options(max_new_tokens=2))
    assert unrelated.reused == 0 and unrelated.source == "none"


def test_stable_length_leaves_out_what_a_continuation_would_re_merge(tiny):
    for text in ("memory is content addressed.\n", "x = 1\n\n", "trailing space ", "no end"):
        ids = tiny.encode(text)
        keep = kv.stable_length(tiny, text, ids)
        assert 0 < keep <= len(ids)
        for continuation in kv.CONTINUATIONS + ("\n\nWhat is it?",):
            assert tiny.encode(text + continuation)[:keep] == ids[:keep]


def test_a_cube_without_token_ids_serves_key_boundaries_only(node, tiny):
    """Cubes made before meta.token_ids (or by another implementation) still load; their reuse
    stops at the last matching key boundary."""
    ids = _ids(tiny, 300)
    cache, _, _ = kv.prefill(tiny, ids)
    meta = kv.meta_for(kv.binding_for(tiny, None, "float32"), tiny, ids)
    del meta["token_ids"]
    node.publisher.publish("activation", kv.payload_from_cache(cache, 300, "float32"), meta)
    diverging = ids[:270] + _ids(tiny, 40, seed=9)
    result = generate.generate(node.store, node.gate(), node.perf, tiny, diverging, generate.Options(max_new_tokens=2, check=True))
    assert result.reused == 256 and result.max_logit_diff <= 1e-4


def test_token_ids_are_bound_to_the_prefix_keys(tiny):
    from memnet.cube import meta as cube_meta

    ids = _ids(tiny, 300)
    meta = kv.meta_for(kv.binding_for(tiny, None, "float32"), tiny, ids)
    cube_meta.validate_meta("activation", meta)
    assert cube_meta.token_ids(meta) == tuple(ids)
    forged = dict(meta, token_ids=cube_meta.pack_token_ids(ids[:-1] + [ids[-1] ^ 1]))
    with pytest.raises(FormatError, match="do not hash"):
        cube_meta.validate_meta("activation", forged)
    for bad in (meta["token_ids"][:-4], meta["token_ids"] + b"\0", "ids", []):
        with pytest.raises(FormatError, match="token_ids"):
            cube_meta.validate_meta("activation", dict(meta, token_ids=bad))


def test_short_keys_are_the_first_block_keys_of_each_length():
    salt = bytes(range(32))
    ids = list(range(5000, 5300))
    for lengths in (range(16, 256), range(1, 5), range(16, 16), range(200, 300)):
        expected = [prefix.prefix_keys(ids[:n], salt, 256)[0] for n in lengths if n <= 256]
        assert prefix.short_keys(ids, salt, lengths)[:len(expected)] == expected
    assert prefix.short_keys(ids[:7], salt, range(16, 256)) == []   # shorter than the first length
    assert prefix.short_keys(ids[:16], salt, range(16, 256)) == [prefix.prefix_keys(ids[:16], salt, 256)[0]]
    with pytest.raises(FormatError):
        prefix.short_keys([1, -2] * 20, salt, range(16, 30))


def test_matched_tokens_is_exact_about_ids():
    salt = bytes(32)
    ids = list(range(1000, 1600))
    keys = prefix.prefix_keys(ids, salt, 256)
    assert prefix.matched_tokens(ids, salt, 256, 600, keys) == 600
    assert prefix.matched_tokens(ids + [1, 2], salt, 256, 600, keys) == 600
    assert prefix.matched_tokens(ids[:599], salt, 256, 600, keys) == 512
    changed = ids[:300] + [7] + ids[301:]
    assert prefix.matched_tokens(changed, salt, 256, 600, keys) == 256
    assert prefix.matched_tokens([7] + ids[1:], salt, 256, 600, keys) == 0
    assert prefix.matched_tokens(ids, bytes([1]) * 32, 256, 600, keys) == 0


# -- every mismatch refused -------------------------------------------------------------------------------

def test_cube_for_another_model_or_adapter_is_refused(tmp_path, node, tiny):
    ids = _ids(tiny, 64)
    cube, _ = generate.build(node.publisher, node.perf, tiny, ids, "float32")
    other = loader.load(node.models.pin(str(tiny_model_folder(tmp_path / "other", seed=3)))[0])
    payload = node.store.read_payload(cube.cube_id)
    with pytest.raises(PolicyError, match="is for model"):
        kv.check_binding(cube.manifest.meta, other, None)
    assert generate.generate(node.store, node.gate(), node.perf, other, ids + ids[:4], generate.Options(max_new_tokens=1)).reused == 0
    with pytest.raises(PolicyError, match="adapter"):
        kv.check_binding(cube.manifest.meta, tiny, bytes(range(32)))
    bad_tokenizer = {**cube.manifest.meta, "tokenizer": bytes(32)}
    with pytest.raises(PolicyError, match="tokenizer"):
        kv.check_binding(bad_tokenizer, tiny, None)
    bad_layout = {**cube.manifest.meta, "layout": {**cube.manifest.meta["layout"], "kv_heads": 1}}
    with pytest.raises(PolicyError, match="layout"):
        kv.check_binding(bad_layout, tiny, None)
    wrong_dtype = {**cube.manifest.meta, "dtype": "float16"}  # meta says fp16, tensors are fp32
    with pytest.raises(TensorError):
        kv.cache_from_payload(payload, wrong_dtype, tiny, 64)
    with pytest.raises(PolicyError, match="cannot use"):
        kv.cache_from_payload(payload, cube.manifest.meta, tiny, 65)


def test_cube_under_adapter_never_used_without_it(node, tiny):
    ids = _ids(tiny, 100)
    adapter = bytes(range(32))
    cube, _ = generate.build(node.publisher, node.perf, tiny, ids, "float32", adapter)
    assert cube.manifest.meta["adapter"] == adapter
    plain = generate.generate(node.store, node.gate(), node.perf, tiny, ids + ids[:3], generate.Options(max_new_tokens=1))
    assert plain.reused == 0
    # the salt differs, so even the keys differ: no lookup can match across adapters
    assert kv.binding_for(tiny, adapter, "float32").keys(ids) != kv.binding_for(tiny, None, "float32").keys(ids)


def test_forged_activation_payload_refused(node, tiny):
    ids = _ids(tiny, 32)
    cube, _ = generate.build(node.publisher, node.perf, tiny, ids, "float16")
    payload = bytearray(node.store.read_payload(cube.cube_id))
    header_len = int.from_bytes(payload[:8], "little")
    header = json.loads(payload[8:8 + header_len])
    header["k.0"]["shape"][1] = 31  # one token short: offsets no longer add up
    text = json.dumps(header).encode().ljust(header_len)
    forged = bytes(payload[:8]) + text + bytes(payload[8 + header_len:])
    with pytest.raises(TensorError):
        kv.cache_from_payload(forged, cube.manifest.meta, tiny, 32)
    with pytest.raises(TensorError):
        build_mod.build(node.key, "activation", forged, cube.manifest.meta)


# -- the fetch-or-recompute decision ------------------------------------------------------------------------

def test_fetch_or_recompute_decision():
    assert perf.estimate_prefill([], 100) is None
    samples = [[512, 1.0], [2048, 8.0]]
    assert perf.estimate_prefill(samples, 1024) == pytest.approx(2.0)
    assert perf.estimate_prefill(samples, 2048) == pytest.approx(8.0)
    fast_link = perf.choose(50_000_000, prefill_seconds=10.0, bandwidth=100e6, load_rate=1e9)
    assert fast_link.fetch and "fetch" in fast_link.reason()
    slow_link = perf.choose(50_000_000, prefill_seconds=1.0, bandwidth=1e6, load_rate=1e9)
    assert not slow_link.fetch and "recompute" in slow_link.reason()
    first = perf.choose(50_000_000, prefill_seconds=1.0, bandwidth=None, load_rate=1e9)
    assert first.fetch and "no bandwidth measured" in first.reason()
    unmeasured = perf.choose(50_000_000, prefill_seconds=None, bandwidth=1e6, load_rate=1e9)
    assert unmeasured.fetch and "no prefill time measured" in unmeasured.reason()


def test_perf_book_persists_and_bounds(tmp_path):
    book = perf.PerfBook(tmp_path)
    assert book.bandwidth() is None
    for i in range(20):
        book.add_fetch(1_000_000, 0.01)
        book.add_prefill(b"\x01" * 32, 100 + i, 1.0)
    again = perf.PerfBook(tmp_path)
    assert again.bandwidth() == pytest.approx(1e8)
    assert len(again.prefill_samples(b"\x01" * 32)) == perf.KEEP
    (tmp_path / perf.PERF_FILE).write_text("{not json")
    assert perf.PerfBook(tmp_path).bandwidth() is None


def test_swarm_is_asked_only_when_the_prefill_it_could_save_is_slower(tmp_path):
    assert perf.worth_asking(None, 2.0) and perf.worth_asking(5.0, None)   # unmeasured: ask, to learn
    assert perf.worth_asking(5.0, 2.0) and not perf.worth_asking(0.5, 2.0)
    book = perf.PerfBook(tmp_path)
    assert book.lookup_seconds() is None
    for seconds in (9.0, 1.0, 2.0):
        book.add_lookup(seconds)
    assert perf.PerfBook(tmp_path).lookup_seconds() == 2.0   # the median: one slow lookup is not the rule
    (tmp_path / perf.PERF_FILE).write_text('{"lookup": [["x"], 7, [3.0]]}')   # a hand-edited file
    assert perf.PerfBook(tmp_path).lookup_seconds() == 3.0


# -- the command line -----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_cli_pin_build_generate(tmp_path, models, tiny_model_dir):
    h = tmp_path / "clihome"
    memnet(h, "init")
    assert_one_line_error(memnet(h, "generate", "hello", check=False), "no model is pinned")
    fp = memnet(h, "model", "pin", str(tiny_model_dir)).out.strip()
    listed = json.loads(memnet(h, "model", "ls", "--json").out)
    assert [m["fingerprint"] for m in listed] == [fp]
    text = " ".join(f"memory {i} is content addressed" for i in range(24))
    built = json.loads(memnet(h, "kv", "build", text, "--dtype", "float32", "--json").out)
    assert built["tokens"] > 256 and built["prefix_keys"] == 2
    shown = json.loads(memnet(h, "show", built["cube"], "--json").out)
    assert shown["kind"] == "activation" and shown["meta"]["model"] == fp
    gen = json.loads(memnet(h, "generate", text + " and so", "-n", "4", "--check", "--json").out)
    assert gen["reused"] == built["tokens"] and gen["source"] == "local"
    assert gen["max_logit_diff"] <= 1e-4 and gen["same_top1"]
    plain = memnet(h, "generate", text + " and so", "-n", "4", "--no-cache")
    assert "TTFT" in plain.err and "0/" in plain.err
    messages = tmp_path / "chat.json"
    messages.write_text(json.dumps([{"role": "user", "content": text}]))
    chat = json.loads(memnet(h, "kv", "build", "--chat", str(messages), "--json").out)
    assert chat["dtype"] == "float16"
    short = memnet(h, "kv", "build", "a few words")   # under MIN_REUSE tokens: said, not silently useless
    assert "will not be used" in short.err and short.out.strip().startswith("bafk")


@pytest.mark.slow
def test_cli_errors(tmp_path, models, tiny_model_dir):
    h = tmp_path / "clihome"
    memnet(h, "init")
    memnet(h, "model", "pin", str(tiny_model_dir))
    assert_one_line_error(memnet(h, "kv", "build", "x", "--dtype", "float64", check=False), "--dtype")
    assert_one_line_error(memnet(h, "kv", "build", check=False), "exactly one")
    assert_one_line_error(memnet(h, "kv", "build", "x", "--file", str(tmp_path / "none"), check=False), "exactly one")
    assert_one_line_error(memnet(h, "kv", "build", "--file", str(tmp_path / "none"), check=False), "no such file")
    bad = tmp_path / "bad.json"
    bad.write_text('[{"role": "user"}]')
    assert_one_line_error(memnet(h, "kv", "build", "--chat", str(bad), check=False), "messages")
    assert_one_line_error(memnet(h, "generate", "x", "--kv-dtypes", "fp8", check=False), "--kv-dtypes")
    assert_one_line_error(memnet(h, "generate", "x", "--model", "nonesuch", check=False), "no pinned model")
    assert_one_line_error(memnet(h, "generate", "x", "-n", "1000", check=False), "exceed")
    assert_one_line_error(memnet(h, "model", "pin", str(tmp_path), check=False), "config.json")


# -- the real model ----------------------------------------------------------------------------------------------

PROMPTS = [
    "The capital of France is",
    "Write a haiku about the sea.",
    "List three uses of a hash function:",
]


@pytest.mark.slow
def test_smollm2_fp16_cube_keeps_greedy_tokens(tmp_path, monkeypatch, smollm2_models_dir):
    monkeypatch.setenv("MEMNET_MODELS", str(smollm2_models_dir))
    node = home.init(tmp_path / "home")
    model, _ = node.models.pin("smollm2")
    assert model.layout == {"layers": 30, "kv_heads": 3, "head_dim": 64}
    assert model.kv_bytes_per_token(2) == 23040
    smol = loader.load(model)
    context = ("memnet shares signed, content-addressed units of LLM memory between machines. "
               "A peer that already paid for a prefill shares it, and everyone else skips it. ") * 6
    ctx_ids = smol.encode_chat([{"role": "system", "content": context}], add_generation_prompt=False)
    cube, _ = generate.build(node.publisher, node.perf, smol, ctx_ids, "float16")
    assert 0 < cube.manifest.size - len(ctx_ids) * 23040 < 16384  # K/V plus the safetensors header
    for question in PROMPTS:
        ids = smol.encode_chat([{"role": "system", "content": context}, {"role": "user", "content": question}],
                               add_generation_prompt=True)
        full = generate.generate(node.store, node.gate(), node.perf, smol, ids, generate.Options(max_new_tokens=8, use_local=False))
        cached = generate.generate(node.store, node.gate(), node.perf, smol, ids, generate.Options(max_new_tokens=8, check=True))
        assert cached.reused == len(ctx_ids) and cached.source == "local"
        assert cached.new_ids == full.new_ids, question
        assert cached.same_top1 and cached.max_logit_diff < 0.1
    # a document as a new user caches it (kv build --file): its trailing newline would merge with
    # the "\n\n" a prompt adds after it, so the cube stops before it and the prompt reuses all of it
    from memnet import api
    doc = context * 2 + "\n"
    built = api.build_kv(doc, home=node, dtype="float32")
    assert built.held_back == 1 and built.n_tokens == len(smol.encode(doc)) - 1 > 256
    ids = smol.encode(doc + "\n\nWhat does a peer skip?")
    assert smol.encode(doc) != ids[:len(smol.encode(doc))]  # the merge the cut avoids
    asked = generate.generate(node.store, node.gate(), node.perf, smol, ids,
                              generate.Options(max_new_tokens=4, dtypes=("float32",), check=True))
    assert asked.reused == built.n_tokens and asked.cube_id == built.cube.cube_id and asked.max_logit_diff <= 1e-4
    # a cube over every token of the text (made before the cut): found under its first block's
    # key, it serves up to the last token it shares with the prompt, not the last block boundary
    whole = smol.encode(doc)
    cube, _ = generate.build(node.publisher, node.perf, smol, whole, "bfloat16")
    shared = generate.generate(node.store, node.gate(), node.perf, smol, ids,
                               generate.Options(max_new_tokens=2, dtypes=("bfloat16",)))
    assert shared.cube_id == cube.cube_id and shared.reused == len(whole) - 1


def test_python_api_generates_like_the_cli(node, tiny):
    from memnet import api

    text = " ".join(f"memory {i} is content addressed" for i in range(24))
    cube, n_tokens, _, _ = api.build_kv(text, home=node, dtype="float32")
    result = api.generate(text + " and so", home=node, max_new_tokens=3, check=True)
    assert result.reused == n_tokens and result.cube_id == cube.cube_id and result.max_logit_diff <= 1e-4
    assert result.model_load_seconds > 0 and "TTFT" in result.timing_line()
    with pytest.raises(UsageError, match="fetch"):
        api.generate("x", home=node, fetch="sometimes")


def test_a_fetch_may_take_as_long_as_the_prefill_it_replaces():
    assert perf.fetch_deadline(None) == perf.FETCH_DEADLINE_UNMEASURED   # nothing measured: a fixed bound
    assert perf.fetch_deadline(30.0) == 30.0                 # at worst twice the better choice
    assert perf.fetch_deadline(0.01) == perf.FETCH_DEADLINE_FLOOR   # jitter never cancels a tiny fetch


def test_past_its_deadline_a_fetch_is_kept_only_while_it_would_still_win():
    assert perf.keep_waiting(5.0, 0, 100, deadline=10.0)           # before the deadline: wait
    assert not perf.keep_waiting(10.0, 0, 100, deadline=10.0)      # nothing came: compute
    assert perf.keep_waiting(12.0, 90, 100, deadline=10.0)         # 10 % left at 7.5/s: 1.3 s more
    assert not perf.keep_waiting(12.0, 10, 100, deadline=10.0)     # a trickle: 108 s more
