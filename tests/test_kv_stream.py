"""A fetched KV cube consumed layer by layer as its chunks reach the store (memnet/model/kv_stream.py,
generate.steps with Options.overlap).

The fetch here is the part of the daemon that the consumer sees: chunks checked against their
CIDs and staged in the node's real LMDB store one by one, then the cube verified and committed,
as net/fetch.py does; the test paces it so that layers arrive while the forward runs, and can
stop it half-way. The real daemons do the same over MIP in tests/test_kv_swarm.py.
"""

from __future__ import annotations

import dataclasses
import random
import time

from memnet import config as config_mod, home
from memnet.cube import build, cid
from memnet.cube.safetensors_header import parse_header
from memnet.errors import FetchDeadline, FetchError
from memnet.model import generate, kv, loader
from memnet.model.runtime import torch

N = 200


def _ids(loaded, n, seed=1):
    rng = random.Random(seed)
    return [rng.randrange(10, loaded.tokenizer.vocab_size - 10) for _ in range(n)]


class PacedSwarm:
    """find_prefix / get over a provider's store, staging the cube's chunks into the fetcher's
    store with a pause between them (and failing after `fail_after` chunks if set)."""

    def __init__(self, provider, fetcher, cube_id, pause=0.002, fail_after=None, error=FetchError):
        self.provider, self.fetcher, self.cube_id = provider, fetcher, cube_id
        self.pause, self.fail_after, self.error = pause, fail_after, error
        self.staged: list[float] = []
        self.calls = 0

    def find_prefix(self, probes):
        return [(self.cube_id, self.provider.store.manifest_bytes(self.cube_id))]

    def get(self, cube_id, deadline=None):
        self.calls += 1
        manifest_bytes = self.provider.store.manifest_bytes(cube_id)
        start = time.perf_counter()
        for index, chunk_id in enumerate(self.provider.store.manifest(cube_id).chunks):
            if self.fail_after is not None and index == self.fail_after:
                raise self.error("the provider went away")
            data = self.provider.store.chunk(chunk_id)
            assert cid.cid_of(data) == chunk_id
            self.fetcher.store.stage_chunks([(chunk_id, data)])
            self.staged.append(time.perf_counter())
            time.sleep(self.pause)
        cube = build.verify(manifest_bytes, cube_id, self.fetcher.store.chunk, keep_chunks=False)
        self.fetcher.store.put(cube, pin_reason="fetched")
        return cube.manifest.size, time.perf_counter() - start, "12D3KooWtest"


def _pair(tmp_path, tiny_model_dir, dtype="float32", ordered=True):
    provider, fetcher = home.init(tmp_path / "provider"), home.init(tmp_path / "fetcher")
    model, _ = provider.models.pin(str(tiny_model_dir))
    fetcher.models.pin(str(tiny_model_dir))
    config_mod.update(fetcher.home, "trust", fetcher.config.trust.add(provider.peer_id, ("pin", "inject")).to_config())
    fetcher = home.open_node(fetcher.home)
    loaded = loader.load(model)
    ids = _ids(loaded, N)
    cache, _, _ = kv.prefill(loaded, ids)
    if ordered:
        payload = kv.payload_from_cache(cache, N, dtype)
    else:  # safetensors' own order: every layer's keys before any layer's values
        from safetensors.torch import load, save
        payload = save(load(kv.payload_from_cache(cache, N, dtype)))
    small = dataclasses.replace(provider.publisher, chunk_size=1024)  # ~50 chunks per layer
    cube = small.publish("activation", payload, kv.meta_for(kv.binding_for(loaded, None, dtype), loaded, ids))
    return provider, fetcher, loaded, ids, cube


def test_payload_is_laid_out_layer_by_layer(tiny):
    ids = _ids(tiny, 40)
    cache, _, _ = kv.prefill(tiny, ids)
    from safetensors.torch import load
    for dtype in ("float16", "int8"):
        payload = kv.payload_from_cache(cache, 40, dtype)
        header = parse_header(payload)
        order = [name for name, _ in sorted(header.tensors.items(), key=lambda item: item[1].start)]
        layers = [int(name.rsplit(".", 1)[1]) for name in order]
        assert layers == sorted(layers)  # layer 0's tensors first, then layer 1's
        tensors = load(payload)  # and any safetensors reader reads it
        assert set(tensors) == set(header.tensors)
        rebuilt = kv.cache_from_payload(payload, kv.meta_for(kv.binding_for(tiny, None, dtype), tiny, ids), tiny, 40)
        expected = tensors["k.1"].float() * (tensors["k_scale.1"] if dtype == "int8" else 1)
        assert torch.equal(rebuilt.layers[1].keys[0], expected)


def _generate(fetcher, loaded, ids, swarm, **options):
    return generate.generate(fetcher.store, fetcher.gate(), fetcher.perf, loaded, ids,
                             generate.Options(max_new_tokens=4, fetch="always", **options), swarm)


def test_the_first_forward_starts_before_the_cube_has_arrived(tmp_path, tiny_model_dir):
    provider, fetcher, loaded, ids, cube = _pair(tmp_path, tiny_model_dir)
    prompt = ids + _ids(loaded, 12, seed=5)
    swarm = PacedSwarm(provider, fetcher, cube.cube_id)
    layer_starts = []
    first = loaded.model.model.layers[0].register_forward_pre_hook(lambda *_: layer_starts.append(time.perf_counter()))
    try:
        result = _generate(fetcher, loaded, prompt, swarm, check=True)
    finally:
        first.remove()
    assert result.source == "peer" and result.reused == N and result.cube_id == cube.cube_id
    assert result.max_logit_diff <= 1e-4 and result.same_top1   # exact, as from the store
    assert layer_starts[0] < swarm.staged[-1]   # layer 0 ran while later chunks were still coming
    assert "stream_wait" in result.steps and result.peer == "12D3KooWtest"
    assert fetcher.store.has(cube.cube_id)      # the fetch committed the cube afterwards
    again = _generate(fetcher, loaded, prompt, None)
    assert again.source == "local" and again.new_ids == result.new_ids
    plain = _generate(fetcher, loaded, prompt, None, use_local=False)
    assert plain.new_ids == result.new_ids


def test_a_cube_with_every_key_first_still_streams(tmp_path, tiny_model_dir):
    provider, fetcher, loaded, ids, cube = _pair(tmp_path, tiny_model_dir, dtype="int8", ordered=False)
    prompt = ids + _ids(loaded, 12, seed=5)
    result = _generate(fetcher, loaded, prompt, PacedSwarm(provider, fetcher, cube.cube_id, pause=0), check=True)
    assert result.source == "peer" and result.reused == N and result.same_top1


def test_a_fetch_that_stops_half_way_is_computed_instead(tmp_path, tiny_model_dir):
    provider, fetcher, loaded, ids, cube = _pair(tmp_path, tiny_model_dir)
    prompt = ids + _ids(loaded, 12, seed=5)
    expected = _generate(fetcher, loaded, prompt, None, use_local=False).new_ids
    for error in (FetchError, FetchDeadline):
        n_chunks = len(cube.manifest.chunks)
        swarm = PacedSwarm(provider, fetcher, cube.cube_id, fail_after=n_chunks * 3 // 4, error=error)
        threads = torch.get_num_threads()
        result = _generate(fetcher, loaded, prompt, swarm)
        assert result.source == "none" and result.reused == 0 and result.new_ids == expected
        assert "computed instead" in result.decision and not fetcher.store.has(cube.cube_id)
        assert torch.get_num_threads() == threads   # the fetch's core is given back
        assert all(not layer._forward_pre_hooks for layer in loaded.model.model.layers)


def test_the_server_engine_does_not_stream(tmp_path, tiny_model_dir):
    """Options(overlap=False): the fetch finishes before the model runs (a server's worker must
    not wait for chunks inside a forward while other requests queue behind it)."""
    provider, fetcher, loaded, ids, cube = _pair(tmp_path, tiny_model_dir)
    swarm = PacedSwarm(provider, fetcher, cube.cube_id, pause=0)
    options = generate.Options(max_new_tokens=2, fetch="always", overlap=False)
    prepared = generate.prepare(fetcher.store, fetcher.gate(), fetcher.perf, loaded, ids + [5, 6], options, swarm)
    assert prepared.fetching is None and fetcher.store.has(cube.cube_id) and swarm.calls == 1
    result = generate.run(generate.steps(fetcher.store, fetcher.perf, loaded, ids + [5, 6], options, prepared), loaded)
    assert result.source == "peer" and result.reused == N
