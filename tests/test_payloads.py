"""Payload formats per kind (memnet/cube/payloads.py) and their agreement with manifest meta."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import save

from memnet.cube import build, canonical, limits, payloads
from memnet.errors import CanonicalError, FormatError, LimitError, TensorError
from tests import factories

KEY = factories.key()


# -- plaintext -------------------------------------------------------------------------------------

def stream(payload: bytes, count: int | None = None, piece: int = 7, **kw) -> None:
    """check_items_stream over the payload cut in pieces (as a cube's chunks would be)."""
    payloads.check_items_stream((payload[i:i + piece] for i in range(0, len(payload), piece)), count, **kw)


def test_items_round_trip():
    items = [{"text": "the sky is blue"}, {"text": "\u00e9t\u00e9 \U0001f600", "meta": {"source": "x", "lang": "fr"}}]
    payload = payloads.encode_items(items)
    assert payloads.decode_items(payload) == items
    assert payloads.decode_items(payload, 2) == items
    assert payload == canonical.encode({"items": items})
    payloads.validate_payload("plaintext", payload, {"items": 2})
    payloads.validate_payload("plaintext", memoryview(payload), {"items": 2})
    for piece in (1, 2, 5, 64, len(payload)):
        stream(payload, 2, piece)


def test_no_items_is_a_valid_payload():
    payload = payloads.encode_items([])
    assert payloads.decode_items(payload, 0) == []


@pytest.mark.parametrize("items, error, phrase", [
    ([{"text": ""}], FormatError, "text must be a non-empty string"),
    ([{"text": b"bytes"}], FormatError, "text must be a non-empty string"),
    ([{"text": 1}], FormatError, "text must be a non-empty string"),
    ([{"meta": {"a": "b"}}], FormatError, "must be a map with text"),
    ([{"text": "a", "score": 1}], FormatError, "must be a map with text"),
    (["just a string"], FormatError, "must be a map with text"),
    ([{"text": "a", "meta": {"n": 1}}], FormatError, "meta must map strings to strings"),
    ([{"text": "a", "meta": {"n": b"x"}}], FormatError, "meta must map strings to strings"),
    ([{"text": "a", "meta": ["x"]}], FormatError, "meta must map strings to strings"),
    ([{"text": "ok"}, {"text": ""}], FormatError, "plaintext item 1"),
    ([{"text": "x" * (limits.MAX_ITEM_TEXT + 1)}], LimitError, "longer than"),
])
def test_bad_items(items, error, phrase):
    with pytest.raises(error, match=phrase):
        payloads.encode_items(items)
    with pytest.raises(error, match=phrase):
        payloads.decode_items(canonical.encode({"items": items}))
    with pytest.raises(error, match=phrase):
        stream(canonical.encode({"items": items}), piece=3)


def test_item_text_at_its_limit():
    text = "x" * limits.MAX_ITEM_TEXT
    assert payloads.decode_items(payloads.encode_items([{"text": text}]))[0]["text"] == text


def test_too_many_items():
    doc = canonical.encode({"items": [{"text": "a"}] * (limits.MAX_PLAINTEXT_ITEMS + 1)})
    with pytest.raises(LimitError, match="plaintext items, the limit"):
        payloads.decode_items(doc)
    with pytest.raises(LimitError, match="plaintext items, the limit"):
        stream(doc, piece=4096)


@pytest.mark.parametrize("doc", [
    {"items": {"text": "a"}}, {"item": []}, {"items": [], "extra": 1}, [{"text": "a"}], "text",
])
def test_payload_shape(doc):
    with pytest.raises(FormatError, match="one field, items"):
        payloads.decode_items(canonical.encode(doc))
    with pytest.raises(FormatError, match="one field, items"):
        stream(canonical.encode(doc))


def test_non_canonical_payload():
    payload = payloads.encode_items([{"text": "a"}])
    with pytest.raises(CanonicalError):
        payloads.decode_items(payload + b"\x00")
    with pytest.raises(CanonicalError):
        payloads.decode_items(b"\xde\x00\x01" + payload[1:])
    with pytest.raises(CanonicalError, match="trailing"):
        stream(payload + b"\x00")
    with pytest.raises(FormatError, match="one field"):    # a map header in a longer form
        stream(b"\xde\x00\x01" + payload[1:])


def test_stream_refuses_truncated_forged_and_oversized_payloads(monkeypatch):
    items = [{"text": f"fact {i}", "meta": {"source": "s"}} for i in range(50)]
    payload = payloads.encode_items(items)
    for cut in (1, 5, 8, len(payload) // 2, len(payload) - 1):     # truncated anywhere
        with pytest.raises(CanonicalError, match="truncated"):
            stream(payload[:cut], 50)
    # an item re-encoded with its keys out of order: same value, other bytes (a forged CID input)
    import msgpack
    forged = (b"\x81\xa5items" + msgpack.Packer().pack_array_header(1)
              + msgpack.packb({"text": "a", "meta": {"z": "1", "a": "2"}}))
    with pytest.raises(CanonicalError, match="canonical form"):
        stream(forged)
    # an array length in a longer encoding than the smallest
    with pytest.raises(CanonicalError, match="array length"):
        stream(b"\x81\xa5items\xdc\x00\x01" + canonical.encode({"text": "a"}))
    # malformed bytes inside an item, and an item that is not msgpack at all
    with pytest.raises(CanonicalError):
        stream(payload[:12] + b"\xc1" + payload[13:], 50)
    monkeypatch.setattr(limits, "MAX_PLAINTEXT_PAYLOAD", 200)   # oversized: refused once past the limit
    with pytest.raises(LimitError, match="over 200 bytes"):
        stream(payload, 50, piece=64)


def test_item_count_must_match_manifest():
    payload = payloads.encode_items([{"text": "a"}, {"text": "b"}])
    with pytest.raises(FormatError, match="payload has 2 items but the manifest says 3"):
        payloads.decode_items(payload, 3)
    with pytest.raises(FormatError, match="manifest says 1"):
        payloads.validate_payload("plaintext", payload, {"items": 1})
    with pytest.raises(FormatError, match="payload has 2 items but the manifest says 3"):
        stream(payload, 3)


# -- parameter (LoRA) ------------------------------------------------------------------------------

def config(**changes):
    base = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["v_proj", "q_proj"]}
    return {**base, **changes}


def test_peft_summary():
    assert payloads.peft_summary(config()) == {"type": "LORA", "r": 8, "alpha": 16, "targets": ["q_proj", "v_proj"]}
    summary = payloads.peft_summary(config(lora_alpha=16.0))
    assert summary["alpha"] == 16 and type(summary["alpha"]) is int
    canonical.encode(summary)  # no float survives into signed meta
    assert payloads.peft_summary(config(target_modules=["q_proj", "q_proj"]))["targets"] == ["q_proj"]


@pytest.mark.parametrize("changes, phrase", [
    ({"lora_alpha": 16.5}, "lora_alpha must be a whole number"),
    ({"lora_alpha": float("nan")}, "lora_alpha must be a whole number"),
    ({"lora_alpha": float("inf")}, "lora_alpha must be a whole number"),
    ({"lora_alpha": "16"}, "lora_alpha must be a whole number"),
    ({"lora_alpha": True}, "lora_alpha must be a whole number"),
    ({"lora_alpha": None}, "lora_alpha must be a whole number"),
    ({"r": 8.0}, "r must be an integer"),
    ({"r": True}, "r must be an integer"),
    ({"r": None}, "r must be an integer"),
    ({"target_modules": []}, "target_modules must list"),
    ({"target_modules": None}, "target_modules must list"),
    ({"target_modules": ["q_proj", 1]}, "target_modules must list"),
    ({"target_modules": "q_proj"}, "as a string (regex) is not supported"),
    ({"peft_type": "IA3"}, "'IA3' is not supported (only LORA)"),
    ({"peft_type": "lora"}, "only LORA"),
    ({"peft_type": None}, "only LORA"),
])
def test_peft_summary_rejections(changes, phrase):
    with pytest.raises(FormatError, match=phrase.replace("(", r"\(").replace(")", r"\)")):
        payloads.peft_summary(config(**changes))


def lora_payload(r=4, targets=("q_proj", "v_proj"), config_changes=None, extra_tensors=None):
    cfg, weights = factories.lora_files(r=r, targets=targets)
    cfg = {**cfg, **(config_changes or {})}
    if extra_tensors:
        from safetensors.numpy import load
        tensors = {**load(weights), **extra_tensors}
        weights = save(tensors)
    meta = {"base_model": factories.fingerprint("base"), "peft": payloads.peft_summary(cfg)}
    return payloads.build_parameter_payload(cfg, weights), meta


def test_parameter_payload_valid():
    payload, meta = lora_payload()
    payloads.validate_parameter(payload, meta)
    payloads.validate_payload("parameter", payload, meta)
    cfg = payloads.peft_config_of(payload)
    assert cfg["r"] == 4 and cfg["peft_type"] == "LORA"
    assert json.loads(payloads.canonical_json(cfg)) == cfg


def test_rank_mismatch():
    # the adapter config says r=8, the tensors are rank 4
    payload, meta = lora_payload(r=4, config_changes={"r": 8})
    with pytest.raises(TensorError, match="expected rank 8"):
        payloads.validate_parameter(payload, meta)


def test_tensor_adapting_a_module_not_in_targets():
    cfg, weights = factories.lora_files(targets=("q_proj", "v_proj", "k_proj"))
    cfg["target_modules"] = ["q_proj", "v_proj"]
    payload = payloads.build_parameter_payload(cfg, weights)
    meta = {"base_model": factories.fingerprint("base"), "peft": payloads.peft_summary(cfg)}
    with pytest.raises(TensorError, match="not listed in meta.peft.targets"):
        payloads.validate_parameter(payload, meta)


def test_suffix_match_is_on_module_boundaries():
    # "xq_proj" ends with "q_proj" but is a different module
    payload, meta = lora_payload(targets=("xq_proj",), config_changes={"target_modules": ["q_proj"]})
    with pytest.raises(TensorError, match="not listed"):
        payloads.validate_parameter(payload, meta)


@pytest.mark.parametrize("name, array, phrase", [
    ("base_model.model.lm_head.weight", np.zeros((4, 4), np.float32), "is not a LoRA A/B matrix"),
    ("base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector",
     np.zeros(16, np.float32), "is not a LoRA A/B matrix"),
    ("base_model.model.model.layers.9.self_attn.q_proj.lora_A.weight", np.zeros(4, np.float32), "expected rank 4"),
    ("base_model.model.model.layers.9.self_attn.q_proj.lora_A.weight", np.zeros((4, 2, 2), np.float32), "expected rank 4"),
    ("base_model.model.model.layers.9.self_attn.q_proj.lora_B.weight", np.zeros((16, 5), np.float32), "expected rank 4"),
])
def test_bad_lora_tensors(name, array, phrase):
    payload, meta = lora_payload(extra_tensors={name: array})
    with pytest.raises(TensorError, match=phrase):
        payloads.validate_parameter(payload, meta)


def test_lora_dtype_allowlist():
    payload, meta = lora_payload(extra_tensors={
        "base_model.model.model.layers.9.self_attn.q_proj.lora_A.weight": np.zeros((4, 16), np.int8)})
    with pytest.raises(TensorError, match="dtype 'I8' is not allowed"):
        payloads.validate_parameter(payload, meta)


def test_config_meta_mismatch():
    payload, meta = lora_payload()
    for peft in ({**meta["peft"], "alpha": 9}, {**meta["peft"], "r": 5}, {**meta["peft"], "targets": ["q_proj"]}):
        with pytest.raises(FormatError, match="does not match the manifest's meta.peft"):
            payloads.validate_parameter(payload, {**meta, "peft": peft})


def test_parameter_payload_without_config():
    _, weights = factories.lora_files()
    meta = {"base_model": factories.fingerprint("base"), "peft": payloads.peft_summary(config(r=4))}
    with pytest.raises(TensorError, match="lacks memnet.peft_config"):
        payloads.validate_parameter(weights, meta)
    with pytest.raises(TensorError, match="malformed PEFT config"):
        payloads.validate_parameter(
            payloads.with_metadata(weights, {payloads.PEFT_CONFIG_KEY: "{not json"}), meta)
    with pytest.raises(TensorError, match="malformed PEFT config"):
        payloads.validate_parameter(
            payloads.with_metadata(weights, {payloads.PEFT_CONFIG_KEY: "[1]"}), meta)
    with pytest.raises(FormatError, match="only LORA"):
        payloads.validate_parameter(payloads.build_parameter_payload(config(peft_type="IA3"), weights), meta)


def test_parameter_payload_without_tensors():
    cfg = config(r=4)
    payload = payloads.build_parameter_payload(cfg, save({}))
    meta = {"base_model": factories.fingerprint("base"), "peft": payloads.peft_summary(cfg)}
    with pytest.raises(TensorError, match="holds no tensors"):
        payloads.validate_parameter(payload, meta)


# -- activation (KV) -------------------------------------------------------------------------------

def test_activation_valid():
    for dtype in ("float32", "float16", "int8"):
        meta, payload = factories.kv_meta_and_payload(dtype=dtype)
        payloads.validate_activation(payload, meta)
        expected = payloads.expected_kv_tensors(meta)
        assert len(expected) == 2 * 2 * (2 if dtype == "int8" else 1)


def test_activation_missing_layer():
    meta, _ = factories.kv_meta_and_payload(layers=2)
    _, payload = factories.kv_meta_and_payload(layers=1)
    with pytest.raises(TensorError, match=r"missing \['k.1', 'v.1'\]"):
        payloads.validate_activation(payload, meta)


def test_activation_wrong_shape():
    meta, _ = factories.kv_meta_and_payload(n_tokens=10)
    _, payload = factories.kv_meta_and_payload(n_tokens=9)
    with pytest.raises(TensorError, match=r"is F32\[2, 9, 8\], meta says F32\[2, 10, 8\]"):
        payloads.validate_activation(payload, meta)
    _, payload = factories.kv_meta_and_payload(head_dim=4)
    with pytest.raises(TensorError, match="meta says"):
        payloads.validate_activation(payload, meta)


def test_activation_wrong_dtype():
    meta, _ = factories.kv_meta_and_payload(dtype="float32")
    _, payload = factories.kv_meta_and_payload(dtype="float16")
    with pytest.raises(TensorError, match=r"is F16\[2, 10, 8\], meta says F32"):
        payloads.validate_activation(payload, meta)


def test_activation_extra_tensor():
    meta, _ = factories.kv_meta_and_payload(layers=1)
    _, payload = factories.kv_meta_and_payload(layers=2)
    with pytest.raises(TensorError, match=r"unexpected \['k.1', 'v.1'\]"):
        payloads.validate_activation(payload, meta)
    tensors = {name: np.zeros((2, 10, 8), np.float32) for name in ("k.0", "v.0", "q.0")}
    with pytest.raises(TensorError, match=r"unexpected \['q.0'\]"):
        payloads.validate_activation(save(tensors), meta)


def test_int8_needs_scales():
    meta, _ = factories.kv_meta_and_payload(dtype="int8", layers=1)
    bare = {name: np.zeros((2, 10, 8), np.int8) for name in ("k.0", "v.0")}
    with pytest.raises(TensorError, match=r"missing \['k_scale.0', 'v_scale.0'\]"):
        payloads.validate_activation(save(bare), meta)
    wrong_scale = {**bare, "k_scale.0": np.ones((2, 10, 1), np.float16), "v_scale.0": np.ones((2, 10, 1), np.float32)}
    with pytest.raises(TensorError, match=r"'k_scale.0' is F16\[2, 10, 1\], meta says F32"):
        payloads.validate_activation(save(wrong_scale), meta)
    # and a float cube carries no scales
    meta32, payload32 = factories.kv_meta_and_payload(dtype="float32", layers=1)
    with pytest.raises(TensorError, match="unexpected"):
        payloads.validate_activation(
            save({**{n: np.zeros((2, 10, 8), np.float32) for n in ("k.0", "v.0")},
                  "k_scale.0": np.ones((2, 10, 1), np.float32), "v_scale.0": np.ones((2, 10, 1), np.float32)}),
            meta32)


def test_activation_payload_is_safetensors():
    meta, _ = factories.kv_meta_and_payload()
    with pytest.raises(TensorError):
        payloads.validate_activation(b"\x80\x04not a pickle we would ever load", meta)


# -- build.build ------------------------------------------------------------------------------------

def test_build_refuses_payload_that_does_not_match_meta():
    meta, _ = factories.kv_meta_and_payload(n_tokens=10)
    _, payload = factories.kv_meta_and_payload(n_tokens=9)
    with pytest.raises(TensorError, match="meta says"):
        build.build(KEY, "activation", payload, meta, created=factories.FIXED_CREATED)
    items = payloads.encode_items([{"text": "a"}])
    with pytest.raises(FormatError, match="manifest says 2"):
        build.build(KEY, "plaintext", items, {"items": 2}, created=factories.FIXED_CREATED)
    payload, meta = lora_payload()
    with pytest.raises(FormatError, match="does not match"):
        build.build(KEY, "parameter", payload, {**meta, "peft": {**meta["peft"], "r": 2}})


def test_build_checks_meta_before_payload():
    # malformed meta is a FormatError naming the meta field, not a KeyError from the payload check
    meta, payload = factories.kv_meta_and_payload()
    del meta["layout"]
    with pytest.raises(FormatError, match="activation meta lacks layout"):
        build.build(KEY, "activation", payload, meta)
    weights, pmeta = lora_payload()
    with pytest.raises(FormatError, match="parameter meta lacks peft"):
        build.build(KEY, "parameter", weights, {"base_model": pmeta["base_model"]})
    with pytest.raises(FormatError, match="plaintext meta lacks items"):
        build.build(KEY, "plaintext", payloads.encode_items([{"text": "a"}]), {})
    with pytest.raises(FormatError, match="meta.dtype"):
        build.build(KEY, "activation", payload, {**factories.kv_meta_and_payload()[0], "dtype": "float64"})


def test_build_of_each_kind_verifies():
    for cube in (factories.plaintext_cube(), factories.parameter_cube(), factories.activation_cube(dtype="int8")):
        again = build.verify(cube.manifest_bytes, cube.cube_id, cube.chunks.get)
        assert again.payload() == cube.payload()


def test_lora_a_without_b_is_refused():
    cfg, weights = factories.lora_files()
    from safetensors.numpy import load
    tensors = load(weights)
    del tensors["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"]
    payload = payloads.build_parameter_payload(cfg, save(tensors))
    meta = {"base_model": factories.fingerprint("base"), "peft": payloads.peft_summary(cfg)}
    with pytest.raises(TensorError, match="has no matching lora_B"):
        payloads.validate_parameter(payload, meta)


def test_empty_item_meta_is_refused_it_has_a_shorter_encoding():
    with pytest.raises(FormatError, match="omit it when empty"):
        payloads.encode_items([{"text": "x", "meta": {}}])


@pytest.mark.parametrize("tokens, block, phrase", [
    ([1, 2, -1], 4, "token ids"), ([2**32], 4, "token ids"), ([1, 2], 0, "block_size"), ([1], 1.5, "block_size"),
])
def test_prefix_keys_refuse_bad_input(tokens, block, phrase):
    from memnet.cube import prefix
    with pytest.raises(FormatError, match=phrase):
        prefix.prefix_keys(tokens, bytes(32), block)


def test_salt_needs_32_byte_fingerprints():
    from memnet.cube import prefix
    with pytest.raises(FormatError, match="tokenizer fingerprint"):
        prefix.salt(bytes(32), b"short", None, "float16")
