"""The in-place KV cache (memnet/model/kv_buffer.py): the same logits and greedy tokens as
transformers' concatenating DynamicCache, no reallocation while it has room, exact growth when
it has none, and a cube converted straight into its buffers."""

from __future__ import annotations

import random

import pytest

from memnet.model import batch, generate, kv, kv_buffer
from memnet.model.runtime import torch, transformers


def _ids(loaded, n, seed=1):
    rng = random.Random(seed)
    return [rng.randrange(10, loaded.tokenizer.vocab_size - 10) for _ in range(n)]


def _forward(loaded, ids, cache, start):
    with torch.inference_mode():
        return loaded.model(input_ids=torch.tensor([ids]), past_key_values=cache,
                            position_ids=torch.arange(start, start + len(ids)).unsqueeze(0), use_cache=True)


@pytest.mark.parametrize("capacity", [1, 40, 200])  # too small (grows twice), just short, roomy
def test_same_logits_as_a_concatenating_cache(tiny, capacity):
    ids = _ids(tiny, 60)
    plain = transformers.DynamicCache(config=tiny.model.config)
    inplace = kv_buffer.new_cache(tiny.model, capacity)
    for start, end in ((0, 37), (37, 38), (38, 50), (50, 51), (51, 60)):  # prefill, decode, chunks
        a = _forward(tiny, ids[start:end], plain, start).logits
        b = _forward(tiny, ids[start:end], inplace, start).logits
        assert torch.equal(a, b)
    for mine, theirs in zip(inplace.layers, plain.layers):
        assert mine.get_seq_length() == 60 and torch.equal(mine.keys, theirs.keys)
        assert torch.equal(mine.values, theirs.values)
        assert mine.capacity >= 60


def test_writes_in_place_while_there_is_room(tiny):
    cache = kv_buffer.new_cache(tiny.model, 64)
    _forward(tiny, _ids(tiny, 10), cache, 0)
    layer = cache.layers[0]
    buffer = layer._keys.data_ptr()
    _forward(tiny, _ids(tiny, 20, seed=2), cache, 10)
    _forward(tiny, [5], cache, 30)
    assert layer._keys.data_ptr() == buffer and layer.get_seq_length() == 31
    assert layer.keys.data_ptr() == buffer  # attention reads the buffer itself, not a copy
    _forward(tiny, _ids(tiny, 40, seed=3), cache, 31)  # past 64: grows once, keeps what it held
    assert layer.capacity >= 71 and layer._keys.data_ptr() != buffer


def test_crop_rewinds(tiny):
    ids = _ids(tiny, 30)
    cache = kv_buffer.new_cache(tiny.model, 40)
    _forward(tiny, ids[:20], cache, 0)
    again = _forward(tiny, ids[20:], cache, 20).logits
    for layer in cache.layers:
        layer.crop(-10)
        assert layer.get_seq_length() == 20 and layer.keys.shape[-2] == 20
    assert torch.equal(_forward(tiny, ids[20:], cache, 20).logits, again)
    with pytest.raises(ValueError):
        cache.layers[0].crop(3)


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_cube_converted_straight_into_the_buffers(node, tiny, dtype):
    ids = _ids(tiny, 50)
    cube, _ = generate.build(node.publisher, node.perf, tiny, ids, dtype)
    meta = cube.manifest.meta
    payload = node.store.read_payload(cube.cube_id)
    old_style = transformers.DynamicCache(config=tiny.model.config)
    kv.fill_layers(old_style, payload, meta, tiny, 40, range(len(old_style.layers)))
    cache = kv.cache_from_payload(payload, meta, tiny, 40, capacity=48)
    for mine, theirs in zip(cache.layers, old_style.layers):
        assert isinstance(mine, kv_buffer.InPlaceLayer) and mine.capacity == 48
        assert torch.equal(mine.keys, theirs.keys) and torch.equal(mine.values, theirs.values)
    more = _ids(tiny, 8, seed=5)
    assert torch.equal(_forward(tiny, more, cache, 40).logits, _forward(tiny, more, old_style, 40).logits)


def test_batched_decode_appends_to_each_requests_own_cache(tiny):
    prompts = [_ids(tiny, n, seed=n) for n in (12, 30)]
    caches = [kv_buffer.new_cache(tiny.model, 64) for _ in prompts]
    for ids, cache in zip(prompts, caches):
        _forward(tiny, ids, cache, 0)
    buffers = [c.layers[0]._keys.data_ptr() for c in caches]
    steps = [batch.Decode(7, len(ids), cache) for ids, cache in zip(prompts, caches)]
    results = batch.forward_many(tiny, steps)
    for (logits, cache), ids, buffer in zip(results, prompts, buffers):
        assert cache.layers[0].get_seq_length() == len(ids) + 1 and cache.layers[0]._keys.data_ptr() == buffer
        alone = kv_buffer.new_cache(tiny.model, 64)
        _forward(tiny, ids, alone, 0)
        expected = _forward(tiny, [7], alone, len(ids)).logits[0, -1]
        assert float((expected - logits).abs().max()) < 1e-4
